"""Reading and writing SwiftFormer weights in every layout, safely.

Loading never unpickles arbitrary objects: a file is read by what its bytes are, not by its name (a
safetensors header holds only tensors; a PyTorch zip archive or a pickle goes through
``torch.load(weights_only=True)``, which refuses any object that is not a tensor or a plain container).
Writing is atomic: a temp file in the target folder, fsync, then ``os.replace``, so a crash or a full disk
mid-write leaves the previous file intact; the file gets the permissions the umask gives any new file.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .convert import FORMATS, StateDict, detect_format, from_native, to_native, unwrap
from .data_config import carried_cfg, run_cfg
from .errors import CheckpointError, OutputError

log = logging.getLogger(__name__)

HUB_REPO = "timm/{variant}.dist_in1k"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HEAD_PREFIXES = ("head.", "head_dist.")
HF_ATTENTION_KEY = "swiftformer_attention"  # written into the config.json of Hugging Face folders we save


# Atomic writes ---------------------------------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would: ``mkstemp``/``mkdtemp`` create 0600/0700."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def disk_full(directory: Path) -> bool:
    """Whether the file system of ``directory`` has (almost) no space left for us: less than a megabyte."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 2**20


def write_error(path: Path, error: BaseException, full: bool = False) -> OutputError | None:
    """The one-line error for a write of ``path`` that failed for a reason of the user's disk, else ``None``.

    A full disk inside ``torch.save`` arrives as the C++ zip writer's RuntimeError ("file write failed", or
    "unexpected pos" when a write came up short), with no errno: ``full`` says the disk was measured full when
    the write failed."""
    causes = [error, error.__cause__, error.__context__]
    os_error = next((e for e in causes if isinstance(e, OSError)), None)
    kept = f"; the previous {path.name} is intact" if path.exists() else ""
    short_write = isinstance(error, RuntimeError) and ("write failed" in str(error) or full)
    if (os_error is not None and os_error.errno in (errno.ENOSPC, errno.EDQUOT)) or short_write:
        return OutputError(f"cannot write {path}: No space left on device{kept} (free some space, then run again)")
    if os_error is not None and os_error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {os_error.strerror}{kept}")
    return None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync, and rename onto ``path``; ``path`` is never seen half-written.

    A full disk or a read-only folder is an :class:`OutputError` that names the file and says the previous one
    is intact."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise (write_error(path, error) or error) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        follow_umask(tmp)  # after the write: a writer may create the file anew (safetensors does), still 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        full = disk_full(path.parent)  # measured before the unlink gives the space back
        tmp.unlink(missing_ok=True)
        if isinstance(error, Exception) and (mapped := write_error(path, error, full)) is not None:
            raise mapped from None
        raise
    _fsync_dir(path.parent)
    return path


def check_destination(path: str | Path, folder: bool = False) -> Path:
    """``path`` if a file (``folder=True``: a folder) can be written there, else an :class:`OutputError` naming it.

    Called before the work that produces the output, so a read-only folder or a name taken by the other kind
    fails at once instead of after a run."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        wanted, found = ("a folder", "a file") if folder else ("a file", "a folder")
        raise OutputError(f"cannot write {path}: it is {found}, {wanted} is wanted there")
    directory = path if folder and path.is_dir() else path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error} ({error.filename or directory})") from None
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


# Safe reading ----------------------------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def file_kind(path: Path) -> str | None:
    """What the bytes of ``path`` are: ``safetensors``, ``zip`` (``torch.save``), ``pickle`` (legacy
    ``torch.save``, plain pickles) or ``None`` (anything else: empty, text, an image ...)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 and later
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte little-endian header length, JSON header
        (header_length,) = struct.unpack("<Q", head[:8])
        if 0 < header_length <= path.stat().st_size - 8:
            return "safetensors"
    return None


def checkpoint_file_kind(path: Path) -> str:
    """The :func:`file_kind` of an existing checkpoint file, or a :class:`CheckpointError` naming the problem."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        kind = file_kind(path)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror}") from None
    if kind is None:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} is not a checkpoint: {'an empty file' if size == 0 else f'its {size} bytes are'} neither "
            "safetensors, a PyTorch zip archive nor a pickle"
        )
    return kind


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` that only accepts tensors and plain containers; a clear error for anything else."""
    path = Path(path)
    if checkpoint_file_kind(path) == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file (weights only), not a training checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        code = re.search(r"GLOBAL ([\w.]+)", str(error))  # only a global (a class or function) can run code
        if code is None:
            raise CheckpointError(f"cannot read checkpoint {path}: a corrupt pickle (truncated or not a checkpoint)") from None
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors, which could run code "
            f"({code.group(1)}). Only tensor state dicts and safetensors files are accepted."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)} (truncated or corrupt?)") from None


def training_run(path: Path) -> dict[str, Any] | None:
    """The checkpoint dict when ``path`` is a training run of ours, whatever its name (decided by content)."""
    if not path.is_file() or file_kind(path) not in ("zip", "pickle"):
        return None
    checkpoint = safe_torch_load(path)
    return checkpoint if isinstance(checkpoint, dict) and "config" in checkpoint and "model" in checkpoint else None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return {key: handle.get_tensor(key) for key in handle.keys()}, metadata
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read safetensors file {path}: {error}") from None


def is_native_record(metadata: Mapping[str, Any]) -> bool:
    """Whether a file's metadata is what :func:`save_checkpoint` writes into a native file (:func:`model_metadata`)."""
    return metadata.get("format") == "swiftformer" and bool(metadata.get("variant"))


def torch_metadata(checkpoint: Any) -> dict[str, str]:
    """The ``metadata`` entry of a ``torch.save`` native file (:func:`save_checkpoint`); ``{}`` for other files."""
    metadata = checkpoint.get("metadata") if isinstance(checkpoint, Mapping) else None
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        return {}
    return dict(metadata)


def native_record(path: str | Path) -> dict[str, str] | None:
    """What a native file (:func:`save_checkpoint`) records of its model (variant, num_classes, attention,
    distillation, pretrained_cfg): a safetensors header, read alone, or a ``torch.save`` file's ``metadata``
    entry; ``None`` for any other file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        kind = file_kind(path) if path.is_file() else None
        if kind == "safetensors":
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        elif kind in ("zip", "pickle"):
            metadata = torch_metadata(safe_torch_load(path))
        else:
            return None
    except (SafetensorError, OSError, CheckpointError):
        return None  # unreadable: the loader names the problem
    return metadata if is_native_record(metadata) else None


def run_record(run: Mapping[str, Any]) -> dict[str, str]:
    """What a training run of ours (:func:`training_run`) records of its model, as :func:`native_record` gives it."""
    config = run["config"]
    return {"format": "swiftformer", "variant": config["model"], "attention": config.get("attention", "additive"),
            "pretrained_cfg": json.dumps(run_cfg(config, run.get("class_names")))}


def _weights_file(directory: Path) -> Path:
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory} holds none of {', '.join(HF_WEIGHT_FILES)}")


def read_checkpoint(path: str | Path, key: str | None = None) -> tuple[StateDict, dict[str, str]]:
    """The raw state dict and metadata of a file or a Hugging Face model directory.

    ``key`` picks an entry of a training checkpoint (``"model"`` by default, ``"ema"`` for the EMA weights).
    """
    path = Path(path)
    if path.is_dir():
        metadata = {}
        if (path / "config.json").is_file():
            metadata = {"hf_config": (path / "config.json").read_text()}
        path = _weights_file(path)
        state_dict, file_metadata = read_checkpoint(path, key)
        return state_dict, {**file_metadata, **metadata}
    if checkpoint_file_kind(path) == "safetensors":
        return _read_safetensors(path)
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} does not hold a dict of tensors (found {type(checkpoint).__name__})")
    if key is not None:
        if key not in checkpoint or not isinstance(checkpoint[key], Mapping):
            raise CheckpointError(f"{path} has no {key!r} entry (entries: {', '.join(map(str, checkpoint))})")
        checkpoint = checkpoint[key]
    return unwrap(checkpoint), torch_metadata(checkpoint)


def hf_attention(metadata: Mapping[str, str]) -> str | None:
    """The token mixer the weights of a Hugging Face checkpoint were trained with: the one this library wrote into
    its ``config.json``, else ``None`` (transformers' own port: the pre-July-2023 weights, ``additive_legacy``)."""
    config = json.loads(metadata.get("hf_config") or "{}")
    return config.get(HF_ATTENTION_KEY)


def read_native_state_dict(
    path: str | Path, key: str | None = None, attention: str | None = None
) -> tuple[StateDict, str, dict[str, str]]:
    """Read any supported checkpoint and convert it to native keys: ``(state_dict, format, metadata)``.

    For a Hugging Face checkpoint whose weights need another token mixer than ``attention`` (the model's; ``None``
    when unknown) a warning says which one reproduces their outputs."""
    state_dict, metadata = read_checkpoint(path, key)
    fmt = detect_format(state_dict)
    if fmt == "hf":
        written = hf_attention(metadata)
        needed = written or "additive_legacy"
        if attention != needed and (attention is not None or written is None):
            origin = "" if written else " (transformers' port of the pre-July-2023 weights)"
            log.warning(
                "%s holds weights trained with attention=%r%s: build the model with attention=%r (--attention %s on "
                "the command line) to reproduce their outputs", path, needed, origin, needed, needed,
            )
    return to_native(state_dict), fmt, metadata


def read_weights(path: str | Path, attention: str | None = None) -> tuple[StateDict, str, dict[str, str] | None]:
    """:func:`read_native_state_dict` of the model weights of any checkpoint, training runs of ours included, with
    what the file records of its model when it is ours (:func:`native_record`'s dict, else ``None``)."""
    run = training_run(Path(path))
    if run is not None:
        if run["config"].get("qat"):
            raise CheckpointError(f"{path} is a quantization-aware run, whose weights are the fused model's: load it "
                                  "with swiftformer.inference.load_model (or --checkpoint on the command line)")
        return to_native(unwrap(run["model"])), "native", run_record(run)
    state_dict, fmt, metadata = read_native_state_dict(path, attention=attention)
    return state_dict, fmt, metadata if is_native_record(metadata) else None


def checkpoint_num_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Class count of a native state dict's head, or ``None`` when it has no head."""
    head = state_dict.get("head.weight")
    return None if head is None else int(head.shape[0])


# Loading into a model --------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    source_format: str
    dropped: list[str] = field(default_factory=list)


def _head_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if k.startswith(HEAD_PREFIXES)]


def load_native_state_dict(model: nn.Module, state_dict: StateDict, drop_head: bool = False) -> list[str]:
    """Load native keys into ``model`` with errors that name key and shapes; returns the dropped keys."""
    expected = model.state_dict()
    state_dict = dict(state_dict)
    dropped = []
    if getattr(model, "head_dist", True) is None:  # a model without distillation head takes a distilled checkpoint
        dropped += [k for k in list(state_dict) if k.startswith("head_dist.")]
    if drop_head:
        dropped += [k for k in _head_keys(list(state_dict)) if k not in dropped]
    for key in dropped:
        state_dict.pop(key)
    mismatched = [k for k, v in state_dict.items() if k in expected and expected[k].shape != v.shape]
    if mismatched:
        key = next((k for k in mismatched if k.endswith(".weight")), mismatched[0])
        got, want = tuple(state_dict[key].shape), tuple(expected[key].shape)
        if all(k.startswith(HEAD_PREFIXES) for k in mismatched):
            raise CheckpointError(
                f"classifier head does not fit: {key} is {got} in the checkpoint, {want} in the model. Build the "
                f"model with num_classes={got[0]}, or drop the head to fine-tune (drop_head=True / --finetune)."
            )
        raise CheckpointError(
            f"checkpoint does not fit the model: {key} is {got} in the checkpoint, {want} in the model "
            f"({len(mismatched)} tensors differ) - is it another SwiftFormer variant?"
        )
    missing = [k for k in expected if k not in state_dict and not (drop_head and k.startswith(HEAD_PREFIXES))]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"checkpoint keys do not match the model: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=not drop_head)
    return dropped


def load_checkpoint(model: nn.Module, path: str | Path, drop_head: bool = False, key: str | None = None) -> LoadReport:
    """Load official, timm, Hugging Face or native weights (file or HF directory) into ``model``.

    The layout is detected from the keys. ``drop_head=True`` keeps the model's own classifier (fine-tuning);
    otherwise a head of another size is a :class:`CheckpointError`. ``key`` picks an entry of a training
    checkpoint, e.g. ``"ema"``.
    """
    state_dict, fmt, _ = read_native_state_dict(path, key, attention=getattr(model, "attention", None))
    dropped = load_native_state_dict(model, state_dict, drop_head)
    if dropped:
        log.info("not loaded from %s: %s", path, ", ".join(dropped))
    return LoadReport(fmt, dropped)


HUB_PROBE_SECONDS = 5.0  # one request without retries; the Hub client retries five times with back-off (~30 s)


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached now (``None`` when it answers), found with one request."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        from httpx2 import TransportError  # the HTTP client of huggingface_hub 2.x
    except ImportError:
        from httpx import TransportError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except (TransportError, OSError) as error:
        return str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def hub_file(repo_id: str, filename: str = "model.safetensors") -> Path:
    """Local path of a Hub file: from the Hub cache when it is there (no request), else downloaded; fails at once,
    without the Hub client's retries, when the Hub cannot be reached."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    unreachable = hub_unreachable()
    reason = f"not in the Hub cache and the Hub is not reachable ({unreachable})"
    if unreachable is None:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
            reason = str(error).splitlines()[0].rstrip(".")
    raise CheckpointError(
        f"cannot get the pretrained weights {repo_id}: {reason}. "
        "Pass pretrained=PATH (library) or --checkpoint PATH (command line) to use weights you have."
    )


def hub_checkpoint_path(variant: str) -> Path:
    """Local path of a variant's released weights (:func:`hub_file`)."""
    return hub_file(HUB_REPO.format(variant=variant))


def pretrained_source(variant: str, pretrained: bool | str | Path) -> Path:
    return hub_checkpoint_path(variant) if pretrained is True else Path(pretrained)


# Saving ----------------------------------------------------------------------------------------------------
def _save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)


def model_metadata(model: nn.Module) -> dict[str, str]:
    """What a native checkpoint records about the model that built it, its preprocessing and labels included."""
    return {
        "format": "swiftformer",
        "variant": str(getattr(model, "variant", "")),
        "num_classes": str(getattr(model, "num_classes", "")),
        "attention": str(getattr(model, "attention", "")),
        "distillation": str(getattr(model, "head_dist", None) is not None),
        "pretrained_cfg": json.dumps(carried_cfg(model)),
    }


def hf_config(model: nn.Module) -> dict[str, Any]:
    """A transformers ``SwiftFormerConfig`` for ``model``."""
    depths = [len(stage.blocks) for stage in model.stages]
    widths = [info["num_chs"] for info in model.feature_info]
    return {
        "architectures": ["SwiftFormerForImageClassification"],
        "model_type": "swiftformer",
        "num_channels": model.stem[0].in_channels,
        "depths": depths,
        "embed_dims": widths,
        "mlp_ratio": 4,
        "downsamples": [True] * len(depths),
        "hidden_act": "gelu",
        "down_patch_size": 3,
        "down_stride": 2,
        "down_pad": 1,
        "drop_path_rate": 0.0,
        "use_layer_scale": True,
        "layer_scale_init_value": 1e-5,
        "batch_norm_eps": 1e-5,
        "id2label": {str(i): f"LABEL_{i}" for i in range(model.num_classes)},
        "label2id": {f"LABEL_{i}": i for i in range(model.num_classes)},
        HF_ATTENTION_KEY: str(getattr(model, "attention", "additive")),
    }


def write_folder_atomically(directory: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(staging)`` on a new folder beside ``directory``, fsync its files, and put it in place of
    ``directory`` (replaced whole if it exists): no reader sees a half-written folder, a failed write leaves the
    previous one intact."""
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        follow_umask(staging, directory=True)
        write(staging)
        for file in staging.iterdir():
            follow_umask(file)
            with open(file, "rb+") as handle:
                os.fsync(handle.fileno())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(staging, directory)
            shutil.rmtree(old)
        else:
            os.replace(staging, directory)
        _fsync_dir(directory.parent)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and (mapped := write_error(directory, error)) is not None:
            raise mapped from None
        raise
    return directory


def _save_hf_directory(model: nn.Module, state_dict: StateDict, directory: Path) -> None:
    def write(staging: Path) -> None:
        (staging / "config.json").write_text(json.dumps(hf_config(model), indent=2))
        _save_safetensors(state_dict, staging / "model.safetensors", {"format": "pt"})

    write_folder_atomically(directory, write)


def save_checkpoint(model: nn.Module, path: str | Path, format: str = "native") -> Path:
    """Write ``model``'s weights in one of :data:`swiftformer.convert.FORMATS`, atomically; the file is
    safetensors for a ``.safetensors`` path, else a ``torch.save`` file (``.pth``, ``.pt``, ``.bin``).

    - ``native`` (timm's keys): with the model's variant, class count, attention, preprocessing and class names
      (:func:`model_metadata`) in the safetensors metadata, or a plain dict ``{"state_dict": ..., "metadata": ...}``
      that ``torch.load(weights_only=True)``, our loaders and timm's ``load_checkpoint`` read.
    - ``timm``: timm keys, nothing else (a bare state dict in a ``torch.save`` file).
    - ``official``: ``{"model": state_dict}`` in the official key layout (``torch.save``).
    - ``hf``: a directory with ``config.json`` and ``model.safetensors`` that transformers loads.
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    safetensors = path.suffix == ".safetensors"
    if format == "official" and safetensors:
        raise CheckpointError(f"the official format is a torch.save file: name it {path.stem}.pth, not {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = from_native({k: v.detach().cpu() for k, v in model.state_dict().items()}, format)
    if format == "hf":
        _save_hf_directory(model, state_dict, path)
    elif safetensors:
        metadata = model_metadata(model) if format == "native" else {"format": "pt"}
        atomic_write(path, lambda tmp: _save_safetensors(state_dict, tmp, metadata))
    else:
        contents = {"native": {"state_dict": state_dict, "metadata": model_metadata(model)},
                    "official": {"model": state_dict}, "timm": state_dict}
        atomic_torch_save(contents[format], path)
    return path
