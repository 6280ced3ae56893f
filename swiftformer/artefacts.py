"""Exported artefacts as models: their preprocessing metadata, and one way to run each of them.

Every ``swiftformer export`` writes ``<artefact>.json`` beside the artefact (and, for ONNX, the same JSON in the
model's ``metadata_props``): the image size, mean/std, crop and interpolation the model was trained with, its
class names, batch size and precision. ``swiftformer eval`` and ``predict`` read it back, so a deployed model is
measured with exactly the preprocessing it expects.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from timm.data import create_transform
from torch import nn

from .data_config import resolve_data_config
from .errors import CheckpointError, SwiftFormerError

METADATA_KEY = "swiftformer"  # the ONNX metadata_props key
ARTEFACT_SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".pte": "executorch", ".tflite": "litert", ".pt": "torchscript"}

Run = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) images -> (N, classes) logits


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

    def transform(self) -> Callable:
        """The eval transform (timm): resize, center crop, normalise."""
        return create_transform(input_size=self.input_size, interpolation=self.interpolation, mean=self.mean,
                                std=self.std, crop_pct=self.crop_pct, crop_mode=self.crop_mode, is_training=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: Path) -> ArtefactInfo:
        try:
            fields = json.loads(text)
            fields["input_size"] = tuple(fields["input_size"])
            fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
            return cls(**fields)
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError(f"{source}: malformed artefact metadata ({error})") from None


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
    if path.suffix not in ARTEFACT_SUFFIXES or not path.is_file():
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
    """The metadata of ``path``: its sidecar JSON, else (ONNX) the model's ``metadata_props``."""
    path = Path(path)
    if sidecar(path).is_file():
        return ArtefactInfo.from_json(sidecar(path).read_text(), sidecar(path))
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY in props:
            return ArtefactInfo.from_json(props[METADATA_KEY], path)
    raise CheckpointError(
        f"{path} has no preprocessing metadata ({sidecar(path).name} is missing): export it with swiftformer export"
    )


# Runners ---------------------------------------------------------------------------------------------------
def run_onnx(path: Path, threads: int | None) -> Run:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])


def run_openvino(path: Path, threads: int | None, precision: str) -> Run:
    from .export import compile_openvino

    compiled = compile_openvino(path, threads, precision)
    return lambda x: torch.from_numpy(compiled(x.contiguous().numpy())[0].copy())


def run_torchscript(path: Path, threads: int | None) -> Run:
    loaded = torch.jit.load(str(path)).eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return loaded(x).float()

    return run


def run_executorch(path: Path, threads: int | None) -> Run:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda x: method.execute([x.contiguous()])[0]


def run_litert(path: Path, threads: int | None) -> Run:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise SwiftFormerError(f"running a .tflite needs the ai-edge-litert package ({error})") from None
    interpreter = Interpreter(model_path=str(path), num_threads=threads or 2)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x: torch.Tensor) -> torch.Tensor:
        interpreter.set_tensor(source["index"], x.contiguous().numpy())
        interpreter.invoke()
        return torch.from_numpy(interpreter.get_tensor(target["index"]).copy())

    return run


def padded(images: torch.Tensor, batch: int) -> torch.Tensor:
    """``images`` with their last one repeated up to ``batch``: the last chunk for a fixed-batch graph."""
    if images.shape[0] >= batch:
        return images
    return torch.cat([images, images[-1:].expand(batch - images.shape[0], *images.shape[1:])])


def open_artefact(path: str | Path, info: ArtefactInfo, threads: int | None = None) -> Run:
    """A function from images to logits that runs ``path`` on its runtime, any number of images at a time.

    Fixed-batch artefacts get the images in chunks of their batch (the last one padded), dynamic ones in chunks
    of at most ``max_batch``.
    """
    path = Path(path)
    if info.format == "coreml":
        raise SwiftFormerError(f"{path}: Core ML packages run on macOS only (coremltools predicts there)")
    openers = {"onnx": run_onnx, "torchscript": run_torchscript, "executorch": run_executorch, "litert": run_litert,
               "openvino": lambda p, t: run_openvino(p, t, info.precision)}
    if info.format not in openers:
        raise SwiftFormerError(f"{path}: unknown artefact format {info.format!r}")
    run = openers[info.format](path, threads)
    chunk = info.batch or info.max_batch

    def run_all(images: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, images.shape[0], chunk):
            part = images[start : start + chunk].float()
            count = part.shape[0]
            outputs.append(run(padded(part, info.batch) if info.batch else part)[:count].float())
        return torch.cat(outputs)

    return run_all


class ArtefactModel(nn.Module):
    """An artefact behind the ``nn.Module`` interface that ``evaluate`` and ``predict`` take (CPU, no gradients).

    It carries ``pretrained_cfg`` so that timm's data config resolves to the artefact's own preprocessing.
    """

    def __init__(self, path: str | Path, info: ArtefactInfo, threads: int | None = None) -> None:
        super().__init__()
        self.info = info
        self.variant = f"{info.variant} ({info.format} {info.precision})"
        self.num_classes = len(info.class_names)
        self.pretrained_cfg = {"input_size": info.input_size, "mean": info.mean, "std": info.std,
                               "crop_pct": info.crop_pct, "crop_mode": info.crop_mode,
                               "interpolation": info.interpolation}
        self._run = open_artefact(path, info, threads)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != tuple(self.info.input_size):
            raise SwiftFormerError(f"the artefact takes {list(self.info.input_size)} images, got {list(images.shape[1:])}"
                                   " (its metadata's transform makes them)")
        return self._run(images.cpu())


def run_config_of(info: ArtefactInfo) -> dict[str, Any]:
    """The eval settings an artefact implies (for :func:`swiftformer.inference.run_config`). No image size: the
    artefact's own, any height and width, is the only one it takes (:func:`swiftformer.data.model_data_config`)."""
    return {"crop_pct": info.crop_pct, "interpolation": info.interpolation, "batch_size": max(info.batch or 32, 1),
            "workers": 2}
