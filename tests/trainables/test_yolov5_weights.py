"""Ultralytics YOLOv5 weights in: a v6.0-layout model built here from the published yolov5s.yaml
(layer list, block attribute names, channel and depth rules of models/common.py and yolo.py; random
values), pickled the way their train.py saves it, imported without the yolov5 package present."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from orchestrator.cli import main
from trainables.checkpoint import CheckpointError, load_model
from trainables.models.yolo import ModelSpec, build_model
from trainables.yolov5_weights import import_yolov5

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
# models/yolov5s.yaml, v6.0: (from, repeats, module, args)
YAML = [(-1, 1, "Conv", [64, 6, 2, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C3", [128]),
        (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C3", [256]), (-1, 1, "Conv", [512, 3, 2]), (-1, 9, "C3", [512]),
        (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C3", [1024]), (-1, 1, "SPPF", [1024, 5]),
        (-1, 1, "Conv", [512, 1, 1]), (-1, 1, "Upsample", []), ([-1, 6], 1, "Concat", []), (-1, 3, "C3", [512, False]),
        (-1, 1, "Conv", [256, 1, 1]), (-1, 1, "Upsample", []), ([-1, 4], 1, "Concat", []), (-1, 3, "C3", [256, False]),
        (-1, 1, "Conv", [256, 3, 2]), ([-1, 14], 1, "Concat", []), (-1, 3, "C3", [512, False]),
        (-1, 1, "Conv", [512, 3, 2]), ([-1, 10], 1, "Concat", []), (-1, 3, "C3", [1024, False]),
        ([17, 20, 23], 1, "Detect", [])]
MULTIPLES = {"n": (0.33, 0.25), "s": (0.33, 0.50)}


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c1, c2, 1), Conv(c2, c2, 3), shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_), Conv(c1, c_), Conv(2 * c_, c2)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c1 // 2), Conv(c1 // 2 * 4, c2)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class Detect(nn.Module):
    def __init__(self, nc, ch):
        super().__init__()
        self.no, self.na = nc + 5, 3
        self.register_buffer("anchors", torch.tensor(ANCHORS).float().view(3, -1, 2) /
                             torch.tensor([8.0, 16.0, 32.0]).view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def forward(self, xs):
        return [m(x).view(x.shape[0], self.na, self.no, *x.shape[2:]).permute(0, 1, 3, 4, 2) for m, x in zip(self.m, xs)]


class DetectionModel(nn.Module):
    """yolo.py's parse_model, for the layers above: channels x width rounded up to 8, repeats x depth."""

    def __init__(self, size: str, nc: int):
        super().__init__()
        depth, width = MULTIPLES[size]
        self.yaml = {"nc": nc, "depth_multiple": depth, "width_multiple": width, "anchors": ANCHORS}
        ch, layers, self.froms = [3], [], []
        for i, (f, n, name, args) in enumerate(YAML):
            n = max(round(n * depth), 1) if n > 1 else n
            if name in ("Conv", "C3", "SPPF"):
                c2 = math.ceil(args[0] * width / 8) * 8
                extra = [n] if name == "C3" else []
                layer = globals()[name](ch[f], c2, *extra, *args[1:])
            elif name == "Upsample":
                layer, c2 = nn.Upsample(None, 2, "nearest"), ch[f]
            elif name == "Concat":
                layer, c2 = Concat(), sum(ch[j] for j in f)
            else:
                layer, c2 = Detect(nc, [ch[j] for j in f]), 0
            layers.append(layer)
            self.froms.append(f)
            ch = [c2] if i == 0 else [*ch, c2]  # indexed by layer number from here on
        self.model = nn.Sequential(*layers)
        self.names = [f"class{i}" for i in range(nc)]

    def forward(self, x):
        outs = []
        for f, layer in zip(self.froms, self.model):
            if f != -1:
                x = [outs[i] if i != -1 else x for i in f]
            x = layer(x)
            outs.append(x)
        return x


def _as_ultralytics(model: DetectionModel) -> None:
    """Give the classes the module paths their pickles carry (models.common.Conv, models.yolo.Detect, ...)."""
    for cls, module in ((Conv, "models.common"), (Bottleneck, "models.common"), (C3, "models.common"),
                        (SPPF, "models.common"), (Concat, "models.common"), (Detect, "models.yolo"),
                        (DetectionModel, "models.yolo")):
        cls.__module__ = module


@pytest.fixture()
def yolov5s(monkeypatch):
    """A YOLOv5s with 3 classes and random weights (BatchNorm statistics too); while it is saved,
    `models.common` and `models.yolo` exist, as in an Ultralytics checkout; then they are gone."""
    torch.manual_seed(0)
    model = DetectionModel("s", nc=3)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() and t.dim() > 0 and t is not model.model[24].anchors:
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if t.dim() == 1 else torch.randn_like(t) * 0.1)
    model.eval()
    return model


def _save_pickled(model, path):
    """torch.save the way Ultralytics' train.py does (the module object, in half precision)."""
    saved = {}
    for name in ("models", "models.common", "models.yolo"):
        saved[name] = types.ModuleType(name)
    saved["models.common"].__dict__.update(Conv=Conv, Bottleneck=Bottleneck, C3=C3, SPPF=SPPF, Concat=Concat)
    saved["models.yolo"].__dict__.update(Detect=Detect, DetectionModel=DetectionModel)
    originals = {c: c.__module__ for c in (Conv, Bottleneck, C3, SPPF, Concat, Detect, DetectionModel)}
    try:
        sys.modules.update(saved)
        _as_ultralytics(model)
        import copy

        torch.save({"epoch": -1, "best_fitness": None, "model": copy.deepcopy(model).half(), "ema": None,
                    "optimizer": None, "opt": {"imgsz": 640}, "git": {"commit": "test"}, "date": "2026-12-03"}, path)
    finally:
        for name in saved:
            sys.modules.pop(name, None)
        for c, module in originals.items():
            c.__module__ = module


def _half_rounded(model):
    """The float32 model the half-precision file holds."""
    import copy

    return copy.deepcopy(model).half().float()


def test_an_ultralytics_pt_imports_with_the_same_raw_outputs_bit_for_bit(yolov5s, tmp_path):
    _save_pickled(yolov5s, tmp_path / "yolov5s.pt")
    assert "models" not in sys.modules  # nothing of theirs is importable while it loads
    spec = import_yolov5(tmp_path / "yolov5s.pt", tmp_path / "ours.pt")
    assert spec == ModelSpec("s", 3, tuple(tuple(tuple(a[i:i + 2]) for i in (0, 2, 4)) for a in ANCHORS))
    imported = load_model(tmp_path / "ours.pt", expect=spec)

    reference = _half_rounded(yolov5s).eval()
    # the same values loaded into our model directly: both state dicts list the layers in the same order
    theirs = [(k, v) for k, v in reference.state_dict().items() if not k.endswith("anchors")]
    direct = build_model(spec)
    ours = direct.state_dict()
    assert [tuple(v.shape) for _, v in theirs] == [tuple(v.shape) for v in ours.values()]
    direct.load_state_dict({k: v for k, (_, v) in zip(ours, theirs)})
    direct.eval()

    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        got, _ = imported(x)
        want, _ = direct(x)
        yolo = reference(x)
    for g, w, y in zip(got, want, yolo):
        assert torch.equal(g, w)
        assert torch.equal(g, y)  # and it computes what YOLOv5's own graph computes


def test_a_plain_state_dict_file_imports_too(yolov5s, tmp_path):
    torch.save(yolov5s.state_dict(), tmp_path / "state.pt")
    assert main(["import", "yolov5", str(tmp_path / "state.pt"), "--out", str(tmp_path / "ours.pt")]) == 0
    model = load_model(tmp_path / "ours.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for g, y in zip(model(x)[0], yolov5s(x)):
            assert torch.equal(g, y)


class _Payload:
    """What a hostile .pt carries: unpickling it runs a command that creates `marker`."""

    def __init__(self, marker, via):
        self.marker, self.via = marker, via

    def __reduce__(self):
        if self.via == "os.system":
            return os.system, (f"touch {self.marker}",)
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.mark.parametrize("via, message", [
    ("os.system", "refused, it cannot be read as weights alone .*posix.system"),  # torch blocks the module
    ("subprocess.call", "holds no YOLOv5 model"),  # read, the call an inert placeholder that never runs
])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, via, message):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker, via), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match=message):
        import_yolov5(path, tmp_path / "ours.pt")
    assert not marker.exists() and not (tmp_path / "ours.pt").exists()
    # the payload is live: an unrestricted torch.load does run it (in a child process)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   check=False, capture_output=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert marker.exists()


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"model.0.conv.weight": torch.zeros(32, 12, 3, 3)}), "not the 6x6 stem conv of YOLOv5 v6.0"),
    (lambda sd: sd.update({"model.13.cv3.conv.weight": torch.zeros(256, 255, 1, 1)}),
     r"model.13.cv3.conv.weight \(256, 255, 1, 1\) does not fit YOLOv5s's neck.td4.cv3.conv.weight \(256, 256, 1, 1\)"),
    (lambda sd: sd.pop("model.24.m.0.weight"), "no Detect head at layer 24"),
    (lambda sd: sd.pop("model.24.anchors"), r"no usable model.24.anchors \(none"),
    (lambda sd: sd.update({"model.24.anchors": torch.full((3, 3, 2), float("nan"))}), "no usable model.24.anchors"),
])
def test_weights_of_another_layout_are_refused_naming_the_file_and_the_tensor(yolov5s, tmp_path, edit, message):
    state = dict(yolov5s.state_dict())
    edit(state)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=message) as e:
        import_yolov5(tmp_path / "odd.pt", tmp_path / "ours.pt")
    assert str(tmp_path / "odd.pt") in str(e.value)


def test_an_imported_yolov5n_with_evolved_anchors_fine_tunes_as_a_student_and_keeps_them(tmp_path):
    from detection.coco import CocoDataset, SplitSpec
    from detection.synth import SynthConfig, generate
    from trainables.checkpoint import checkpoint_spec, load_checkpoint
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    generate(tmp_path / "data", train=8, val=4, seed=5, config=SynthConfig(size=64))
    train = CocoDataset(SplitSpec(tmp_path / "data" / "train", tmp_path / "data" / "instances_train.json"))
    torch.manual_seed(1)
    model = DetectionModel("n", nc=train.num_classes)
    with torch.no_grad():
        model.model[24].anchors.mul_(1.1)  # autoanchor's evolved anchors are not whole pixels
    torch.save(model.state_dict(), tmp_path / "yolov5n.pt")
    spec = import_yolov5(tmp_path / "yolov5n.pt", tmp_path / "init.pt")
    assert spec.size == "n" and spec.anchors[0][0] == pytest.approx((11.0, 14.3))

    result = train_student(TrainKnobs(student="n", student_init=str(tmp_path / "init.pt"), epochs=1, img_size=64),
                           train, None, tmp_path / "run",
                           base=TrainConfig(batch_size=4, nominal_batch=4, warmup_epochs=0, val_every=99, torch_threads=1))
    assert checkpoint_spec(load_checkpoint(result.checkpoint)).anchors == spec.anchors
