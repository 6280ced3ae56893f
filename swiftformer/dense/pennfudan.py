"""Penn-Fudan pedestrians (original layout) to COCO instance JSON and ADE20K-style label folders.

The database ships ``PNGImages/<name>.png``, ``PedMasks/<name>_mask.png`` (0 = background, k = pedestrian k)
and ``Annotation/<name>.txt`` (PASCAL-style text, 1-based inclusive boxes). Output::

    <out>/coco/{train,val}/<name>.png                 links to the original images
    <out>/coco/annotations/instances_{train,val}.json  one category, "person"; RLE masks; boxes from the txt
    <out>/ade/images/{training,validation}/<name>.png links to the original images
    <out>/ade/annotations/{training,validation}/<name>.png  0 = background, 1 = person

Split: ``val`` = images whose index in the sorted file list is divisible by 5, as the data README suggests.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError

SPLITS = {"train": "training", "val": "validation"}  # COCO split name -> ADE20K split name
_BOX = re.compile(r"Bounding box for object (\d+) .*: \((\d+), (\d+)\) - \((\d+), (\d+)\)")
_SIZE = re.compile(r"Image size \(X x Y x C\) : (\d+) x (\d+) x \d+")


@dataclass(frozen=True)
class Annotation:
    """One image's annotation file: size and the 1-based inclusive box of each pedestrian, in order."""

    width: int
    height: int
    boxes: list[tuple[int, int, int, int]]


def parse_annotation(path: Path) -> Annotation:
    """Read a Penn-Fudan ``Annotation/<name>.txt``."""
    text = path.read_text(encoding="latin-1")
    size = _SIZE.search(text)
    if size is None:
        raise DataError(f"{path}: no 'Image size' line")
    boxes = sorted((int(m[1]), tuple(int(v) for v in m.groups()[1:])) for m in _BOX.finditer(text))
    return Annotation(int(size[1]), int(size[2]), [box for _, box in boxes])


def split_of(index: int) -> str:
    """``val`` for every fifth image of the sorted list, ``train`` otherwise."""
    return "val" if index % 5 == 0 else "train"


def _place(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if link:
        os.symlink(os.path.relpath(source.resolve(), target.parent.resolve()), target)
    else:
        shutil.copyfile(source, target)


def convert_pennfudan(source: str | Path, output: str | Path, link: bool = True) -> dict[str, int]:
    """Write the COCO and ADE20K-style views of ``source`` under ``output``; returns image counts per split.

    ``link=True`` symlinks the images instead of copying them (labels and JSON are always written).
    """
    from pycocotools import mask as mask_utils

    source, output = Path(source), Path(output)
    names = sorted(p.stem for p in (source / "PNGImages").glob("*.png"))
    if not names:
        raise DataError(f"{source}/PNGImages holds no .png images: is {source} the Penn-Fudan folder?")
    coco = {
        split: {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
        for split in SPLITS
    }
    annotation_id = 0
    for index, name in enumerate(names):
        split = split_of(index)
        image_path = source / "PNGImages" / f"{name}.png"
        instances = np.array(Image.open(source / "PedMasks" / f"{name}_mask.png"))  # (H, W), k = pedestrian k
        annotation = parse_annotation(source / "Annotation" / f"{name}.txt")
        height, width = instances.shape
        if (annotation.width, annotation.height) != (width, height):
            raise DataError(f"{name}: annotation says {annotation.width}x{annotation.height}, mask is {width}x{height}")
        image_id = index + 1
        coco[split]["images"].append({"id": image_id, "file_name": f"{name}.png", "width": width, "height": height})
        for k, (x_min, y_min, x_max, y_max) in enumerate(annotation.boxes, start=1):
            mask = np.asfortranarray((instances == k).astype(np.uint8))
            rle = mask_utils.encode(mask)
            rle["counts"] = rle["counts"].decode("ascii")
            annotation_id += 1
            coco[split]["annotations"].append({
                "id": annotation_id,
                "image_id": image_id,
                "category_id": 1,
                # 1-based inclusive corners -> 0-based [x, y, w, h]
                "bbox": [x_min - 1, y_min - 1, x_max - x_min + 1, y_max - y_min + 1],
                "area": int(mask.sum()),
                "segmentation": rle,
                "iscrowd": 0,
            })
        _place(image_path, output / "coco" / split / f"{name}.png", link)
        _place(image_path, output / "ade" / "images" / SPLITS[split] / f"{name}.png", link)
        label_path = output / "ade" / "annotations" / SPLITS[split] / f"{name}.png"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((instances > 0).astype(np.uint8)).save(label_path)
    (output / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    for split, content in coco.items():
        (output / "coco" / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return {split: len(content["images"]) for split, content in coco.items()}
