"""The dense models as app artefacts: a trained run's semantic FPN or Mask R-CNN written for a runtime, image in.

    swiftformer segment export --checkpoint runs/pennfudan_semantic_fpn_xs/best.pth --format onnx --out seg.onnx
    swiftformer detect export --checkpoint runs/pennfudan_maskrcnn_xs/best.pth --format openvino --out det.xml

Every artefact takes RGB pixels at one fixed size, as an app has them (``uint8 [1, H, W, 3]``; Core ML an RGB
``ImageType``), with the model's normalisation inside. A segmenter answers the class map (argmax per pixel, at
the input resolution: ``classes [1, H, W]``); a detector ``boxes [N, 4]`` (xyxy pixels of the input), ``labels [N]``
(1..K, 0 is background), ``scores [N]`` and ``masks [N, 1, H, W]`` (probabilities), torchvision's post-processing
inside. The run's class names, the input size and the rest of :class:`DenseMetadata` ride inside the artefact
(ONNX ``metadata_props``, OpenVINO ``rt_info``, a TFLite metadata buffer, Core ML ``user_defined_metadata``), all
under :data:`METADATA_KEY`, so ``segment predict`` / ``detect predict`` run it alone.

The export runs the artefact and PyTorch on the run's validation images (resized to the artefact's size, as an app
does) and keeps it only if they agree: segmentation mIoU within :data:`MIOU_TOLERANCE` points of PyTorch's and the
pixels' agreement; detection every confident box matched (IoU, score, mask IoU). Runtime code lives in the runtime
modules (:mod:`swiftformer.deploy`); this module holds the wrappers, the metadata and the checks.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import box_iou

from ..deploy import coreml, litert, onnx, openvino, tflite_metadata
from ..deploy.graph import ExportCheckError, RuntimeUnavailable
from ..errors import DataError, SwiftFormerError
from ..export import check_output, staged_output
from ..models.swiftformer import IMAGENET_MEAN, IMAGENET_STD
from .artefacts import METADATA_KEY, OUTPUTS, TASK_FORMATS, DenseMetadata, Outputs, outputs_runner, pixels
from .config import DenseConfig
from .data import CocoInstances, SegmentationFolder, read_image
from .engine import load_trained
from .metrics import ConfusionMatrix

MIOU_TOLERANCE = 0.5  # points of mIoU the artefact may lose or gain against PyTorch
MIN_PIXEL_AGREEMENT = 0.99  # of the class map's pixels
# detection: a confident PyTorch detection must have its artefact twin at least this close
MIN_BOX_IOU, MIN_MASK_IOU, MAX_SCORE_DIFF, CONFIDENT = 0.9, 0.9, 0.05, 0.3


# What goes inside the artefact ----------------------------------------------------------------------------
class ImageSegmenter(nn.Module):
    """``model`` fed RGB pixels in ``0..pixel_max`` (``layout``), answering the class map ``(N, H, W)``."""

    def __init__(self, model: nn.Module, layout: str = "NHWC", pixel_max: float = 255.0) -> None:
        super().__init__()
        self.model, self.layout = model, layout
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (1.0 / (pixel_max * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.scale.dtype)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        # (N, K, H, W) logits -> (N, H, W) classes; int32: what every runtime returns (TFLite has no int64 outputs)
        return self.model(x * self.scale + self.shift).argmax(1).to(torch.int32)


class ImageDetector(nn.Module):
    """torchvision's detector fed one ``uint8 (1, H, W, 3)`` image (it normalises and resizes inside itself),
    answering boxes, labels, scores and masks (pasted into the image, :func:`paste_masks`) as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detector, size = self.model, x.shape[1:3]
        images, _ = detector.transform([x[0].permute(2, 0, 1).float() / 255])
        features = detector.backbone(images.tensors)
        proposals, _ = detector.rpn(images, features)
        (found,), _ = detector.roi_heads(features, proposals, images.image_sizes)
        boxes = resize_boxes(found["boxes"], images.image_sizes[0], size)  # to the input's pixels
        masks = paste_masks(found["masks"], boxes, size) if "masks" in found else torch.zeros(len(boxes), 1, *size)
        return boxes, found["labels"], found["scores"], masks


def torchvision_outputs(detector: nn.Module) -> Outputs:
    """The detector as torchvision runs it (its own mask pasting): what the export's check compares with."""
    def run(x: torch.Tensor) -> list[torch.Tensor]:
        found = detector.eval()([x[0].permute(2, 0, 1).float() / 255])[0]
        return [found[name] for name in OUTPUTS["detection"]]

    return run


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The ``(N, 1, M, M)`` mask probabilities of ``boxes`` pasted into an image of ``size``: ``(N, 1, H, W)``.

    torchvision's ``paste_masks_in_image`` as one ``grid_sample`` instead of a loop over the boxes: OpenVINO cannot
    convert the ONNX ``Loop`` that torchvision's traced form becomes ("Conversion failed for Loop ... Accessing
    out-of-range dimension"). The same arithmetic: the mask padded by a pixel and its box widened to match, the box
    rounded towards zero to whole pixels, bilinear sampling (half-pixel centres), zero outside the box.
    """
    count, _, side, _ = masks.shape
    padded = F.pad(masks, (1, 1, 1, 1))
    scale = (side + 2) / side
    centre, half = (boxes[:, 2:] + boxes[:, :2]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2 * scale
    # torchvision's .to(int64): towards zero (the ONNX exporter has no aten::trunc)
    low, high = (torch.where(edge < 0, edge.ceil(), edge.floor()) for edge in (centre - half, centre + half))
    extent = (high - low + 1).clamp(min=1)
    height, width = size
    xs = torch.arange(width, dtype=masks.dtype).view(1, 1, width)
    ys = torch.arange(height, dtype=masks.dtype).view(1, height, 1)
    u = (xs - low[:, 0, None, None] + 0.5) / extent[:, 0, None, None] * 2 - 1  # (N, 1, W)
    v = (ys - low[:, 1, None, None] + 0.5) / extent[:, 1, None, None] * 2 - 1  # (N, H, 1)
    grid = torch.stack([u.expand(count, height, width), v.expand(count, height, width)], dim=-1)
    pasted = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (u.abs() <= 1) & (v.abs() <= 1)  # (N, H, W)
    return pasted * inside[:, None].to(masks.dtype)


# Writing ---------------------------------------------------------------------------------------------------
def _write(fmt: str, task: str, model: nn.Module, size: tuple[int, int], out: Path, meta: DenseMetadata) -> None:
    """The artefact of ``fmt`` at ``out``, ``meta`` inside."""
    example = torch.randint(0, 256, (1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if fmt == "coreml":
        coreml.write_image_input(ImageSegmenter(model, "NCHW", 1.0).eval(), size, out, meta.outputs,
                                 {METADATA_KEY: meta.to_json()},
                                 f"{meta.variant} semantic FPN: RGB {size[0]}x{size[1]} in, class map out")
        return
    wrapped = (ImageSegmenter(model) if task == "segmentation" else ImageDetector(model)).eval()
    # Mask R-CNN: torch.export cannot follow its data-dependent box counts; the TorchScript-based exporter can
    dynamo = task == "segmentation"
    if fmt == "litert":
        litert.write(wrapped, example, out)
    elif fmt == "onnx":
        onnx.write_outputs(wrapped, example, out, meta.outputs, dynamo)
    elif fmt == "openvino":
        with tempfile.TemporaryDirectory() as tmp:  # through ONNX
            graph = onnx.write_outputs(wrapped, example, Path(tmp) / "model.onnx", meta.outputs, dynamo)
            openvino.write_ir(graph, out)
    _embed(fmt, out, meta.to_json())


def _embed(fmt: str, path: Path, text: str) -> None:
    """The metadata JSON ``text`` into the artefact at ``path`` (Core ML's is written with the package)."""
    if fmt == "onnx":
        onnx.embed_metadata(path, {METADATA_KEY: text})
    elif fmt == "openvino":
        openvino.embed_rt_info(path, {METADATA_KEY: text})
    elif fmt == "litert":
        path.write_bytes(tflite_metadata.with_entries(path.read_bytes(), {METADATA_KEY: text.encode()}))


# Checking --------------------------------------------------------------------------------------------------
def check_segmentation(reference: nn.Module, run: Outputs, samples: SegmentationFolder, size: tuple[int, int],
                       limit: int | None) -> dict:
    """mIoU of the artefact and of PyTorch (``reference``: the same wrapper) on ``samples``' images resized to
    ``size`` against their labels resized the same way (nearest), and the share of pixels whose classes agree."""
    confusions = [ConfusionMatrix(samples.num_classes, samples.ignore_index) for _ in range(2)]
    same = total = 0
    for index in range(min(len(samples), limit or len(samples))):
        image = pixels(read_image(samples.samples[index][0]), size)
        label = F.interpolate(samples.read_label(index)[None, None].float(), size=size, mode="nearest")[0, 0].long()
        expected, got = reference(image)[0], run(image)[0][0].long()
        for confusion, prediction in zip(confusions, (expected, got)):
            confusion.update(prediction, label)
        same, total = same + int((expected == got).sum()), total + expected.numel()
    pytorch, artefact = (confusion.compute()["mIoU"] for confusion in confusions)
    return {"images": min(len(samples), limit or len(samples)), "mIoU_pytorch": pytorch, "mIoU": artefact,
            "pixel_agreement": same / total}


def check_detection(reference: nn.Module, run: Outputs, samples: CocoInstances, size: tuple[int, int],
                    limit: int | None) -> dict:
    """Every PyTorch detection scoring at least :data:`CONFIDENT` on ``samples``' images resized to ``size`` must
    have an artefact detection of its label with box IoU >= :data:`MIN_BOX_IOU`, score within
    :data:`MAX_SCORE_DIFF` and mask IoU >= :data:`MIN_MASK_IOU`; the worst of each is reported."""
    worst = {"box_iou": 1.0, "mask_iou": 1.0, "score_diff": 0.0}
    matched = unmatched = 0
    count = min(len(samples), limit or len(samples))
    for index in range(count):
        info = samples.coco.imgs[samples.ids[index]]
        image = pixels(read_image(samples.images / info["file_name"]), size)
        boxes, labels, scores, masks = reference(image)
        got_boxes, got_labels, got_scores, got_masks = run(image)
        confident = scores >= CONFIDENT
        if not confident.any():
            continue
        ious = box_iou(boxes[confident], got_boxes.float()) if len(got_boxes) else torch.zeros(int(confident.sum()), 0)
        for row, ref in zip(ious, confident.nonzero()[:, 0].tolist()):
            row = torch.where(got_labels.long() == labels[ref], row, torch.zeros_like(row))
            if not len(row) or float(row.max()) < MIN_BOX_IOU:
                unmatched += 1
                continue
            twin = int(row.argmax())
            mask, got_mask = masks[ref, 0] > 0.5, got_masks[twin, 0] > 0.5
            union = int((mask | got_mask).sum())
            mask_iou = int((mask & got_mask).sum()) / union if union else 1.0
            matched += 1
            worst["box_iou"] = min(worst["box_iou"], float(row.max()))
            worst["mask_iou"] = min(worst["mask_iou"], mask_iou)
            worst["score_diff"] = max(worst["score_diff"], abs(float(scores[ref]) - float(got_scores[twin])))
    return {"images": count, "matched": matched, "unmatched": unmatched, **worst}


def _verdict(task: str, check: dict) -> str | None:
    """What is wrong with a check's figures (``None``: the artefact passes)."""
    if task == "segmentation":
        if abs(check["mIoU"] - check["mIoU_pytorch"]) > MIOU_TOLERANCE:
            return (f"mIoU {check['mIoU']:.2f} against PyTorch's {check['mIoU_pytorch']:.2f} on {check['images']} "
                    f"images, beyond {MIOU_TOLERANCE} points")
        if check["pixel_agreement"] < MIN_PIXEL_AGREEMENT:
            return (f"{100 * check['pixel_agreement']:.2f} % of the pixels agree with PyTorch, below "
                    f"{100 * MIN_PIXEL_AGREEMENT:.0f} %")
        return None
    if check["unmatched"]:
        return f"{check['unmatched']} of PyTorch's detections scoring >= {CONFIDENT} have no twin in the artefact"
    if check["mask_iou"] < MIN_MASK_IOU or check["score_diff"] > MAX_SCORE_DIFF:
        return (f"a matched detection's mask IoU is {check['mask_iou']:.3f} (at least {MIN_MASK_IOU}) or its score "
                f"differs by {check['score_diff']:.3f} (at most {MAX_SCORE_DIFF})")
    return None


# The export ------------------------------------------------------------------------------------------------
@dataclass
class DenseExportResult:
    path: Path
    format: str
    metadata: DenseMetadata
    note: str = ""  # why the artefact was not run (Core ML off macOS)


def _check_samples(config: DenseConfig, data: str | None) -> SegmentationFolder | CocoInstances:
    """The run's validation images (of ``data`` where given): what the export's check runs on."""
    root = Path(data or config.data or "")
    if not (data or config.data):
        raise DataError("the export's check runs on the run's validation images: give their dataset with --data DIR")
    if config.task == "detection":
        return CocoInstances(root / config.val_images, root / config.val_annotations, masks=config.masks)
    return SegmentationFolder(root, config.val_split, img_size=config.img_size, ignore_index=config.ignore_index,
                              reduce_zero_label=config.reduce_zero_label, num_classes=config.num_classes)


@torch.no_grad()
def export_dense(checkpoint: str | Path, fmt: str, out: str | Path, task: str, img_size: tuple[int, int] | None = None,
                 data: str | None = None, check_images: int | None = None) -> DenseExportResult:
    """The ``task`` model of a training ``checkpoint`` written as ``fmt`` to ``out`` at ``img_size`` (default: the
    run's square ``img_size``, detection ``min_size``), checked against PyTorch on the run's validation images
    (the first ``check_images`` of them; all without); a failed check leaves nothing at ``out``."""
    if fmt not in TASK_FORMATS[task]:
        raise SwiftFormerError(f"{task} exports to {', '.join(TASK_FORMATS[task])}, not {fmt!r}")
    out = check_output(fmt, out)
    model, config, class_names = load_trained(checkpoint)
    if config.task != task:
        raise SwiftFormerError(f"{checkpoint} holds a {config.task} model, not {task}")
    side = config.img_size if task == "segmentation" else config.min_size
    size = tuple(img_size or (side, side))
    samples = _check_samples(config, data)
    meta = DenseMetadata(task, config.model, size, list(config.class_names or class_names), outputs=OUTPUTS[task],
                         layout="NCHW" if fmt == "coreml" else "NHWC", pixel_max=1.0 if fmt == "coreml" else 255.0,
                         background=() if config.reduce_zero_label else (0,))
    out.parent.mkdir(parents=True, exist_ok=True)
    result = DenseExportResult(out, fmt, meta)
    reference = ImageSegmenter(model).eval() if task == "segmentation" else torchvision_outputs(model)
    with staged_output(out) as staged:
        _write(fmt, task, model, size, staged, meta)
        try:
            run = outputs_runner(staged, meta)
        except RuntimeUnavailable as unavailable:
            result.note = str(unavailable)
            return result
        checker = check_segmentation if task == "segmentation" else check_detection
        meta.check = checker(reference, run, samples, size, check_images)
        if (problem := _verdict(task, meta.check)) is not None:
            raise ExportCheckError(f"{fmt} artefact: {problem}: not written")
        _embed(fmt, staged, meta.to_json())  # the check's figures too
    return result
