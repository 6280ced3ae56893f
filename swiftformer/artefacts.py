"""Exported artefacts as models: their preprocessing metadata, and running any of them as a model.

Every ``swiftformer export`` writes ``<artefact>.json`` beside the artefact (and, for ONNX, the same JSON in the
model's ``metadata_props``): the image size, mean/std, crop and interpolation the model was trained with, its
class names, batch size and precision. ``swiftformer eval`` and ``predict`` read it back, so a deployed model is
measured with exactly the preprocessing it expects. Each artefact runs through its runtime's one runner
(:mod:`swiftformer.deploy`), the one the export's check and ``bench`` use.
"""
from __future__ import annotations

import json
import logging
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from timm.data import create_transform
from torch import nn

from .data_config import INTERPOLATIONS, resolve_data_config
from .deploy.graph import Run, padded
from .errors import CheckpointError, SwiftFormerError
from .formats import FORMATS, IOS, RUNNABLE_SUFFIXES

log = logging.getLogger(__name__)


@dataclass
class ArtefactInfo:
    """What a runtime needs to feed an artefact as the model was trained, and to name its predictions."""

    format: str
    precision: str
    variant: str
    input_size: tuple[int, int, int]
    batch: int | None  # None: any batch from 1 to max_batch
    max_batch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    crop_mode: str
    interpolation: str
    class_names: list[str]
    io: str = "tensor"  # "image": RGB pixels in, probabilities out (normalisation inside); older sidecars: tensor
    random_weights: bool = False  # exported with --random-weights: it runs, but its answers mean nothing

    @property
    def fed(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) of what callers feed :func:`open_artefact`: the model's normalisation, or none for the
        image form (0..1 images, which become its pixels)."""
        return ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if self.io == "image" else (self.mean, self.std)

    def transform(self) -> Callable:
        """The eval transform (timm): resize, center crop, normalise (the image form: no normalisation)."""
        mean, std = self.fed
        return create_transform(input_size=self.input_size, interpolation=self.interpolation, mean=mean,
                                std=std, crop_pct=self.crop_pct, crop_mode=self.crop_mode, is_training=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: Path) -> ArtefactInfo:
        try:
            fields = json.loads(text)
            fields["input_size"] = tuple(fields["input_size"])
            fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
            info = cls(**fields)
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(f"{source}: malformed artefact metadata ({error})") from None
        if problem := info.problem():
            raise CheckpointError(f"{source}: {problem}")
        return info

    def problem(self) -> str:
        """What makes these values unusable (``""``: nothing): a hand-edited file must not feed a model garbage."""
        def numbers(values: tuple, count: int) -> bool:
            return len(values) == count and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)

        def count(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        if self.format not in FORMATS:
            return f"format {self.format!r} is none of {', '.join(FORMATS)}"
        if self.io not in IOS or (self.io == "image" and FORMATS[self.format].image_input is None):
            return f"io {self.io!r} is not one {self.format} is written in"
        if self.precision not in FORMATS[self.format].precisions:
            return f"precision {self.precision!r} is none of {', '.join(FORMATS[self.format].precisions)}"
        if len(self.input_size) != 3 or self.input_size[0] != 3 or not all(map(count, self.input_size)):
            return f"input_size {list(self.input_size)} is not [3, height, width]"
        if not (self.batch is None or count(self.batch)) or not count(self.max_batch):
            return f"batch {self.batch!r} / max_batch {self.max_batch!r} are not positive integers"
        if not numbers(self.mean, 3) or not numbers(self.std, 3) or min(self.std) <= 0:
            return f"mean {list(self.mean)} / std {list(self.std)} are not three numbers each, std above 0"
        if not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            return f"crop_pct {self.crop_pct!r} is not in (0, 1]"
        if self.crop_mode not in ("center", "squash", "border"):
            return f"crop_mode {self.crop_mode!r} is none of center, squash, border"
        if self.interpolation not in INTERPOLATIONS:
            return f"interpolation {self.interpolation!r} is none of {', '.join(INTERPOLATIONS)}"
        if not self.class_names or not all(isinstance(name, str) for name in self.class_names):
            return "class_names is not a list of names"
        if not isinstance(self.random_weights, bool):
            return f"random_weights {self.random_weights!r} is not true or false"
        return ""


def artefact_info(
    model: nn.Module, fmt: str, precision: str, img_size: tuple[int, int], batch: int | None, max_batch: int,
    class_names: list[str], crop_pct: float | None = None, interpolation: str | None = None,
) -> ArtefactInfo:
    """The metadata of an artefact of ``model``, from the model's own data config at the exported size."""
    overrides = {key: value for key, value in (("crop_pct", crop_pct), ("interpolation", interpolation)) if value}
    config = resolve_data_config(model, **overrides)
    return ArtefactInfo(
        fmt, precision, getattr(model, "variant", type(model).__name__), (3, *img_size), batch, max_batch,
        tuple(config["mean"]), tuple(config["std"]), float(config["crop_pct"]), config.get("crop_mode", "center"),
        config["interpolation"], list(class_names),
    )


def sidecar(path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return path.with_name(path.name + ".json")


def is_artefact(path: str | Path) -> bool:
    """An exported artefact (not a checkpoint): by suffix, and for ``.pt`` a TorchScript archive (``code/``)."""
    path = Path(path)
    if path.suffix not in RUNNABLE_SUFFIXES or not path.is_file():
        return False
    if path.suffix != ".pt":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def write_info(path: Path, info: ArtefactInfo) -> None:
    sidecar(path).write_text(info.to_json())


def read_info(path: str | Path) -> ArtefactInfo:
    """The metadata of ``path``: its sidecar JSON, else the metadata kept inside the artefact (ONNX)."""
    path = Path(path)
    runtime = FORMATS[RUNNABLE_SUFFIXES[path.suffix]].runtime if path.suffix in RUNNABLE_SUFFIXES else None
    text = runtime.embedded_info(path) if hasattr(runtime, "embedded_info") else None
    embedded = ArtefactInfo.from_json(text, path) if text is not None else None
    if sidecar(path).is_file():
        info = ArtefactInfo.from_json(sidecar(path).read_text(), sidecar(path))
        if embedded is not None and embedded != info:
            changed = [key for key, value in asdict(info).items() if asdict(embedded)[key] != value]
            log.warning("%s differs from the metadata inside %s in %s: using the .json", sidecar(path).name, path.name,
                        ", ".join(changed))
    elif embedded is not None:
        info = embedded
    else:
        raise CheckpointError(
            f"{path} has no preprocessing metadata ({sidecar(path).name} is missing): export it with swiftformer export"
        )
    if path.suffix != FORMATS[info.format].suffix:
        raise CheckpointError(f"{sidecar(path)}: format {info.format!r}, but {path.name} has the suffix of "
                              f"{RUNNABLE_SUFFIXES.get(path.suffix, 'no format')}")
    # the precision the file itself holds, so that a .json copied from another export cannot relabel it
    held = FORMATS[info.format].runtime.stored_precision(path)
    if held is not None and held != info.precision and (held, info.precision) != ("fp16", "bf16"):  # bf16 IRs of
        # earlier versions kept fp16-compressed weights
        raise CheckpointError(f"{sidecar(path).name} says precision {info.precision}, but {path.name} holds {held} "
                              "(the .json belongs to another export)")
    return info


def _refusals(fmt: str) -> tuple[type[Exception], ...]:
    """What a runtime raises for a file or an input it refuses."""
    runtime = FORMATS[fmt].runtime
    return runtime.refusals() if hasattr(runtime, "refusals") else (RuntimeError, ValueError)


def _runtime_message(error: Exception) -> str:
    """A runtime's error on one line, without the source-file lines OpenVINO puts first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if not re.match(r"(Exception from|Check '.*' failed at) \S+:\d+", line)]
    return " ".join(said or lines) or type(error).__name__


def open_artefact(path: str | Path, info: ArtefactInfo, users_file: bool = True) -> Run:
    """A function from images to logits that runs ``path`` on its runtime, any number of images at a time.

    An image-form artefact (``info.io == "image"``) is given 0..1 images (:attr:`ArtefactInfo.fed`), fed as the
    pixels it takes, and answers log-probabilities as the logits (their softmax: its probabilities).

    A runtime's refusal of a file the user gave is their one-line :class:`CheckpointError`; of an artefact the
    export has just written (``users_file=False``) it is a bug, and keeps its traceback.

    Fixed-batch artefacts get the images in chunks of their batch (the last one padded), dynamic ones in chunks
    of at most ``max_batch``.
    """
    path = Path(path)
    runtime = FORMATS[info.format].runtime
    refusals = _refusals(info.format) if users_file else ()
    try:
        run = runtime.runner(path, None, info.precision)
    except refusals as error:
        raise CheckpointError(f"{path}: its runtime cannot load it: {_runtime_message(error)}") from None
    if info.io == "image":
        run = as_fed(run, info)
    # One run of what the metadata promises: a .json that is not this artefact's is an error here, not a traceback
    # or a wrong class name later.
    probe = torch.zeros(info.batch or 1, *info.input_size)
    try:
        classes = run(probe).shape[-1]
    except refusals as error:
        raise CheckpointError(f"{path} does not take the {list(probe.shape)} input its metadata "
                              f"({sidecar(path).name}) describes: {_runtime_message(error)}") from None
    if classes != len(info.class_names):
        raise CheckpointError(f"{path} predicts {classes} classes; its metadata ({sidecar(path).name}) names "
                              f"{len(info.class_names)}")
    chunk = info.batch or info.max_batch
    if hasattr(runtime, "max_batch") and info.batch is None:  # a .pte written before its metadata said its bound
        chunk = min(chunk, runtime.max_batch(path))

    def run_all(images: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, images.shape[0], chunk):
            part = images[start : start + chunk].float()
            count = part.shape[0]
            outputs.append(run(padded(part, info.batch) if info.batch else part)[:count].float())
        return torch.cat(outputs)

    return run_all


def as_fed(run: Run, info: ArtefactInfo) -> Run:
    """``run`` of an image-form artefact given 0..1 images: as the pixels it takes, its probabilities as
    log-probabilities (the smallest kept finite, so a class at probability 0 does not turn into -inf)."""
    image_input = FORMATS[info.format].image_input

    def fed(images: torch.Tensor) -> torch.Tensor:
        return run(image_input.pixels(images)).float().clamp_min(torch.finfo(torch.float32).tiny).log()

    return fed


class ArtefactModel(nn.Module):
    """An artefact behind the ``nn.Module`` interface that ``evaluate`` and ``predict`` take (CPU, no gradients).

    It carries ``pretrained_cfg`` so that timm's data config resolves to the artefact's own preprocessing.
    """

    def __init__(self, path: str | Path, info: ArtefactInfo) -> None:
        super().__init__()
        self.info = info
        self.variant = f"{info.variant} ({info.format} {info.precision})"
        self.num_classes = len(info.class_names)
        mean, std = info.fed
        self.pretrained_cfg = {"input_size": info.input_size, "mean": mean, "std": std,
                               "crop_pct": info.crop_pct, "crop_mode": info.crop_mode,
                               "interpolation": info.interpolation}
        self._run = open_artefact(path, info)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != tuple(self.info.input_size):
            raise SwiftFormerError(f"the artefact takes {list(self.info.input_size)} images, got {list(images.shape[1:])}"
                                   " (its metadata's transform makes them)")
        return self._run(images.cpu())


def run_config_of(info: ArtefactInfo) -> dict[str, Any]:
    """The eval settings an artefact implies (for :func:`swiftformer.inference.run_config`). No image size: the
    artefact's own, any height and width, is the only one it takes (``own_size`` of :mod:`swiftformer.data`)."""
    return {"crop_pct": info.crop_pct, "interpolation": info.interpolation, "batch_size": max(info.batch or 32, 1),
            "workers": 2}
