"""COCO-format detection data: a round trip with the generated set, and clear errors on bad
annotations before any training."""

from __future__ import annotations

import json

import pytest
import torch

from deploykit.errors import DataError
from deploykit.tasks.detect.coco import load_coco, write_coco
from deploykit.tasks.detect.shapes import CLASSES, ShapesDetection


@pytest.fixture
def coco_dir(tmp_path):
    write_coco(ShapesDetection(6, size=64, seed=1), tmp_path / "set", CLASSES)
    return tmp_path / "set"


def test_the_generated_set_round_trips_through_coco_files(coco_dir):
    ds, src = load_coco(coco_dir), ShapesDetection(6, size=64, seed=1)
    assert len(ds) == 6 and ds.class_names == list(CLASSES)
    for i in range(6):
        img, target = ds[i]
        ref_img, ref = src[i]
        assert torch.equal(img, ref_img)
        assert torch.allclose(target["boxes"], ref["boxes"])
        assert torch.equal(target["labels"], ref["labels"])


def _edit(coco_dir, change):
    path = coco_dir / "instances.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["annotations"][0].update(bbox=[60, 10, 20, 10]),
     r"annotations\[0\] \(id 1\): bbox \[60, 10, 20, 10\] lies outside its image 000000.png "
     r"\(64x64\)"),
    (lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]), r"has no area"),
    (lambda d: d["annotations"][0].update(category_id=99),
     r"category_id 99 is not declared in 'categories' \(ids \[1, 2, 3, 4, 5\]\)"),
    (lambda d: d["annotations"][0].update(image_id=1234), r"image_id 1234 is not in 'images'"),
    (lambda d: d.update(annotations=[]), r"empty \(6 images, 0 annotations\)"),
    (lambda d: d.pop("categories"), r"needs lists 'images', 'annotations' and 'categories'"),
])
def test_bad_annotations_name_the_entry_and_the_fix(coco_dir, change, message):
    _edit(coco_dir, change)
    with pytest.raises(DataError, match=message):
        load_coco(coco_dir)


def test_missing_and_corrupt_images_stop_the_load_or_are_skipped_and_counted(coco_dir):
    (coco_dir / "000002.png").write_bytes(b"not a png")
    (coco_dir / "000004.png").unlink()
    with pytest.raises(DataError, match=r"2 of 6 images cannot be read .*data.skip_corrupt"):
        load_coco(coco_dir)
    ds = load_coco(coco_dir, skip_corrupt=True)
    assert [p.name for p in ds.files] == ["000000.png", "000001.png", "000003.png",
                                          "000005.png"]
    (coco_dir / "instances.json").write_text("{not json")
    with pytest.raises(DataError, match="not a JSON file"):
        load_coco(coco_dir)
    with pytest.raises(DataError, match="annotation file not found"):
        load_coco(coco_dir / "nosuch")


def _layout(root, kind: str) -> dict:
    """Write a 4 + 3 image set in a layout users have; return the recipe's data.splits."""
    import shutil

    made = {}
    for split, n, seed in (("train", 4, 1), ("val", 3, 2)):
        tmp = root / f"_tmp_{split}"
        write_coco(ShapesDetection(n, size=64, seed=seed), tmp, CLASSES)
        if kind == "official":        # annotations/instances_train2017.json + train2017/
            images, ann = f"{split}2017", f"annotations/instances_{split}2017.json"
        elif kind == "roboflow":      # train/_annotations.coco.json beside the images
            images, ann = split, f"{split}/_annotations.coco.json"
        else:                         # CVAT: one folder per task export
            images, ann = f"{split}/images", f"{split}/annotations/instances_default.json"
        (root / images).mkdir(parents=True, exist_ok=True)
        (root / ann).parent.mkdir(parents=True, exist_ok=True)
        for f in tmp.glob("*.png"):
            shutil.move(str(f), root / images / f.name)
        shutil.move(str(tmp / "instances.json"), root / ann)
        shutil.rmtree(tmp)
        made[split] = {"images": images, "annotations": ann}
    return made


@pytest.mark.parametrize("kind", ["official", "roboflow", "cvat"])
def test_coco_layouts_users_have_load_through_data_splits(kind, tmp_path):
    from deploykit.recipe import parse_recipe
    from deploykit.tasks.detect.data import build_detection_loaders

    root = tmp_path / "set"
    splits = _layout(root, kind)
    recipe = parse_recipe({
        "task": "detection",
        "model": {"source": "torchvision", "name": "ssdlite320_mobilenet_v3_large",
                  "num_classes": len(CLASSES)},
        "data": {"kind": "coco", "root": str(root), "splits": splits, "image_size": 64},
        "export": {"onnx": {"opset": 18}}, "bench": {"batch_sizes": [1]}}, "r.yaml")
    loaders = build_detection_loaders(recipe.data, 0, len(CLASSES))
    assert (len(loaders.train.dataset), len(loaders.val.dataset)) == (4, 3)
    assert loaders.class_names == list(CLASSES)


def test_a_missing_split_file_is_named_at_load(tmp_path):
    from deploykit.errors import RecipeError
    from deploykit.recipe import parse_recipe

    (tmp_path / "train2017").mkdir()
    raw = {"task": "detection",
           "model": {"source": "torchvision", "name": "ssdlite320_mobilenet_v3_large"},
           "data": {"kind": "coco", "root": str(tmp_path), "splits": {
               "train": {"images": "train2017",
                         "annotations": "annotations/instances_train2017.json"},
               "val": {"images": "val2017", "annotations": "annotations/instances_val2017.json"}}},
           "export": {"onnx": {"opset": 18}}, "bench": {"batch_sizes": [1]}}
    with pytest.raises(RecipeError, match=r"data.splits.train.annotations: file .*"
                                          r"instances_train2017.json' does not exist"):
        parse_recipe(raw, "r.yaml")
