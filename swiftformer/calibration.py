"""Real images to calibrate reduced-precision artefacts with, and the held-out images to check them on.

    swiftformer export --model swiftformer_xs --checkpoint best.pth --format onnx --precision int8 \
        --out xs-int8.onnx --calibration ../shared/data/cifar10-mini/train --calibration-size 256

A folder is an ImageFolder tree (``DIR/<class>/*.jpg``: labelled, so top-1 can be reported) or a flat folder of
images (searched recursively, unlabelled). The calibration images are a seeded random draw of ``size`` images;
unless ``--check-data`` names another folder, the check images are drawn from the rest of the same folder, so
no image serves both. Both are preprocessed with the model's own eval transform (resize, center crop, normalise).
Calibration never falls back to random tensors: their activation ranges have nothing to do with a photo's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import IMAGE_EXTENSIONS, batch_images, list_images
from .errors import DataError

DEFAULT_CALIBRATION_SIZE = 256
DEFAULT_CHECK_SIZE = 1000


@dataclass
class ImageList:
    """Image files, with their class indices into ``class_names`` when the folder is an ImageFolder tree."""

    paths: list[Path]
    labels: list[int] | None = None
    class_names: list[str] | None = None

    def describe(self, folder: str | Path) -> str:
        """``N images of DIR (class folders a, b, ...)``: what a command read, so a wrong folder shows."""
        names = self.class_names or []
        layout = (f"class folders {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}" if names
                  else "no class folders")
        return f"{len(self.paths)} images of {folder} ({layout})"

    def take(self, indices: list[int]) -> ImageList:
        labels = [self.labels[i] for i in indices] if self.labels is not None else None
        return ImageList([self.paths[i] for i in indices], labels, self.class_names)


@dataclass
class ImageBatch:
    """Preprocessed images ``(N, 3, H, W)`` with their labels (``None`` for a flat folder)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None


def folder_images(root: str | Path) -> ImageList:
    """The images of ``root``: labelled by sub-folder when every image sits in a class folder, else flat."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images")
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if loose or not classes:
        return ImageList(list_images([str(root)]))
    splits = [name for name in classes if name in ("train", "val") and any(p.is_dir() for p in (root / name).iterdir())]
    if splits:  # eval --data takes such a root; read here its splits would be two classes, train mixed into val
        raise DataError(f"{root} is a dataset root ({', '.join(f'{name}/' for name in splits)} of class folders): give "
                        f"one split, e.g. {root / 'val'} to check on, {root / 'train'} to calibrate on")
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += found
        labels += [index] * len(found)
    if not paths:
        raise DataError(f"no images found in {root}")
    return ImageList(paths, labels, classes)


def _draw(images: ImageList, seed: int) -> list[int]:
    return torch.randperm(len(images.paths), generator=torch.Generator().manual_seed(seed)).tolist()


def calibration_images(folder: str | Path, size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0) -> ImageList:
    """``size`` seeded images of ``folder`` to calibrate on, all of them if it holds fewer, none held out: for
    callers that check elsewhere or not at all (``swiftformer bench`` times artefacts, it does not check them)."""
    if size < 1:
        raise DataError(f"--calibration-size must be at least 1, got {size}")
    pool = folder_images(folder)
    return pool.take(_draw(pool, seed)[:size])


def calibration_and_check(
    calibration: str | Path,
    size: int = DEFAULT_CALIBRATION_SIZE,
    check: str | Path | None = None,
    check_size: int = DEFAULT_CHECK_SIZE,
    seed: int = 0,
) -> tuple[ImageList, ImageList]:
    """``size`` seeded calibration images and up to ``check_size`` check images that are not among them."""
    if size < 1 or check_size < 1:
        raise DataError(f"--calibration-size and --check-size must be at least 1, got {size} and {check_size}")
    pool = folder_images(calibration)
    order = _draw(pool, seed)
    chosen = pool.take(order[:size])
    if check is None:
        rest = order[size:]
        if not rest:
            raise DataError(
                f"{calibration} has {len(pool.paths)} images, all used for calibration (--calibration-size {size}): "
                "lower --calibration-size or give held-out images with --check-data DIR"
            )
        return chosen, pool.take(rest[:check_size])
    held_out = folder_images(check)
    used = {p.resolve() for p in chosen.paths}
    keep = [i for i in _draw(held_out, seed + 1) if held_out.paths[i].resolve() not in used]
    if not keep:
        raise DataError(f"every image of --check-data {check} is a calibration image: give held-out images")
    return chosen, held_out.take(keep[:check_size])


def check_images(folder: str | Path, check_size: int = DEFAULT_CHECK_SIZE, seed: int = 0) -> ImageList:
    """Up to ``check_size`` seeded images of ``folder`` (for precisions that need no calibration)."""
    images = folder_images(folder)
    return images.take(_draw(images, seed + 1)[:check_size])


def load_batch(images: ImageList, transform: Callable) -> ImageBatch:
    """The images through ``transform`` (the model's eval transform), stacked."""
    tensor, _ = batch_images(images.paths, transform, remedy="remove or replace it: every calibration and check "
                             "image is read")  # export and bench skip none: the draw stays the seeded one
    labels = torch.tensor(images.labels) if images.labels is not None else None
    return ImageBatch(tensor, labels, images.class_names)
