"""A checkpoint's model_spec is bounded before anything is allocated: a crafted or damaged file that
asks for a billion classes or a thousand anchors a level is refused naming the file, instead of building
(or trying to build) a head of that size."""
from __future__ import annotations

import pytest

from trainables.checkpoint import CheckpointError, load_model, save_checkpoint
from trainables.models.yolo import MAX_CLASSES, ModelSpec


@pytest.mark.parametrize("change, expected", [
    ({"num_classes": 10 ** 9}, f"num_classes must be an integer in [1, {MAX_CLASSES}]"),
    ({"anchors": [[[10, 13]] * 1000] * 3}, "more than 3 levels of 9 anchors"),
    ({"anchors": [[[10, 13]]] * 2}, "anchors must be 3 levels"),
    ({"anchors": [[[10, float("inf")]]] * 3}, "finite pixel sizes"),
], ids=["billion-classes", "thousand-anchors", "two-levels", "infinite-anchor"])
def test_a_checkpoint_asking_for_an_oversized_model_is_refused_naming_the_file(tmp_path, change, expected):
    path = tmp_path / "crafted.pt"
    spec = {**ModelSpec("n", 3).to_dict(), **change}
    save_checkpoint(path, {"model_spec": spec, "model": {}})
    with pytest.raises(CheckpointError) as refused:
        load_model(path)
    assert str(path) in str(refused.value) and expected in str(refused.value)
