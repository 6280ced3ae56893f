"""Datasets, transforms and loaders for training and evaluation.

Three sources: an ImageFolder tree in the ImageNet layout (``DATA/train/<class>/*.jpg``, ``DATA/val/...``);
``digits``, the 1,797 handwritten 8×8 digits that scikit-learn ships, turned into RGB images (no download,
a fixed stratified 80/20 split); and ``cifar10`` through torchvision (``--download`` to fetch it).
Transforms come from the model's data config through timm, so training and evaluation preprocess exactly
as the model expects (mean, std, interpolation, crop).
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, default_collate
from torchvision.datasets import ImageFolder

from .data_config import resolve_data_config
from .distributed import DistInfo, ShardSampler
from .errors import DataError
from .recipes import DATASETS, TrainConfig

log = logging.getLogger(__name__)

# The image files PIL reads; the one list of every task (classification folders, dense datasets, predict).
# What every command reads as an image (PIL decodes each; a GIF gives its first frame): torchvision's ImageFolder
# list and GIF, so that training, eval, calibration and predict take the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
DIGITS_SIZE = 32  # the 8×8 digits are upsampled to this before the model's own resize


class DigitsDataset(Dataset):
    """scikit-learn's handwritten digits as 32×32 RGB PIL images; ``split`` is ``train`` (80 %) or ``val``."""

    classes = [str(digit) for digit in range(10)]

    def __init__(self, split: str, transform: Callable | None = None) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        indices = np.arange(len(digits.target))
        train, val = train_test_split(indices, test_size=0.2, random_state=0, stratify=digits.target)
        chosen = {"train": train, "val": val}[split]
        pixels = (digits.images[chosen] * (255.0 / 16.0)).round().astype(np.uint8)  # values 0..16 -> 0..255
        self.images = [
            Image.fromarray(p).resize((DIGITS_SIZE, DIGITS_SIZE), Image.BICUBIC).convert("RGB") for p in pixels
        ]
        self.targets = digits.target[chosen].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]


@dataclass
class Datasets:
    """The splits of a run, classification or dense (``train`` is ``None`` for evaluation only)."""

    train: Dataset | None
    val: Dataset
    class_names: list[str]


def model_data_config(model: nn.Module | None, config: TrainConfig, own_size: bool = False) -> dict[str, Any]:
    """The model's preprocessing at the run's image size, crop and interpolation; with ``own_size`` (a model that
    runs one size only, as an exported artefact) at the height and width of the model's own config."""
    img_size = None if own_size else config.img_size
    return resolve_data_config(model, img_size, crop_pct=config.crop_pct, interpolation=config.interpolation)


def train_transform(model: nn.Module | None, config: TrainConfig) -> Callable:
    """Random resized crop, flip, RandAugment or colour jitter, normalise, random erasing (timm)."""
    data_config = model_data_config(model, config)
    return create_transform(
        input_size=data_config["input_size"],
        is_training=True,
        scale=tuple(config.crop_scale),
        hflip=config.hflip,
        color_jitter=config.color_jitter,
        auto_augment=config.auto_augment,
        interpolation=config.interpolation,
        mean=data_config["mean"],
        std=data_config["std"],
        re_prob=config.reprob,
        re_mode="pixel",
        re_count=1,
    )


def eval_transform(model: nn.Module | None, config: TrainConfig, own_size: bool = False) -> Callable:
    """Resize to ``img_size / crop_pct``, center crop, normalise (``own_size``: :func:`model_data_config`)."""
    return create_transform(**model_data_config(model, config, own_size), is_training=False)


@dataclass(frozen=True)
class BadImage:
    """Stands in for a sample whose file cannot be decoded; :class:`CheckedLoader` raises or skips it."""

    path: str
    reason: str


# What PIL raises for a truncated, corrupt, oversized or non-image file.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_failure(error: Exception) -> str:
    """The reason a file could not be decoded, for one line of text."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image file PIL can identify"
    if isinstance(error, Image.DecompressionBombError):
        return (f"more pixels than PIL decodes ({2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP, its guard against "
                "decompression bombs): downscale the image first")
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. PIL's own conversion clips deeper pixels to 0-255, which turns a 16-bit image white
    and a 0-1 float image black, so they are scaled first: 16-bit (``I;16*``) by 1/256; 32-bit integers
    (``I``) and floats (``F``) by the range the file holds (0-1, 0-255 or 0-65535). Anything else (negative,
    not finite, beyond 16 bits) is a ``ValueError`` saying so, rather than a silently wrong image."""
    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        return Image.fromarray(_deep_to_8_bit(np.asarray(image), image.mode)).convert("RGB")
    return image.convert("RGB")


def _deep_to_8_bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """``pixels`` of a 32-bit integer or float image as 8-bit levels, scaled by the range they fall in."""
    kind = "32-bit float" if mode == "F" else "32-bit integer"
    if not np.isfinite(pixels).all():
        raise ValueError(f"{kind} pixels that are not finite (NaN or infinity): not an image read here")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0:
        raise ValueError(f"{kind} pixels from {low:g} to {high:g}: negative values are not an image read here "
                         "(expected 0-1, 0-255 or 0-65535)")
    if high > 65535:
        raise ValueError(f"{kind} pixels up to {high:g}: beyond 16 bits, not an image read here "
                         "(expected 0-1, 0-255 or 0-65535)")
    values = pixels.astype(np.float64)
    if mode == "F" and high <= 1:
        levels = np.rint(values * 255)  # 0-1, the usual range of float images
    elif high <= 255:
        levels = np.rint(values)
    else:
        levels = np.floor(values / 256)  # 16-bit values, as an I;16 image is scaled
    return np.clip(levels, 0, 255).astype(np.uint8)


def open_rgb(path: str | Path, exif_orientation: bool = True) -> Image.Image:
    """The image at ``path`` as 8-bit RGB (:func:`to_rgb`); PIL's errors pass through.

    ``exif_orientation=True`` turns it upright as its EXIF Orientation tag says (phone photos), which is what a
    viewer shows: classification trains, evaluates, calibrates and predicts on the same upright image, so a file
    gets the same answer everywhere. Dense datasets pass ``False``: their boxes and masks were drawn on the stored
    pixels. The pixels are decoded first, so a corrupt file fails here and not inside the EXIF transpose, whose
    errors are forgiven. Above twice PIL's ``MAX_IMAGE_PIXELS`` (179 MP) PIL refuses to decode the file, a guard
    against decompression bombs that stays (:func:`decode_failure` says so in one line)."""
    with warnings.catch_warnings():  # PIL warns from 89 MP on, in two lines; 108 MP phone photos are photos
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        image.load()
        return to_rgb(_upright(image) if exif_orientation else image)


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF Orientation says; as stored when the EXIF block is malformed (Pillow then raises
    anything from SyntaxError to ZeroDivisionError while parsing it, and the pixels are still good)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - metadata only; any parse failure leaves the pixels as stored
        return image


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` that returns a :class:`BadImage` for an unreadable file instead of crashing a worker.

    The error then reaches the training process as data, so it can name the file on one line (an exception
    raised in a loader worker arrives wrapped in the worker's traceback) or skip it and count it.
    """

    def __getitem__(self, index: int) -> tuple[Any, int] | BadImage:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except DECODE_ERRORS as error:
            return BadImage(path, decode_failure(error))
        return (self.transform(image) if self.transform else image), target


class Relabelled(Dataset):
    """``dataset`` with label ``i`` read as ``indices[i]``: a folder holding some of a model's classes, its labels
    as the model's class indices (:func:`swiftformer.labels.model_class_indices`)."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int] | BadImage:
        sample = self.dataset[index]
        return sample if isinstance(sample, BadImage) else (sample[0], self.indices[sample[1]])


def image_folder(root: Path, transform: Callable) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected the ImageNet layout: DATA/train/<class>/*.jpg, DATA/val/...)")
    left_out: Counter[str] = Counter()

    def is_image(path: str) -> bool:
        suffix = Path(path).suffix.lower()
        left_out[suffix or Path(path).name] += suffix not in IMAGE_EXTENSIONS
        return suffix in IMAGE_EXTENSIONS

    try:
        dataset = CheckedImageFolder(str(root), transform=transform, loader=open_rgb, allow_empty=True,
                                     is_valid_file=is_image)
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"cannot use {root} as an image folder: {error}") from None
    if left_out := +left_out:  # files a user may think are trained on
        kinds = ", ".join(f"{kind} x{count}" for kind, count in left_out.most_common(5))
        log.info("%s: left out %d file(s) that are not images of a kind read here (%s)", root, left_out.total(), kinds)
    counts = Counter(dataset.targets)
    empty = [name for index, name in enumerate(dataset.classes) if counts[index] == 0]
    if empty:
        raise DataError(
            f"empty class folder {root / empty[0]}" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
            + ": it holds no image files; add images or remove the folder"
        )
    return dataset


def _cifar10(config: TrainConfig, train: bool, transform: Callable) -> Dataset:
    from torchvision.datasets import CIFAR10

    root = config.data or "data"
    try:
        return CIFAR10(root, train=train, transform=transform, download=config.download)
    except RuntimeError as error:
        raise DataError(f"CIFAR-10 not found under {root} ({error}); add --download to fetch it") from None
    except OSError as error:  # urllib's URLError when offline, or a root that cannot be written
        reason = getattr(error, "reason", None) or error.strerror or error
        raise DataError(f"cannot download CIFAR-10 into {root}: {reason} (offline? put the extracted "
                        "cifar-10-batches-py folder there and leave out --download)") from None


def _subset(dataset: Dataset, size: int | None) -> Dataset:
    """The first ``size`` images spread evenly over the dataset (so every class of a sorted folder appears)."""
    if size is None or size >= len(dataset):
        return dataset
    return Subset(dataset, np.linspace(0, len(dataset) - 1, size).round().astype(int).tolist())


def split_folder(root: Path, split: str) -> Path:
    """``root/split`` of the ImageNet layout; for ``val``, ``root`` itself when it is a folder of class folders
    (``eval --data MYDATA/val``) rather than a dataset root."""
    folder = root / split
    if split == "val" and not folder.is_dir() and root.is_dir() and not (root / "train").is_dir():
        if any(child.is_dir() for child in root.iterdir()):
            return root
    return folder


def build_dataset(model: nn.Module | None, config: TrainConfig, split: str,
                  own_size: bool = False) -> tuple[Dataset, list[str]]:
    """The ``train`` or ``val`` split of ``config.dataset`` with the model's transforms, and its class names.

    ``model`` only lends its preprocessing config (mean, std); ``None`` takes the SwiftFormer family's.
    ``own_size``: evaluate at the model's own size (:func:`model_data_config`).
    """
    is_train = split == "train"
    transform = train_transform(model, config) if is_train else eval_transform(model, config, own_size)
    if config.dataset == "digits":
        dataset, names = DigitsDataset(split, transform), DigitsDataset.classes
    elif config.dataset == "cifar10":
        dataset = _cifar10(config, is_train, transform)
        names = list(dataset.classes)
    elif config.dataset == "folder":
        if not config.data:
            raise DataError("--data DIR is required for --dataset folder (DIR/train and DIR/val in the ImageNet layout)")
        dataset = image_folder(split_folder(Path(config.data), split), transform)
        names = list(dataset.classes)
    else:
        raise DataError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    return _subset(dataset, config.train_subset if is_train else config.val_subset), names


def build_datasets(config: TrainConfig, train: bool = True) -> Datasets:
    """The train and val splits of a classification run (``train=False``: val only), whose class folders must
    agree. (The dense tasks' are :func:`swiftformer.dense.data.dense_datasets`.)"""
    if not train:
        val, names = build_dataset(None, config, "val")
        return Datasets(None, val, names)
    train, names = build_dataset(None, config, "train")
    val, val_names = build_dataset(None, config, "val")
    if names != val_names:
        only_train, only_val = sorted(set(names) - set(val_names)), sorted(set(val_names) - set(names))
        differences = [f"only in train/: {', '.join(only_train)}"] * bool(only_train)
        differences += [f"only in val/: {', '.join(only_val)}"] * bool(only_val)
        raise DataError(
            f"{config.data}: train/ and val/ have different class folders ({'; '.join(differences) or 'another order'}); "
            "class indices would not match"
        )
    return Datasets(train, val, names)


def train_sampler(dataset: Dataset, config: TrainConfig, dist_info: DistInfo) -> Sampler:
    """Repeated augmentation (DeiT) or a plain shuffled shard; both reshuffle on ``set_epoch``.

    With repeated augmentation each image appears ``repeated_aug`` times per epoch, each copy on another
    rank, and each rank stops after ``len(dataset) / world_size`` samples, so an epoch keeps its length.
    """
    if config.repeated_aug > 1:
        return RepeatAugSampler(dataset, dist_info.world_size, dist_info.rank, shuffle=True, num_repeats=config.repeated_aug)
    return DistributedSampler(dataset, dist_info.world_size, dist_info.rank, shuffle=True, seed=config.seed)


def collate_checked(samples: list[tuple[Any, int] | BadImage]) -> tuple[Any, Any, list[BadImage]]:
    """``(images, targets, bad)``: the readable samples collated, the unreadable ones listed (``None`` if all are)."""
    bad = [s for s in samples if isinstance(s, BadImage)]
    good = [s for s in samples if not isinstance(s, BadImage)]
    images, targets = default_collate(good) if good else (None, None)
    return images, targets, bad


class CheckedLoader:
    """A :class:`DataLoader` of ``(images, targets)`` that stops at the first unreadable image, naming it.

    With ``skip_bad=True`` unreadable images are left out of their batch instead: each is logged when first
    met, and every pass over the data ends with a count and the list of files skipped in it.
    """

    def __init__(self, loader: DataLoader, skip_bad: bool, split: str) -> None:
        self.loader, self.skip_bad, self.split = loader, skip_bad, split
        self.skipped: dict[str, str] = {}  # path -> reason, over all passes

    @property
    def sampler(self) -> Sampler:
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        skipped_now: list[str] = []
        try:
            for images, targets, bad in self.loader:
                for item in bad:
                    if not self.skip_bad:
                        raise DataError(f"cannot read image {item.path}: {item.reason} (--skip-bad-images leaves such files out)")
                    if item.path not in self.skipped:
                        log.warning("skipping unreadable %s image %s: %s", self.split, item.path, item.reason)
                    self.skipped[item.path] = item.reason
                    skipped_now.append(item.path)
                if images is not None:
                    yield images, targets
        finally:  # also when the consumer stops early (the training loop takes whole accumulation groups only)
            if skipped_now:
                log.warning("%s: skipped %d unreadable image(s) in this pass: %s", self.split, len(skipped_now), ", ".join(skipped_now))


def loader_workers(requested: int) -> int:
    """``requested`` data-loading processes, at most this process's share of the CPUs it may run on (shared with the
    other processes ``torchrun`` starts on this machine): more only queue for the same cores, and each DataLoader
    warns about them (twice a run, on a 2-core machine with a recipe's 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if requested > share:
        log.debug("%d data-loading workers instead of %d: this process's share of %d CPU(s)", share, requested, cpus)
    return min(requested, share)


def build_loaders(datasets: Datasets, config: TrainConfig, dist_info: DistInfo) -> tuple[CheckedLoader, CheckedLoader]:
    """Train loader (full batches only: BatchNorm needs more than one sample) and exact-count val loader."""
    pin = dist_info.device.type == "cuda"
    train = DataLoader(
        datasets.train,
        batch_size=config.batch_size,
        sampler=train_sampler(datasets.train, config, dist_info),
        num_workers=loader_workers(config.workers),
        pin_memory=pin,
        drop_last=True,
        collate_fn=collate_checked,
    )
    if len(train) == 0:
        raise DataError(
            f"{len(datasets.train)} training images over {dist_info.world_size} process(es) give no full batch "
            f"of {config.batch_size}; lower --batch-size"
        )
    val = eval_loader(datasets.val, config.batch_size, config.workers, dist_info, config.skip_bad_images)
    return CheckedLoader(train, config.skip_bad_images, "train"), val


def eval_loader(dataset: Dataset, batch_size: int, workers: int, dist_info: DistInfo, skip_bad: bool = False) -> CheckedLoader:
    """This rank's shard of ``dataset``, in order, every sample exactly once across ranks."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist_info.rank, dist_info.world_size),
        num_workers=loader_workers(workers),
        pin_memory=dist_info.device.type == "cuda",
        collate_fn=collate_checked,
    )
    return CheckedLoader(loader, skip_bad, "val")


def list_images(inputs: list[str]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    return [path for path, _ in find_images(inputs)]


def find_images(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(path, name)`` of each image file named directly or found (recursively, sorted) in the given folders:
    ``name`` is the path below the folder it was found in, or the file's own name; each file once."""
    found: dict[Path, tuple[Path, Path]] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            named = [(p, p.relative_to(path)) for p in images]
        elif path.is_file():
            named = [(path, Path(path.name))]
        else:
            raise DataError(f"no such image file or folder: {path}")
        for image, name in named:
            found.setdefault(image.resolve(), (image, name))
    if not found:
        raise DataError(f"no images found in {', '.join(inputs)}")
    return list(found.values())


def load_image(path: Path) -> Image.Image:
    """An upright 8-bit RGB PIL image of a photo to predict on, or a :class:`DataError` naming the file."""
    try:
        return open_rgb(path)
    except DECODE_ERRORS as error:
        raise DataError(f"cannot read image {path}: {decode_failure(error)}") from None


def batch_images(paths: list[Path], transform: Callable, skip_bad: bool = False,
                 remedy: str = "--skip-bad-images leaves such files out") -> tuple[torch.Tensor | None, list[Path]]:
    """``(N, 3, H, W)`` tensor of the transformed images and their paths (``None`` when none is readable).

    An unreadable file is a :class:`DataError` ending in ``remedy`` (what the caller's command offers); with
    ``skip_bad`` it is logged and left out instead."""
    images, kept = [], []
    for path in paths:
        try:
            images.append(transform(load_image(path)))
        except DataError as error:
            if not skip_bad:
                raise DataError(f"{error} ({remedy})") from None
            log.warning("skipping %s", str(error).removeprefix("cannot read "))
            continue
        kept.append(path)
    return (torch.stack(images) if images else None), kept
