"""`detect --model FILE --source IMAGE|DIR [--save DIR]`: run an exported artifact over images and
write them with its detections drawn, like the thesis's detector module. Runs here, through the
artifact's own runtime (numpy only: the same code runs on a board's minimal install)."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from common.errors import UserError
from device_actors.runtimes.base import RuntimeOptions

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="run an exported .onnx/.tflite detector over images and draw what it finds")
    p.add_argument("--model", type=Path, required=True, help="an exported artifact (.onnx, .tflite)")
    p.add_argument("--source", type=Path, required=True, help="an image, or a directory of images")
    p.add_argument("--save", type=Path, default=None, help="directory for the annotated images (same file names)")
    p.add_argument("--names", default=None,
                   help="class names: a data.yaml, a COCO annotations .json, or a comma-separated list")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold of a drawn detection")
    p.add_argument("--threads", type=int, default=RuntimeOptions.threads, help="the runtime's threads")
    p.set_defaults(run=run)


def _images(source: Path) -> list[Path]:
    if source.is_dir():
        found = sorted(f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this directory")
        return found
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{source}: not an image ({', '.join(IMAGE_SUFFIXES)}); video sources are not supported "
                        f"yet: extract frames (e.g. ffmpeg -i video.mp4 frames/%05d.png) and give the directory")
    return [source]


def _names(spec: str | None) -> list[str]:
    if spec is None:
        return []
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        from detection.yolo_format import read_data_yaml

        return list(read_data_yaml(path).names)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"class names file not found: {path}")
        return [c["name"] for c in sorted(json.loads(path.read_text())["categories"], key=lambda c: c["id"])]
    return [n.strip() for n in spec.split(",")]


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from detection.draw import draw_detections
    from device_actors.detect import detect
    from device_actors.runtimes import get_runtime, runtime_for
    from orchestrator.console import stdout, table

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    images, names = _images(args.source), _names(args.names)
    runtime = runtime_for(args.model.name)
    session = get_runtime(runtime.name).load(args.model.read_bytes(), RuntimeOptions(threads=args.threads))
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    rows, inference = [], []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        found = detect(session, image, conf=args.conf)
        counts = Counter(names[int(c)] if int(c) < len(names) else f"class {int(c)}" for c in found.dets[:, 5])
        rows.append([path.name, len(found.dets), ", ".join(f"{n} x{k}" for n, k in counts.most_common(3)),
                     found.preprocess_ms, found.inference_ms, found.postprocess_ms])
        inference.append(found.inference_ms)
        if args.save is not None:
            Image.fromarray(draw_detections(image, found.dets, names)).save(args.save / path.name)
    stdout.print(table(f"{args.model.name} ({runtime.name}) on {len(images)} image(s), score >= {args.conf:g}",
                       ["image", "detections", "classes", "pre ms", "infer ms", "post ms"], rows))
    mean = sum(inference) / len(inference)
    stdout.print(f"mean inference {mean:.2f} ms ({1000 / mean:.1f} FPS) on this machine"
                 + (f"; annotated images in {args.save}" if args.save is not None else ""), markup=False)
    return 0
