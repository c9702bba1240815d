"""`detect` and `score` run an artifact through the runtime like `measure` does, so an artifact that
crashes the runtime must meet the same guard: counted across actor restarts, refused past the limit."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from device_actors.actor import BoardLatencyActor
from device_actors.journal import ArtifactCrashedBoard
from device_actors.measure import sha256_hex
from device_actors.report import MeasureRequest

# The board actor's process dies inside `detect` (os._exit stands in for a runtime that segfaults on
# the artifact: no artifact that reliably crashes ONNX Runtime is at hand); the actor, its journal
# and the process death are real.
CRASH_IN_DETECT = textwrap.dedent("""
    import os, pickle, sys
    import numpy as np
    import device_actors.actor as actor_module
    from device_actors.actor import BoardLatencyActor
    request, model = pickle.loads(open(sys.argv[2], "rb").read())
    actor_module.detect = lambda *args, **kwargs: os._exit(139)
    BoardLatencyActor("testboard", cache_dir=sys.argv[1]).detect(request, model, [np.zeros((96, 96, 3), np.uint8)], 0.25)
""")


def test_an_artifact_that_crashed_detect_is_refused_by_the_next_actor_not_run_again(tmp_path, toy_onnx,
                                                                                   quick_protocol):
    import pickle

    request = MeasureRequest(sha256_hex(toy_onnx), "onnxruntime", protocol=quick_protocol)
    (tmp_path / "request.pkl").write_bytes(pickle.dumps((request, toy_onnx)))
    crashed = subprocess.run([sys.executable, "-c", CRASH_IN_DETECT, str(tmp_path / "board"),
                              str(tmp_path / "request.pkl")], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 139, crashed.stderr[-2000:]

    restarted = BoardLatencyActor("testboard", cache_dir=str(tmp_path / "board"), max_attempts=1)
    frame = np.zeros((96, 96, 3), np.uint8)
    with pytest.raises(ArtifactCrashedBoard, match=r"detecting with .* ended the board actor 1 times"):
        restarted.detect(request, toy_onnx, [frame], 0.25)
    assert len(restarted.detect(request, toy_onnx, [frame], 0.25)) == 1  # refused once, then forgotten and run
