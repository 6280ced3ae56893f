"""The image form of a classifier, and what a deployed model says about itself.

An app gets RGB pixels from the platform (an Android camera frame or bitmap: ``uint8 [N, H, W, 3]``; Core ML's
``ImageType``: ``float [N, 3, H, W]`` in 0..255, or 0..1 with ``scale=1/255``) and wants probabilities and class
names. :class:`ImageClassifier` puts the model's own per-channel normalisation and the softmax inside the graph
(the runtimes' metadata holds at most one mean/std for all channels: MediaPipe refuses per-channel values, Core ML's
``ImageType.scale`` is one scalar), so every artefact written from it takes pixels as they come.
:class:`AppMetadata` is what such an artefact carries inside: name, input, normalisation, labels, provenance.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import torch
from torch import nn

from .. import __version__
from ..data_config import resolve_data_config
from ..errors import CheckpointError, SwiftFormerError

T = TypeVar("T")

Layout = Literal["NHWC", "NCHW"]
LAYOUTS: tuple[Layout, ...] = ("NHWC", "NCHW")


class ImageClassifier(nn.Module):
    """``model`` fed RGB pixels in ``0..pixel_max`` (any dtype, ``layout``), answering softmax probabilities.

    The normalisation ``(pixels / pixel_max - mean) / std`` runs as one multiply-add per channel; a uint8 input
    is cast to the model's dtype first, so an int8 graph calibrated through this wrapper takes camera bytes.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 layout: Layout = "NHWC", pixel_max: float = 255.0) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is none of {', '.join(LAYOUTS)}")
        self.model, self.layout, self.pixel_max = model, layout, float(pixel_max)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))  # what the metadata reports
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (pixel_max * std_t)).view(1, 3, 1, 1))
        self.register_buffer("shift", (-mean_t / std_t).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # named as the model's: export's dynamic shapes key on it
        x = x.to(self.scale.dtype)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        return self.model(x * self.scale + self.shift).softmax(-1)


def image_classifier(model: nn.Module, layout: Layout = "NHWC", pixel_max: float = 255.0) -> ImageClassifier:
    """:class:`ImageClassifier` with ``model``'s own mean/std (its data config)."""
    config = resolve_data_config(model)
    return ImageClassifier(model, tuple(config["mean"]), tuple(config["std"]), layout, pixel_max).eval()


@dataclass(frozen=True)
class AppMetadata:
    """What a deployed image classifier carries inside, so an app needs no sidecar file."""

    name: str
    variant: str
    swiftformer_version: str
    input_size: tuple[int, int]  # (height, width)
    layout: Layout
    pixel_max: float  # the pixel values the artefact takes run 0..pixel_max
    mean: tuple[float, float, float]  # already applied inside the graph: for reference
    std: tuple[float, float, float]
    labels: tuple[str, ...]
    top1: float | None  # % on the run's val split, where known
    author: str
    license: str
    description: str

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> AppMetadata:
        return from_json(cls, text, ("input_size", "mean", "std", "labels"), "swiftformer app metadata")

    def as_strings(self) -> dict[str, str]:
        """Every field as a string, for the runtimes whose metadata is string to string (ONNX ``metadata_props``,
        Core ML ``user_defined_metadata``, OpenVINO ``rt_info``, ExecuTorch constant methods): numbers comma-joined,
        labels newline-joined (Java's ``EValue`` has no string list), an unknown top-1 empty."""
        def text(key: str, value: object) -> str:
            if key == "labels":
                return "\n".join(value)
            if isinstance(value, tuple):
                return ",".join(map(str, value))
            return "" if value is None else str(value)

        return {key: text(key, value) for key, value in self.as_dict().items()}

    @classmethod
    def from_strings(cls, strings: dict[str, str]) -> AppMetadata:
        """The metadata :meth:`as_strings` wrote (extra keys ignored)."""
        try:
            fields = {key: strings[key] for key in cls.__dataclass_fields__}
            return cls(**{
                **fields, "input_size": tuple(map(int, fields["input_size"].split(","))),
                "pixel_max": float(fields["pixel_max"]), "mean": tuple(map(float, fields["mean"].split(","))),
                "std": tuple(map(float, fields["std"].split(","))), "labels": tuple(fields["labels"].split("\n")),
                "top1": float(fields["top1"]) if fields["top1"] else None,
            })
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"malformed swiftformer app metadata ({error})") from None


def from_json(cls: type[T], text: str, tuples: tuple[str, ...], what: str) -> T:
    """The dataclass ``cls`` from the JSON of its fields (the ``tuples`` fields back to tuples); what an artefact
    holds that is no such JSON is one line naming ``what``."""
    try:
        fields = json.loads(text)
        for key in tuples:
            fields[key] = tuple(fields[key])
        return cls(**fields)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"malformed {what} ({error})") from None


def head_size(model: nn.Module) -> int:
    """The number of classes ``model``'s head answers (its ``num_classes``)."""
    classes = getattr(model, "num_classes", None)
    if not isinstance(classes, int) or classes < 1:
        raise SwiftFormerError(f"{type(model).__name__} has no classifier head (num_classes={classes!r})")
    return classes


def check_labels(labels: list[str] | tuple[str, ...], classes: int) -> None:
    """Refuse a label list an app could not use: not one name per class of the head, or names a labels file
    (one line each) would break."""
    if len(labels) != classes:
        raise SwiftFormerError(f"{len(labels)} labels for a head of {classes} classes: give one label per class")
    for label in labels:
        if not isinstance(label, str) or not label.strip() or "\n" in label or "\r" in label:
            raise SwiftFormerError(f"label {label!r} is not a one-line name")


def app_metadata(
    form: ImageClassifier, labels: list[str] | tuple[str, ...], input_size: tuple[int, int], *,
    name: str | None = None, top1: float | None = None, author: str = "", license: str = "", description: str = "",
) -> AppMetadata:
    """The metadata of an artefact written from ``form`` (its layout, pixel range and normalisation); the labels
    are checked against its model's head first, so a mismatch is refused before anything is written."""
    check_labels(labels, head_size(form.model))
    variant = getattr(form.model, "variant", None) or type(form.model).__name__
    height, width = input_size
    measured = f"; top-1 {top1:.1f} % on its validation images" if top1 is not None else ""
    return AppMetadata(
        name=name or variant, variant=variant, swiftformer_version=__version__, input_size=(height, width),
        layout=form.layout, pixel_max=form.pixel_max, mean=form.mean, std=form.std, labels=tuple(labels), top1=top1,
        author=author, license=license,
        description=description or (f"{variant} image classifier: RGB {height}x{width} in, probabilities of "
                                    f"{len(labels)} classes out{measured}"),
    )
