"""Penn-Fudan conversion against the original files, the two dataset readers, and the resumable sampler."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from swiftformer.dense.data import CocoInstances, SegmentationFolder, TrainSampler
from swiftformer.dense.pennfudan import convert_pennfudan, parse_annotation

from .conftest import shared_data


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    source = shared_data("pennfudan")
    output = tmp_path_factory.mktemp("pennfudan")
    assert convert_pennfudan(source, output) == {"train": 95, "val": 24}
    return source, output


def test_split_is_every_fifth_sorted_image(converted) -> None:
    source, output = converted
    names = sorted(p.stem for p in (source / "PNGImages").glob("*.png"))
    val = json.loads((output / "coco/annotations/instances_val.json").read_text())
    assert [i["file_name"] for i in val["images"]] == [f"{n}.png" for n in names[::5]]
    assert sorted(p.stem for p in (output / "ade/images/validation").iterdir()) == names[::5]


def test_boxes_and_mask_areas_match_the_annotation_files(converted) -> None:
    source, output = converted
    annotations = {}
    for split in ("train", "val"):
        coco = json.loads((output / f"coco/annotations/instances_{split}.json").read_text())
        names = {i["id"]: i["file_name"][:-4] for i in coco["images"]}
        for a in coco["annotations"]:
            annotations.setdefault(names[a["image_id"]], []).append(a)
    for name in ["FudanPed00002", "FudanPed00005", "FudanPed00016", "PennPed00001"]:
        parsed = parse_annotation(source / "Annotation" / f"{name}.txt")
        text_boxes = (source / "Annotation" / f"{name}.txt").read_text(encoding="latin-1").count("Bounding box for object")
        instances = np.array(Image.open(source / "PedMasks" / f"{name}_mask.png"))
        assert len(annotations[name]) == len(parsed.boxes) == text_boxes
        for k, (a, (x0, y0, x1, y1)) in enumerate(zip(annotations[name], parsed.boxes), start=1):
            assert a["bbox"] == [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]
            assert a["area"] == int((instances == k).sum()) > 0
        label = np.array(Image.open(output / "ade/annotations" / _ade_split(output, name) / f"{name}.png"))
        assert set(np.unique(label)) <= {0, 1} and int(label.sum()) == int((instances > 0).sum())


def _ade_split(output: Path, name: str) -> str:
    return "validation" if (output / "ade/images/validation" / f"{name}.png").exists() else "training"


def test_coco_dataset_targets(converted) -> None:
    _, output = converted
    dataset = CocoInstances(output / "coco/val", output / "coco/annotations/instances_val.json")
    image, target = dataset[0]
    assert image.shape[0] == 3 and 0 <= float(image.min()) and float(image.max()) <= 1
    assert target["masks"].shape == (len(target["boxes"]), *image.shape[1:])
    assert target["labels"].tolist() == [1] * len(target["boxes"]) and dataset.category_ids == [1]
    # every mask lies inside its box (boxes are from the txt, masks from the PNG: they agree within a pixel)
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
    flipped = CocoInstances(output / "coco/val", output / "coco/annotations/instances_val.json", hflip=1.0)[0][1]
    width = image.shape[-1]
    torch.testing.assert_close(flipped["boxes"][:, [2, 0]], width - target["boxes"][:, [0, 2]])
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))


def test_segmentation_folder(converted) -> None:
    _, output = converted
    train = SegmentationFolder(output / "ade", "training", img_size=128, crop_size=96)
    image, label = train[3]
    assert image.shape == (3, 96, 96) and label.shape == (96, 96)
    assert set(label.unique().tolist()) <= {0, 1, 255}
    val = SegmentationFolder(output / "ade", "validation", img_size=128)
    image, label = val[0]
    assert min(image.shape[1:]) == 128 and label.shape == val.read_label(0).shape
    reduced = SegmentationFolder(output / "ade", "validation", reduce_zero_label=True).read_label(0)
    assert set(reduced.unique().tolist()) <= {0, 255}  # 0 -> ignored, person 1 -> 0


def test_ade20k_labels_shift_keep_ignored_pixels_and_name_a_stray_value(tmp_path) -> None:
    """reduce_zero_label: 0 ("other") and 255 are ignored, k -> k - 1; a value beyond the classes is named as the
    file holds it (before: 255 became 254 and failed inside the loss)."""
    from swiftformer.errors import DataError

    (tmp_path / "images" / "validation").mkdir(parents=True)
    (tmp_path / "annotations" / "validation").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "validation" / "a.jpg")
    label = np.array([[0, 255, 1, 150]] * 4, dtype=np.uint8)
    Image.fromarray(label).save(tmp_path / "annotations" / "validation" / "a.png")
    ade = SegmentationFolder(tmp_path, "validation", reduce_zero_label=True, num_classes=150)
    assert ade.read_label(0)[0].tolist() == [255, 255, 0, 149]
    with pytest.raises(DataError, match="a.png holds label 150, outside the 150 classes"):
        SegmentationFolder(tmp_path, "validation", num_classes=150).read_label(0)


def test_train_sampler_resumes_mid_epoch() -> None:
    full = TrainSampler(10, rank=1, world_size=2, seed=3)
    full.set_epoch(4)
    order = list(full)
    resumed = TrainSampler(10, rank=1, world_size=2, seed=3)
    resumed.set_epoch(4, start=2)
    assert list(resumed) == order[2:] and len(resumed) == 3
    other = TrainSampler(10, rank=0, world_size=2, seed=3)
    other.set_epoch(4)
    assert sorted(order + list(other)) == list(range(10))


def test_each_task_family_builds_its_splits_in_the_same_form(converted, tmp_path) -> None:
    from swiftformer.data import build_datasets
    from swiftformer.dense.config import load_config
    from swiftformer.dense.data import dense_datasets
    from swiftformer.recipes import load_recipe

    _, output = converted
    segmentation = dense_datasets(load_config("pennfudan_semantic_fpn_xs", {"data": str(output / "ade")}), train=False)
    assert segmentation.train is None and len(segmentation.val) == 24 and segmentation.class_names == ["background", "person"]
    detection = dense_datasets(load_config("pennfudan_maskrcnn_xs", {"data": str(output / "coco")}))
    assert (len(detection.train), len(detection.val), detection.class_names) == (95, 24, ["person"])
    digits = build_datasets(load_recipe("demo_digits"), train=False)
    assert digits.train is None and len(digits.val) == 360 and digits.class_names == [str(d) for d in range(10)]
    for folder in ("images", "annotations"):  # one image-suffix list for every task: TIFF photos count here too
        (tmp_path / folder / "validation").mkdir(parents=True)
    Image.new("RGB", (40, 32)).save(tmp_path / "images/validation/scan.tiff")
    Image.new("L", (40, 32)).save(tmp_path / "annotations/validation/scan.png")
    assert [path.name for path, _ in SegmentationFolder(tmp_path, "validation").samples] == ["scan.tiff"]
