"""A COCO data set reads only the images in its own images directory: a file_name that is absolute or
climbs out with '..' is refused naming the annotations file and the entry, even when the file it
names exists (a crafted data set must not make a sweep read, or send to a board, other files)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from detection.coco import CocoDataset, DatasetError, SplitSpec


@pytest.mark.parametrize("file_name", ["../outside.png", "sub/../../outside.png", "ABSOLUTE"])
def test_a_file_name_outside_the_images_directory_is_refused_naming_file_and_entry(tmp_path, file_name):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "outside.png")  # it exists: only the path is wrong
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    file_name = str(tmp_path / "outside.png") if file_name == "ABSOLUTE" else file_name
    images = [{"id": 1, "file_name": "a.png", "height": 32, "width": 32},
              {"id": 2, "file_name": file_name, "height": 32, "width": 32}]
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": images, "annotations": [], "categories": [{"id": 1, "name": "box"}]}))
    with pytest.raises(DatasetError) as refused:
        CocoDataset(SplitSpec(tmp_path / "images", tmp_path / "instances.json"))
    message = str(refused.value)
    assert str(tmp_path / "instances.json") in message and "images[1] (id 2)" in message
    assert repr(file_name) in message and "points outside the images directory" in message


def test_a_file_name_in_a_subdirectory_of_the_images_is_read(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "train" / "a.png")
    (tmp_path / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "train/a.png", "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "box"}]}))
    assert len(CocoDataset(SplitSpec(tmp_path / "images", tmp_path / "instances.json"))) == 1
