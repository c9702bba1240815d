"""`detect --model FILE --source IMAGE|VIDEO|DIR [--save DIR] [--board NAME]`: run an exported artifact
over images or videos and write them with its detections drawn, like the thesis's detector module.

Without `--board` it runs here, through the artifact's own runtime. With `--board` the frames travel
to the board's actor, which runs the same numpy code through the board's runtime between latency
measurements (never during one); boxes are drawn here, so the board needs no video or drawing library.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from common.errors import UserError
from detection.video import VIDEO_SUFFIXES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BOARD_BATCH = 8  # frames per call to the board: few enough that a video never sits in memory whole


def add_parser(sub) -> None:
    from orchestrator.commands.board import add_cluster_args, add_runtime_args

    p = sub.add_parser("detect", help="run an exported .onnx/.tflite detector over images or videos and draw "
                                      "what it finds, here or on a board")
    p.add_argument("--model", type=Path, required=True, help="an exported artifact (.onnx, .tflite)")
    p.add_argument("--source", type=Path, required=True,
                   help=f"an image, a video ({', '.join(VIDEO_SUFFIXES)}), or a directory of them")
    p.add_argument("--save", type=Path, default=None,
                   help="directory for the annotated outputs (images keep their names, videos become NAME.mp4)")
    p.add_argument("--names", default=None,
                   help="class names: a data.yaml, a COCO annotations .json, or a comma-separated list")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold of a drawn detection")
    add_runtime_args(p)
    p.add_argument("--board", default=None, help="run the model on this board of the cluster instead of here")
    p.add_argument("--emulate", action="store_true", help="with --board: an emulated board here if NAME is missing")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --board: seconds to wait per batch of frames")
    add_cluster_args(p, default_address=None)
    p.set_defaults(run=run)


def _sources(source: Path) -> list[Path]:
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    if source.is_dir():
        found = sorted(f for f in source.iterdir() if f.suffix.lower() in known)
        if not found:
            raise UserError(f"{source}: no images or videos ({', '.join(known)}) in this directory")
        return found
    if not source.exists():
        raise FileNotFoundError(f"source not found: {source}")
    if source.suffix.lower() not in known:
        raise UserError(f"{source}: neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                        f"({', '.join(VIDEO_SUFFIXES)})")
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


@dataclass
class _Tally:
    """What one source's frames produced, for its row of the table."""
    frames: int = 0
    detections: int = 0
    classes: Counter = field(default_factory=Counter)
    ms: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # pre, inference, post (sums)

    def add(self, found, names: list[str]) -> None:
        self.frames += 1
        self.detections += len(found.dets)
        self.classes.update(names[int(c)] if int(c) < len(names) else f"class {int(c)}" for c in found.dets[:, 5])
        for i, v in enumerate((found.preprocess_ms, found.inference_ms, found.postprocess_ms)):
            self.ms[i] += v

    def row(self, name: str) -> list:
        return [name, self.frames, self.detections, ", ".join(f"{n} x{k}" for n, k in self.classes.most_common(3)),
                *(v / max(self.frames, 1) for v in self.ms)]


Detector = Callable[[list], list]  # frames -> one device_actors.detect.Detected each


def _here(args: argparse.Namespace) -> tuple[Detector, str]:
    from device_actors.detect import detect
    from device_actors.runtimes import get_runtime, runtime_for
    from orchestrator.commands.board import runtime_options

    runtime = runtime_for(args.model.name)
    session = get_runtime(runtime.name).load(args.model.read_bytes(), runtime_options(args))
    return (lambda frames: [detect(session, f, conf=args.conf) for f in frames]), f"this machine ({runtime.name})"


def _on_board(args: argparse.Namespace) -> tuple[Detector, str]:
    import ray

    from device_actors.client import connect_board
    from orchestrator.commands.board import connect_cluster, runtime_options

    options = runtime_options(args)  # a bad option fails before Ray starts
    connect_cluster(args)
    board = connect_board(args.board, emulate_if_missing=args.emulate)
    request, data = board.request_for(args.model, options=options)
    model = ray.put(data)  # sent to the board once, not once per batch
    where = f"board {board.name} ({request.runtime}{', EMULATED on this machine' if board.emulated else ''})"
    return (lambda frames: board.detect(request, model, frames, conf=args.conf, timeout_s=args.timeout)), where


def _frames(path: Path, save: Path | None) -> tuple[int, Iterator, Callable | None, Callable[[], None]]:
    """(declared frame count, frames, write(annotated frame) or None, close) for one image or video;
    frames are decoded as they are consumed."""
    import numpy as np
    from PIL import Image

    if path.suffix.lower() not in VIDEO_SUFFIXES:
        frames = (np.asarray(Image.open(path).convert("RGB")) for _ in range(1))
        if save is None:
            return 1, frames, None, lambda: None
        return 1, frames, lambda frame: Image.fromarray(frame).save(save / path.name), lambda: None
    from detection.video import VideoReader, VideoWriter

    video = VideoReader(path)
    if save is None:
        return video.info.frames, iter(video), None, video.close
    writer = VideoWriter(save / path.name, video.info)
    return video.info.frames, iter(video), writer.write, lambda: (video.close(), writer.close())


def run(args: argparse.Namespace) -> int:
    from detection.draw import draw_detections
    from orchestrator.console import progress, stdout, table

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    if not 0 <= args.conf < 1:
        raise UserError(f"--conf must be in [0, 1), got {args.conf}")
    sources, names = _sources(args.source), _names(args.names)
    if args.save is not None:
        if args.save.resolve() in {s.parent.resolve() for s in sources}:
            raise UserError(f"--save {args.save} is where the source files are: the annotated outputs would "
                            f"overwrite them; give another directory")
        args.save.mkdir(parents=True, exist_ok=True)
    opened = [(path, *_frames(path, args.save)) for path in sources]  # a bad video fails before any model loads
    detector, where = _on_board(args) if args.board else _here(args)
    rows, frames_done, inference_ms = [], 0, 0.0
    try:
        with progress() as bar:
            task = bar.add_task("detecting", total=sum(n for _, n, *_ in opened) or None, info="")
            for path, _, frames, write, close in opened:
                tally = _Tally()
                try:
                    while batch := list(islice(frames, BOARD_BATCH if args.board else 1)):
                        for frame, found in zip(batch, detector(batch)):
                            tally.add(found, names)
                            if write is not None:
                                write(draw_detections(frame, found.dets, names))
                        bar.update(task, advance=len(batch), info=path.name)
                finally:
                    close()
                rows.append(tally.row(path.name))
                frames_done, inference_ms = frames_done + tally.frames, inference_ms + tally.ms[1]
    finally:
        if args.board:
            import ray

            ray.shutdown()
    stdout.print(table(f"{args.model.name} on {where}, score >= {args.conf:g}",
                       ["source", "frames", "detections", "classes", "pre ms", "infer ms", "post ms"], rows))
    mean = inference_ms / max(frames_done, 1)
    stdout.print(f"mean inference {mean:.2f} ms ({1000 / mean if mean else 0:.1f} FPS) over {frames_done} frame(s) "
                 f"on {where}" + (f"; annotated outputs in {args.save}" if args.save is not None else ""),
                 markup=False)
    return 0
