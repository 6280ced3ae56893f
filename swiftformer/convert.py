"""Pure ``state_dict -> state_dict`` conversion between the SwiftFormer checkpoint layouts.

Native keys are timm's (``stem.N``, ``stages.S.downsample``, ``stages.S.blocks.B``, ``layer_scale.gamma``,
``head_dist``), so timm checkpoints need no conversion. The others:

- ``official`` (Amshaker/SwiftFormer): ``patch_embed.N``, ``network.2S.B`` blocks, ``network.2S+1`` the
  downsampling into stage S+1, ``attn.Proj``, bare ``layer_scale`` parameters, ``dist_head``.
- ``hf`` (transformers' ``SwiftFormerForImageClassification``): the official layout under
  ``swiftformer.patch_embed.patch_embedding`` / ``swiftformer.encoder`` (stage blocks under
  ``network.2S.blocks.B``), with ``depth_wise_conv``,
  ``point_wise_conv1/2``, ``attn.proj``, and top-level ``norm``, ``head``, ``dist_head``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from .errors import CheckpointError

StateDict = dict[str, torch.Tensor]
FORMATS = ("native", "official", "timm", "hf")

_LAYER_SCALE = re.compile(r"\.(layer_scale(?:_[12])?)(?=$|\.)")
_OFFICIAL_NETWORK = re.compile(r"^network\.(\d+)\.(.*)$")
_NATIVE_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(.*)$")
_NATIVE_DOWNSAMPLE = re.compile(r"^stages\.(\d+)\.downsample\.(.*)$")
_HF_STAGE_BLOCKS = re.compile(r"^network\.(\d+)\.blocks\.")
_OFFICIAL_STAGE_BLOCK = re.compile(r"^network\.(\d*[02468])\.(\d+)\.")
_HF_CONV_NAMES = (("depth_wise_conv", "dwconv"), ("point_wise_conv1", "pwconv1"), ("point_wise_conv2", "pwconv2"))


def unwrap(checkpoint: Mapping) -> StateDict:
    """The state dict inside a checkpoint: ``{"model": sd}``, ``{"state_dict": sd}`` or a flat dict."""
    for key in ("model", "state_dict", "model_state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in checkpoint.items()}
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entry {bad[0]!r} is not a tensor: this is not a model state dict")
    return state_dict


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which layout a state dict uses: ``native`` (= timm), ``official`` or ``hf``."""
    keys = list(state_dict)
    if any(k.startswith("stem.") or k.startswith("stages.") for k in keys):
        return "native"
    if any(k.startswith("swiftformer.") for k in keys):
        return "hf"
    if any(k.startswith("patch_embed.") or k.startswith("network.") for k in keys):
        return "official"
    sample = ", ".join(keys[:3]) or "no keys"
    raise CheckpointError(f"not a SwiftFormer checkpoint: unrecognised keys ({sample}, ...)")


def _gamma_name(key: str) -> str:
    """``...layer_scale`` -> ``...layer_scale.gamma`` (official/HF bare parameters)."""
    return _LAYER_SCALE.sub(lambda m: f".{m.group(1)}.gamma", key)


def _bare_layer_scale(key: str) -> str:
    return re.sub(r"\.(layer_scale(?:_[12])?)\.gamma$", r".\1", key)


def official_to_native(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    out = {}
    for key, value in state_dict.items():
        key = key.replace("patch_embed.", "stem.", 1) if key.startswith("patch_embed.") else key
        key = key.replace("dist_head.", "head_dist.", 1) if key.startswith("dist_head.") else key
        key = _gamma_name(key.replace(".attn.Proj.", ".attn.proj."))
        match = _OFFICIAL_NETWORK.match(key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            key = f"stages.{index // 2}.blocks.{rest}" if index % 2 == 0 else f"stages.{index // 2 + 1}.downsample.{rest}"
        out[key] = value
    return out


def native_to_official(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    out = {}
    for key, value in state_dict.items():
        block, downsample = _NATIVE_BLOCK.match(key), _NATIVE_DOWNSAMPLE.match(key)
        if block:
            key = f"network.{2 * int(block.group(1))}.{block.group(2)}"
        elif downsample:
            key = f"network.{2 * int(downsample.group(1)) - 1}.{downsample.group(2)}"
        elif key.startswith("stem."):
            key = "patch_embed." + key[len("stem.") :]
        elif key.startswith("head_dist."):
            key = "dist_head." + key[len("head_dist.") :]
        out[_bare_layer_scale(key.replace(".attn.proj.", ".attn.Proj."))] = value
    return out


def hf_to_native(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    official = {}
    for key, value in state_dict.items():
        key = key.replace("swiftformer.patch_embed.patch_embedding.", "patch_embed.")
        key = _HF_STAGE_BLOCKS.sub(r"network.\1.", key.replace("swiftformer.encoder.", ""))
        for hf_name, name in _HF_CONV_NAMES:
            key = key.replace(f".{hf_name}.", f".{name}.")
        official[key] = value
    return official_to_native(official)


def native_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    out = {}
    for key, value in native_to_official(state_dict).items():
        key = key.replace(".attn.Proj.", ".attn.proj.")
        for hf_name, name in _HF_CONV_NAMES:
            key = key.replace(f".{name}.", f".{hf_name}.")
        if key.startswith("patch_embed."):
            key = "swiftformer.patch_embed.patch_embedding." + key[len("patch_embed.") :]
        elif key.startswith("network."):
            key = "swiftformer.encoder." + _OFFICIAL_STAGE_BLOCK.sub(r"network.\1.blocks.\2.", key)
        out[key] = value
    return out


_TO_NATIVE: dict[str, Callable[[Mapping[str, torch.Tensor]], StateDict]] = {
    "native": dict,
    "timm": dict,
    "official": official_to_native,
    "hf": hf_to_native,
}
_FROM_NATIVE: dict[str, Callable[[Mapping[str, torch.Tensor]], StateDict]] = {
    "native": dict,
    "timm": dict,
    "official": native_to_official,
    "hf": native_to_hf,
}


def to_native(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Any supported layout to native keys; native input is returned as a copy."""
    return _TO_NATIVE[detect_format(state_dict)](state_dict)


def from_native(state_dict: Mapping[str, torch.Tensor], fmt: str) -> StateDict:
    """Native keys to the layout ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in _FROM_NATIVE:
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _FROM_NATIVE[fmt](state_dict)
