"""Export the fused (reparameterized) model to deployment formats, and check every artefact.

    swiftformer export --model swiftformer_s --format onnx --out s.onnx --dynamic-batch

Each format is written from the fused form (:func:`swiftformer.reparameterize`) by its runtime's module
(:mod:`swiftformer.deploy`, through the :data:`~swiftformer.formats.FORMATS` row), staged beside the requested
name, then run by that module's runner, the one ``eval``, ``predict`` and ``bench`` use, and compared with PyTorch
on the same inputs; Core ML packages are read back and validated, and predict where Core ML runs (macOS only).

``--precision fp16|bf16|int8`` writes the reduced-precision form of a format with its runtime's own toolkit
(calibrated on real images: :mod:`swiftformer.calibration`) and checks it against fp32 PyTorch on held-out real
images (:mod:`swiftformer.agreement`); an artefact below the agreement bound is not left under the requested name.
Every artefact gets its preprocessing metadata beside it (:mod:`swiftformer.artefacts`).

``io="image"`` writes the app form (:mod:`swiftformer.deploy.app_io`): RGB pixels in as the format's platform
delivers them (``formats.ArtefactFormat.image_input``), the model's normalisation and the softmax inside, the
labels and the rest of :class:`~swiftformer.deploy.app_io.AppMetadata` in the artefact's own metadata.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .agreement import DEFAULT_MIN_AGREEMENT, Agreement, compare, model_labels
from .artefacts import ArtefactInfo, artefact_info, open_artefact, write_info
from .calibration import ImageBatch
from .checkpoint import check_destination
from .data_config import check_image_size
from .deploy.app_io import AppMetadata, app_metadata, image_classifier
from .deploy.graph import MAX_DYNAMIC_BATCH, ExportCheckError, RuntimeUnavailable
from .errors import SwiftFormerError
from .formats import CALIBRATED, FORMATS, ImageInput, check_io, check_precision
from .models.fused import FusedModel, reparameterize, set_layout


def channels_last(fmt: str, precision: str = "fp32") -> bool:
    """The feature-map layout of ``fmt``'s fused graph in ``precision`` (``formats.FORMATS``). ExecuTorch int8
    takes the NCHW form, where the 1x1 MLPs are convolutions, which the int8 rule quantizes (and QAT trains): from
    the channels-last form they stay float linears (XS at 224 px: 12.1 MB and no faster than fp32, against 5.0 MB
    and 1.65x; docs/quantization.md)."""
    return FORMATS[fmt].channels_last and not (fmt == "executorch" and precision == "int8")


class DisagreementError(ExportCheckError):
    """A reduced-precision artefact below the agreement bound, with the measurement that put it there (the CLI
    prints it: on a few check images one disagreement can be the whole shortfall)."""

    def __init__(self, message: str, agreement: Agreement) -> None:
        super().__init__(message)
        self.agreement = agreement


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how well it matched PyTorch."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_abs_diff: float | None  # None when the artefact could not be run on this machine
    note: str = ""
    precision: str = "fp32"
    agreement: Agreement | None = None  # reduced precisions: against fp32 PyTorch on held-out real images
    run_as_checked: str = ""  # how to run the artefact as it was checked, where its runtime's default differs
    max_batch: int = MAX_DYNAMIC_BATCH  # of a dynamic batch: what the artefact takes (ExecuTorch's can be fewer)
    io: str = "tensor"
    metadata: AppMetadata | None = None  # what an image-form artefact carries inside


def check_inputs(batch: int, img_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Seeded images in the normalised input distribution (zero mean, unit variance per channel)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *img_size, generator=generator)


def check_pixels(batch: int, img_size: tuple[int, int], image_input: ImageInput, seed: int = 0) -> torch.Tensor:
    """Seeded random pixels as ``image_input`` takes them (uniform over the pixel range)."""
    generator = torch.Generator().manual_seed(seed)
    return image_input.pixels(torch.rand(batch, 3, *img_size, generator=generator))


def unnormalised(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Images through the model's transform (normalised by ``mean``/``std``) back to 0..1, what an image-form
    artefact's pixels are made from."""
    mean_t, std_t = (torch.tensor(values).view(1, 3, 1, 1) for values in (mean, std))
    return images * std_t + mean_t


def check_request(
    fmt: str, precision: str, has_calibration: bool, has_check: bool, dynamic_batch: bool = False,
    io: str = "tensor",
) -> None:
    """A :class:`SwiftFormerError` for a format/precision/io that cannot be written or checked; cheap, so the CLI
    asks before any weights are fetched."""
    if fmt not in FORMATS:
        raise SwiftFormerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_io(fmt, io)
    if dynamic_batch and not FORMATS[fmt].dynamic_batch:
        raise SwiftFormerError(f"--format {fmt} writes a fixed batch: drop --dynamic-batch (use --batch N)")
    check_precision(fmt, precision)
    if (fmt, precision) in CALIBRATED and not has_calibration:
        raise SwiftFormerError(f"--precision {precision} calibrates activation ranges on real images: "
                               "give them with --calibration DIR (never random tensors)")
    if precision != "fp32" and FORMATS[fmt].runs_here and not has_check:
        raise SwiftFormerError(f"--precision {precision} is checked on real images: give --calibration DIR or --check-data DIR")


def check_output(fmt: str, out: str | Path) -> Path:
    """``out`` as a :class:`Path` if ``fmt`` can be written there (its suffix, a writable folder, no folder in the
    way of a file), else a :class:`SwiftFormerError`; cheap, so callers check before loading any weights."""
    if fmt not in FORMATS:
        raise SwiftFormerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    suffix = FORMATS[fmt].suffix
    if out.suffix != suffix:
        raise SwiftFormerError(f"--format {fmt} writes a {suffix} file, not {out.name!r}: name --out accordingly")
    for path in _artefact_paths(out, fmt):
        check_destination(path, folder=FORMATS[fmt].folder)
    return out


def _artefact_paths(path: Path, fmt: str) -> list[Path]:
    """Every path an artefact occupies: OpenVINO IR is the ``.xml`` and the ``.bin`` beside it."""
    return [path, *(path.with_suffix(suffix) for suffix in FORMATS[fmt].companions)]


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A path to write ``out`` (and its companions: ``.bin``, metadata) to, moved beside ``out`` only if the
    block succeeds, so a failed or rejected artefact never sits under the requested name."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging / out.name
        for item in staging.iterdir():
            target = out.parent / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _narrowed_batch(fmt: str, path: Path, dynamic_batch: bool, info: ArtefactInfo, result: ExportResult) -> None:
    """Record the batch range the written artefact really takes, where lowering narrowed it (ExecuTorch)."""
    planned = getattr(FORMATS[fmt].runtime, "max_batch", None)
    if planned is not None and dynamic_batch:
        info.max_batch = result.max_batch = min(MAX_DYNAMIC_BATCH, planned(path))


def check_agreement(fused: nn.Module, path: Path, info: ArtefactInfo, check: ImageBatch,
                    min_agreement: float) -> Agreement:
    """The artefact at ``path`` against ``fused`` (fp32 PyTorch) on ``check``; an error below ``min_agreement``."""
    labels = model_labels(check.labels, check.class_names, info.class_names)
    reference = torch.cat([fused(part) for part in check.images.split(64)])
    images = unnormalised(check.images, info.mean, info.std) if info.io == "image" else check.images
    agreement = compare(reference, open_artefact(path, info, users_file=False)(images), labels)
    if agreement.agreement < min_agreement:
        differ = round((1 - agreement.agreement) * agreement.images)
        raise DisagreementError(
            f"{info.format} {info.precision} artefact agrees with fp32 PyTorch on {100 * agreement.agreement:.2f} % of "
            f"{agreement.images} check images ({differ} differ), below --min-agreement {100 * min_agreement:.2f} %: "
            "not written", agreement)
    return agreement


@torch.no_grad()
def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    batch: int = 1,
    dynamic_batch: bool = False,
    img_size: tuple[int, int] = (224, 224),
    atol: float = 1e-4,
    precision: str = "fp32",
    calibration: ImageBatch | None = None,
    check: ImageBatch | None = None,
    min_agreement: float | None = None,
    class_names: list[str] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    io: str = "tensor",
    author: str = "",
    license: str = "",
    description: str = "",
    top1: float | None = None,
    random_weights: bool = False,
) -> ExportResult:
    """Fuse ``model``, write it as ``fmt`` to ``out`` and compare the artefact's outputs with PyTorch's.

    With ``dynamic_batch`` the artefact takes 1..:data:`MAX_DYNAMIC_BATCH` images; it is traced at batch 2
    and checked at batch 3, so a batch size baked into the graph is caught. Raises
    :class:`ExportCheckError` when the max abs difference of the logits exceeds ``atol``. A reduced
    ``precision`` is calibrated on ``calibration`` (int8) and must agree with fp32 PyTorch on the ``check``
    images on at least ``min_agreement`` of them (default :data:`~swiftformer.agreement.DEFAULT_MIN_AGREEMENT`).
    ``class_names``, ``crop_pct`` and ``interpolation`` go into the artefact's metadata, and ``random_weights`` (the
    model was never trained), so that ``eval`` and ``predict`` say so instead of answering with confidence.

    ``io="image"``: the app form (pixels in, probabilities out), checked on seeded random pixels (max abs diff of
    the probabilities) and on the real images; ``class_names`` (checked against the head before anything is
    written), ``author``, ``license``, ``description`` and ``top1`` go inside it (the CLI's default ``io`` is the
    format's ``default_io``).
    """
    check_request(fmt, precision, calibration is not None, check is not None, dynamic_batch, io)
    if batch < 1:
        raise SwiftFormerError(f"--batch must be at least 1, got {batch}")
    check_image_size(*img_size)
    out = check_output(fmt, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, FusedModel):
        fused = set_layout(copy.deepcopy(model), channels_last(fmt, precision)).eval()
    else:
        fused = reparameterize(model, channels_last=channels_last(fmt, precision))
    example = check_inputs(2 if dynamic_batch else batch, img_size)
    inputs = check_inputs(3, img_size, seed=1) if dynamic_batch else check_inputs(batch, img_size, seed=1)
    num_classes = fused(example[:1]).shape[1]
    info = artefact_info(
        fused, fmt, precision, img_size, None if dynamic_batch else batch, MAX_DYNAMIC_BATCH,
        class_names or [f"class {i}" for i in range(num_classes)], crop_pct, interpolation,
    )
    info.variant = getattr(model, "variant", info.variant)
    info.io, info.random_weights = io, random_weights
    result = ExportResult(out, fmt, tuple(example.shape), dynamic_batch, None, precision=precision, io=io)
    runtime = FORMATS[fmt].runtime
    with staged_output(out) as staged:
        if io == "image":
            image_input = FORMATS[fmt].image_input
            form = image_classifier(fused, image_input.layout, image_input.pixel_max)
            meta = app_metadata(form, info.class_names, img_size, top1=top1, author=author, license=license,
                                description=description)  # refuses labels that do not match the head: nothing written
            result.metadata = meta
            example, inputs = (check_pixels(part.shape[0], img_size, image_input, seed) for seed, part in
                               enumerate((example, inputs)))
            pixels = image_input.pixels(unnormalised(calibration.images, info.mean, info.std)) if calibration else None
            runtime.write_image(form, example, staged, meta, precision, pixels, dynamic_batch)
        else:
            form = fused
            runtime.write(fused, example, staged, precision, calibration.images if calibration else None, dynamic_batch)
        _narrowed_batch(fmt, staged, dynamic_batch, info, result)
        try:
            if precision == "fp32":
                _check_fp32(form, fused, staged, info, inputs, atol, check, min_agreement, result)
            elif check is not None:
                bound = DEFAULT_MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
                result.agreement = check_agreement(fused, staged, info, check, bound)
            else:  # a precision written without images (Core ML's): run once to show that it runs
                open_artefact(staged, info, users_file=False)
        except RuntimeUnavailable as unavailable:
            result.note = str(unavailable)
        if hasattr(runtime, "run_as_checked"):
            result.run_as_checked = runtime.run_as_checked(precision)
        if hasattr(runtime, "embed_info"):
            runtime.embed_info(staged, info.to_json())
        write_info(staged, info)
    return result


def _check_fp32(form: nn.Module, fused: nn.Module, path: Path, info: ArtefactInfo, inputs: torch.Tensor, atol: float,
                check: ImageBatch | None, min_agreement: float | None, result: ExportResult) -> None:
    """The fp32 artefact's outputs (``form``'s: logits, or the image form's probabilities) against PyTorch's on
    ``inputs`` (max abs diff within ``atol``), and its agreement with ``fused`` on the real ``check`` images where
    given."""
    run = FORMATS[info.format].runtime.runner(path, None, "fp32")
    result.max_abs_diff = float((run(inputs).float() - form(inputs)).abs().max())
    if not np.isfinite(result.max_abs_diff) or result.max_abs_diff > atol:
        raise ExportCheckError(
            f"{info.format} artefact {result.path} differs from PyTorch by {result.max_abs_diff:.3g} (tolerance {atol:g})"
        )
    if check is not None:  # real images given: the fp32 artefact's agreement too
        result.agreement = check_agreement(fused, path, info, check, min_agreement or 0.0)
