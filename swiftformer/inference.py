"""Loading a model for evaluation or prediction, and top-k prediction on image files.

A training checkpoint of ours (``last.pth``/``best.pth``) knows its variant, class count, image size and
class names; any other checkpoint (official, timm, Hugging Face, native safetensors) needs ``--model``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .artefacts import ArtefactModel, is_artefact, read_info, run_config_of
from .checkpoint import checkpoint_file_kind, load_native_state_dict, native_record, training_run
from .data_config import apply_carried_cfg, preprocessing_settings, run_cfg
from .errors import CheckpointError, SwiftFormerError
from .labels import default_class_names
from .pretrained import create_model
from .qat import fused_from_run
from .recipes import TrainConfig, apply_overrides

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    class_names: list[str]
    run_config: dict[str, Any] | None  # the training config when the checkpoint is one of our runs


def load_model(checkpoint: str | None, model_name: str | None = None, ema: bool = False, attention: str = "additive") -> LoadedModel:
    """Model in eval mode with its class names. ``checkpoint=None`` gives the released ImageNet weights (of
    SwiftFormer-XS without ``model_name``); other weights than our runs and artefacts need ``model_name``.

    An exported artefact (``.onnx``, OpenVINO ``.xml``, TorchScript ``.pt``, ``.pte``, ``.tflite``) runs on its own
    runtime, with the preprocessing and class names stored beside it (:mod:`swiftformer.artefacts`)."""
    path = Path(checkpoint) if checkpoint else None
    if path is not None and path.suffix == ".mlpackage":
        raise CheckpointError(f"{path} is a Core ML package, which runs on macOS only; eval and predict take the "
                              ".onnx, .xml, .pt, .pte and .tflite artefacts and our checkpoints")
    if path is not None and path.is_dir() and not (path / "config.json").is_file():  # not a Hugging Face folder
        runs = [name for name in ("best.pth", "last.pth") if (path / name).is_file()]
        if runs:
            raise CheckpointError(f"{path} is a run directory: pass its checkpoint, {path / runs[0]}")
    if path is not None and is_artefact(path):
        if ema:
            raise CheckpointError(f"--ema needs a training checkpoint of ours; {path} is an exported artefact")
        if attention != "additive":
            raise CheckpointError(f"--attention {attention}: {path} is an exported artefact, whose graph holds the "
                                  "attention it was exported with; leave --attention unset")
        info = read_info(path)
        if model_name and model_name.split(".")[0] != info.variant:
            raise CheckpointError(f"{path} holds a {info.variant}, not a {model_name}")
        if info.random_weights:
            log.warning("%s was exported with --random-weights: it runs, but its answers mean nothing", path)
        return LoadedModel(ArtefactModel(path, info), info.class_names, run_config_of(info))
    run = training_run(path) if path else None
    if run is not None:
        config = run["config"]
        if model_name and model_name.split(".")[0] != config["model"]:
            raise CheckpointError(f"{path} holds a {config['model']}, not a {model_name}")
        if attention not in ("additive", config["attention"]):  # additive: the default, also when not given
            raise CheckpointError(f"--attention {attention}: {path} was trained with attention {config['attention']}, "
                                  "which its run records; leave --attention unset")
        model = create_model(config["model"], num_classes=config["num_classes"], attention=config["attention"])
        apply_carried_cfg(model, run_cfg(config, run.get("class_names")))  # the library's transform is eval's
        key = "ema" if ema else "model"
        if run.get(key) is None:
            raise CheckpointError(f"{path} has no {key!r} weights (the run kept no EMA)")
        if config.get("qat"):  # a quantization-aware run trained the fused form
            model = fused_from_run(model, run[key])
        else:
            load_native_state_dict(model, run[key])
        names = list(run.get("class_names") or default_class_names(model.num_classes))
        return LoadedModel(model.eval(), names, config)
    if ema:
        raise CheckpointError("--ema needs a training checkpoint of ours (last.pth/best.pth)")
    record = native_record(path) if path is not None else None
    if record is not None:  # a native file of ours names its variant and attention
        model_name = model_name or record["variant"]
        attention = record["attention"] if attention == "additive" else attention  # additive: also when not given
    if path is not None and path.is_file():
        checkpoint_file_kind(path)  # a file that is no checkpoint at all (a log, an image) says so before --model
    # official, timm and HF weights do not name their variant (a missing file is the loader's error to name)
    if path is not None and path.exists() and not model_name:
        raise CheckpointError(f"{path} is not a training run of ours, so it does not say which variant it holds: "
                              "give --model (e.g. --model swiftformer_l1)")
    model = create_model(model_name or "swiftformer_xs", pretrained=checkpoint or True, attention=attention)
    names = model.pretrained_cfg.get("label_names") or default_class_names(model.num_classes)
    return LoadedModel(model.eval(), list(names), None)


def run_config(loaded: LoadedModel, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preprocessing and data settings to evaluate with: the run's own (image size, crop, dataset), or the
    model's pretrained_cfg for other checkpoints (a file saved from a run carries the run's; the released weights
    224, crop 0.875, bicubic), an artefact's from its metadata; non-``None`` overrides on top (never another image
    size for an artefact: it runs one)."""
    base = loaded.run_config or {"batch_size": 64, "workers": 2, **preprocessing_settings(loaded.model)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(loaded.model, ArtefactModel) and "img_size" in given:
        height, width = loaded.model.info.input_size[1:]
        if (given["img_size"],) * 2 != (height, width):
            raise SwiftFormerError(f"--img-size {given['img_size']}: the artefact runs {height}x{width} images only "
                                   "(its metadata); leave --img-size unset")
    return apply_overrides(TrainConfig(), {**base, **given, "val_subset": None, "train_subset": None})


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, topk: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities, class indices)``, each ``(N, k)``, best first."""
    probabilities = model(images).float().softmax(dim=1)
    return probabilities.topk(min(topk, probabilities.shape[1]), dim=1)
