"""What a dense artefact carries inside, and running one on photos: ``segment predict`` / ``detect predict`` given
an artefact of :mod:`swiftformer.dense.export` instead of a checkpoint.

The artefact says its input size and class names itself (:class:`DenseMetadata`, under :data:`METADATA_KEY` in its
runtime's metadata); each photo is resized to that size, as an app does, and what comes back (the class map; the
boxes and masks) is mapped back to the photo's own size.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import __version__
from ..deploy import coreml, litert, onnx, openvino, tflite_metadata
from ..deploy.app_io import from_json
from ..errors import CheckpointError, SwiftFormerError
from ..formats import FORMATS
from ..models.swiftformer import IMAGENET_MEAN, IMAGENET_STD

METADATA_KEY = "swiftformer_dense"  # the artefact's DenseMetadata JSON, in every runtime's metadata
TASK_FORMATS = {"segmentation": ("onnx", "openvino", "litert", "coreml"), "detection": ("onnx", "openvino")}
OUTPUTS = {"segmentation": ("classes",), "detection": ("boxes", "labels", "scores", "masks")}

Outputs = Callable[[torch.Tensor], list[torch.Tensor]]  # uint8 (1, H, W, 3) pixels -> the artefact's outputs


@dataclass
class DenseMetadata:
    """What a dense artefact carries inside, so ``predict`` and an app need nothing beside it."""

    task: str
    variant: str
    input_size: tuple[int, int]  # (height, width)
    class_names: list[str]  # segmentation: per label value; detection: per label 1..K (0 is background)
    layout: str = "NHWC"
    pixel_max: float = 255.0  # the input's pixels run 0..pixel_max
    mean: tuple[float, ...] = IMAGENET_MEAN  # applied inside the graph: for reference
    std: tuple[float, ...] = IMAGENET_STD
    outputs: tuple[str, ...] = ()
    background: tuple[int, ...] = (0,)  # segmentation: classes a picture leaves uncoloured (ADE20K's reduced: none)
    check: dict = field(default_factory=dict)  # what the export's check measured
    swiftformer_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, source: Path) -> DenseMetadata:
        return from_json(cls, text, ("input_size", "mean", "std", "outputs"), f"{METADATA_KEY} metadata in {source}")


# Pixels as an app has them ---------------------------------------------------------------------------------
def pixels(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image`` (3, H, W) in [0, 1] resized to ``size`` (bilinear, antialiased) as ``uint8 (1, h, w, 3)``."""
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return (resized * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def read_metadata(path: str | Path) -> DenseMetadata:
    """The :class:`DenseMetadata` inside a dense artefact (its format from the suffix)."""
    path = Path(path)
    fmt = artefact_format(path)
    if fmt == "onnx":
        text = onnx.metadata(path).get(METADATA_KEY)
    elif fmt == "openvino":
        text = openvino.rt_info(path, (METADATA_KEY,)).get(METADATA_KEY)
    elif fmt == "litert":
        data = tflite_metadata.metadata_entries(path.read_bytes()).get(METADATA_KEY)
        text = None if data is None else data.decode()
    else:
        text = dict(coreml.read_spec(path).description.metadata.userDefined).get(METADATA_KEY)
    if text is None:
        raise CheckpointError(f"{path} holds no {METADATA_KEY} metadata: not a dense artefact written by "
                              "swiftformer segment/detect export")
    return DenseMetadata.from_json(text, path)


def artefact_format(path: str | Path) -> str | None:
    """The format whose suffix ``path`` has, if it is one a dense model is exported to (else ``None``)."""
    path = Path(path)
    dense = TASK_FORMATS["segmentation"]  # every format a dense model is written in
    return next((name for name in dense if FORMATS[name].suffix == path.suffix), None)


def outputs_runner(path: Path, meta: DenseMetadata) -> Outputs:
    """The artefact's runner: ``uint8 (1, H, W, 3)`` pixels to its outputs (:class:`RuntimeUnavailable` for Core ML
    off macOS)."""
    fmt = artefact_format(path)
    if fmt == "onnx":
        return onnx.outputs_runner(path)
    if fmt == "openvino":
        return openvino.outputs_runner(path)
    if fmt == "litert":
        run = litert.runner(path)
        return lambda x: [run(x)]
    return coreml.image_outputs_runner(path, meta.outputs)


# Predicting ------------------------------------------------------------------------------------------------
class DenseArtefact:
    """A dense artefact opened for ``predict``: photos in, the class map or detections at the photo's size out."""

    def __init__(self, path: str | Path, task: str) -> None:
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        if self.meta.task != task:
            raise SwiftFormerError(f"{self.path} holds a {self.meta.task} model, not {task}")
        self.run = outputs_runner(self.path, self.meta)

    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """Class map ``(H, W)`` of ``image`` (3, H, W) in [0, 1]: the artefact's, resized (nearest) to the photo."""
        (classes,) = self.run(pixels(image, self.meta.input_size))
        return F.interpolate(classes[None].float(), size=image.shape[-2:], mode="nearest")[0, 0].long()

    def detect(self, image: torch.Tensor, score_threshold: float = 0.5) -> dict[str, torch.Tensor]:
        """Detections of ``image`` (3, H, W) in [0, 1] scoring at least ``score_threshold``, in the photo's pixels."""
        boxes, labels, scores, masks = self.run(pixels(image, self.meta.input_size))
        keep = scores >= score_threshold
        (height, width), (size_h, size_w) = image.shape[-2:], self.meta.input_size
        boxes = boxes[keep].float() * torch.tensor([width / size_w, height / size_h] * 2)
        masks = masks[keep].float()
        if len(masks):
            masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
        return {"boxes": boxes, "labels": labels[keep].long(), "scores": scores[keep].float(), "masks": masks}
