"""Datasets for dense prediction, in the formats users have.

- :class:`CocoInstances`: COCO instance JSON (``images/`` + ``instances_*.json``) for detection and instance
  segmentation. Category ids map to contiguous labels ``1..K`` (0 is torchvision's background).
- :class:`SegmentationFolder`: image / label-PNG folder pairs in the ADE20K layout
  (``images/<split>/x.jpg`` + ``annotations/<split>/x.png``); ``ignore_index`` (255) pixels are not scored.
  ``reduce_zero_label`` is ADE20K's convention: label 0 ("other") becomes ignored and k becomes k - 1.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.functional import normalize, pil_to_tensor

from ..data import DECODE_ERRORS, IMAGE_EXTENSIONS, Datasets, decode_failure, open_rgb
from ..errors import DataError, SwiftFormerError
from ..models.swiftformer import IMAGENET_MEAN, IMAGENET_STD
from .config import DenseConfig

IGNORE_INDEX = 255


def read_image(path: Path, exif_orientation: bool = False) -> torch.Tensor:
    """RGB image as a float tensor in [0, 1], ``(3, H, W)`` (:func:`swiftformer.data.open_rgb`)."""
    try:
        return pil_to_tensor(open_rgb(path, exif_orientation)).float().div_(255)
    except DECODE_ERRORS as error:
        raise DataError(f"cannot read image {path}: {decode_failure(error)}") from None


# COCO instances --------------------------------------------------------------------------------------------
class CocoInstances(Dataset):
    """COCO instance annotations as torchvision detection targets.

    Each item is ``(image (3, H, W) in [0, 1], target)`` with ``boxes`` (N, 4) xyxy, ``labels`` (N,),
    ``masks`` (N, H, W) uint8 and ``image_id``. Crowd regions and degenerate boxes are left out of the
    targets (they only matter to the evaluator, which reads the JSON itself). ``hflip`` is the probability of
    a horizontal flip (training); the detector does the resizing.
    """

    def __init__(self, images: str | Path, annotations: str | Path, hflip: float = 0.0, masks: bool = True) -> None:
        from pycocotools.coco import COCO

        self.images, annotations = Path(images), Path(annotations)
        if not annotations.is_file():
            raise DataError(f"COCO annotation file not found: {annotations}")
        if not self.images.is_dir():
            raise DataError(f"COCO image folder not found: {self.images}")
        self.coco = _quiet_coco(COCO, annotations)
        self.ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {cat: index + 1 for index, cat in enumerate(self.category_ids)}
        self.class_names = [self.coco.cats[cat]["name"] for cat in self.category_ids]
        self.hflip, self.masks = hflip, masks

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = read_image(self.images / info["file_name"])
        height, width = image.shape[-2:]
        annotations = [
            a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0) and a["bbox"][2] > 1 and a["bbox"][3] > 1
        ]
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in annotations], dtype=torch.int64),
            "image_id": torch.tensor(image_id),
        }
        if self.masks:
            masks = [self.coco.annToMask(a) for a in annotations]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width, dtype=torch.uint8)
        if self.hflip and random.random() < self.hflip:
            image = image.flip(-1)
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def _quiet_coco(coco_class: type, path: Path) -> Any:
    """``COCO(path)`` without its prints on stdout."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return coco_class(str(path))
        except (ValueError, KeyError) as error:
            raise DataError(f"{path} is not a COCO instance file: {error}") from None


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Lists of images and targets: the detector batches images of different sizes itself."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# Semantic segmentation folders -----------------------------------------------------------------------------
class SegmentationFolder(Dataset):
    """``root/images/<split>/<name>.<ext>`` with ``root/annotations/<split>/<name>.png`` (ADE20K layout).

    Training (``crop_size`` set): random rescale of the image by ``scale_range`` around ``img_size`` (the
    short side), random ``crop_size`` crop (padded with ``ignore_index``), horizontal flip. Evaluation: the
    short side resized to ``img_size``; the label keeps its original size (scores are at full resolution).
    Returns ``(normalised image (3, h, w), label (H, W) int64)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        img_size: int = 512,
        crop_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: float = 0.5,
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
        num_classes: int | None = None,
    ) -> None:
        self.root, self.split = Path(root), split
        image_dir, label_dir = self.root / "images" / split, self.root / "annotations" / split
        if not image_dir.is_dir() or not label_dir.is_dir():
            raise DataError(f"expected {image_dir} and {label_dir} (ADE20K layout: images/<split>, annotations/<split>)")
        self.samples = [
            (path, label_dir / f"{path.stem}.png")
            for path in sorted(image_dir.iterdir())
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        missing = [str(label) for _, label in self.samples if not label.is_file()]
        if missing:
            raise DataError(f"{len(missing)} images have no label PNG, e.g. {missing[0]}")
        if not self.samples:
            raise DataError(f"no images in {image_dir}")
        self.img_size, self.crop_size, self.scale_range, self.hflip = img_size, crop_size, scale_range, hflip
        self.reduce_zero_label, self.ignore_index = reduce_zero_label, ignore_index
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def read_label(self, index: int) -> torch.Tensor:
        """The label map at full resolution, ``(H, W)`` int64, with ``reduce_zero_label`` applied."""
        with Image.open(self.samples[index][1]) as image:
            label = torch.from_numpy(np.array(image, dtype=np.int64))
        if label.ndim != 2:
            raise DataError(f"{self.samples[index][1]} is not a single-channel label PNG")
        shift = int(self.reduce_zero_label)  # ADE20K: 0 is "other", k -> k - 1; ignored pixels stay ignored
        ignored = label == self.ignore_index
        if shift:
            ignored |= label == 0
        if self.num_classes is not None:  # else a cross-entropy or confusion-matrix error deep in the run
            outside = label[~ignored & ((label - shift < 0) | (label - shift >= self.num_classes))]
            if outside.numel():
                classes = f"labels {shift}..{self.num_classes - 1 + shift}" if shift else f"{self.num_classes} classes"
                raise DataError(f"{self.samples[index][1]} holds label {int(outside[0])}, outside the {classes} "
                                f"(num_classes {self.num_classes}) and not ignore_index {self.ignore_index}")
        return torch.where(ignored, self.ignore_index, label - shift)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = read_image(self.samples[index][0]), self.read_label(index)
        if self.crop_size is None:
            image = resize_short_side(image, self.img_size)
        else:
            image, label = self._augment(image, label)
        return normalize(image, IMAGENET_MEAN, IMAGENET_STD), label

    def _augment(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = random.uniform(*self.scale_range) * self.img_size
        image = resize_short_side(image, round(scale))
        label = F.interpolate(label[None, None].float(), size=image.shape[-2:], mode="nearest")[0, 0].long()
        crop = self.crop_size
        pad_h, pad_w = max(crop - image.shape[1], 0), max(crop - image.shape[2], 0)
        # Padding is ignored in the loss; the image is padded with 0 (the mean after normalisation is close).
        image = F.pad(image, (0, pad_w, 0, pad_h))
        label = F.pad(label, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top, left = random.randint(0, image.shape[1] - crop), random.randint(0, image.shape[2] - crop)
        image, label = image[:, top : top + crop, left : left + crop], label[top : top + crop, left : left + crop]
        if random.random() < self.hflip:
            image, label = image.flip(-1), label.flip(-1)
        return image, label


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``(3, H, W)`` so that ``min(H, W) == size``."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False, antialias=True)[0]


def collate_eval_segmentation(batch: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Lists: evaluation images keep their own sizes."""
    images, labels = zip(*batch)
    return list(images), list(labels)


class TrainSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, resumable at any position within the epoch.

    ``set_epoch(epoch, start)`` skips the first ``start`` indices without loading them, so a run resumed
    mid-epoch sees exactly the batches it would have seen. Every rank gets ``len(dataset) // world_size``
    indices (the remainder is dropped each epoch).
    """

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.dataset_size, self.rank, self.world_size, self.seed = dataset_size, rank, world_size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.dataset_size, generator=generator).tolist()
        per_rank = self.dataset_size // self.world_size
        mine = order[self.rank : per_rank * self.world_size : self.world_size]
        return iter(mine[self.start :])

    def __len__(self) -> int:
        return self.dataset_size // self.world_size - self.start


# The splits of a run ---------------------------------------------------------------------------------------
def dense_datasets(config: DenseConfig, train: bool = True) -> Datasets:
    """Training (optional) and validation sets of the config's task (classification's:
    :func:`swiftformer.data.build_datasets`)."""
    if config.data is None:
        raise DataError("no dataset: set data=PATH (--data)")
    root = Path(config.data)
    if config.task == "detection":
        val = CocoInstances(root / config.val_images, root / config.val_annotations, masks=config.masks)
        training = (
            CocoInstances(root / config.train_images, root / config.train_annotations, config.hflip, config.masks)
            if train else None
        )
        return Datasets(training, val, val.class_names)
    if config.num_classes is None:
        raise SwiftFormerError("segmentation needs num_classes (classes in the label PNGs, background included)")
    common = dict(img_size=config.img_size, reduce_zero_label=config.reduce_zero_label,
                  ignore_index=config.ignore_index, num_classes=config.num_classes)
    val = SegmentationFolder(root, config.val_split, **common)
    training = (
        SegmentationFolder(root, config.train_split, crop_size=config.crop_size, scale_range=config.scale_range,
                           hflip=config.hflip, **common)
        if train else None
    )
    return Datasets(training, val, list(config.class_names or (str(i) for i in range(config.num_classes))))
