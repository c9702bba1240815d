"""The embedded default data set is generated once, also when its first users start together."""
from __future__ import annotations

import threading

from PIL import Image

import detection.synth
from orchestrator.datasets import EmbeddedDefault, embedded_default


def test_first_users_starting_together_wait_for_one_generation_and_read_whole_images(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    generate, calls = detection.synth.generate, []

    def counted(*args, **kwargs):
        calls.append(threading.get_ident())
        return generate(*args, **kwargs)

    monkeypatch.setattr(detection.synth, "generate", counted)
    data, roots, start = EmbeddedDefault(train=24, val=8, size=64), [], threading.Barrier(3)

    def first_use():
        start.wait()
        roots.append(embedded_default(data))

    users = [threading.Thread(target=first_use) for _ in range(3)]
    for user in users:
        user.start()
    for user in users:
        user.join(120)
    assert len(calls) == 1 and len(set(roots)) == 1 and len(roots) == 3
    images = sorted(roots[0].glob("*/*.png"))
    assert len(images) == 32
    for path in images:  # every image whole: a reader never saw one half written
        with Image.open(path) as image:
            image.load()
