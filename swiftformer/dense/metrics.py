"""Evaluation numbers: COCO box / mask AP (pycocotools) and semantic-segmentation mIoU / pixel accuracy.

Both are exact under DDP: the confusion matrix is summed over ranks; detections are gathered to every rank
before pycocotools scores them against the ground-truth JSON.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..distributed import all_gather_object, all_reduce_sum
from .data import IGNORE_INDEX

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


# Semantic segmentation -------------------------------------------------------------------------------------
class ConfusionMatrix:
    """``(K, K)`` counts of (true class, predicted class) over all scored pixels; ``ignore_index`` is skipped."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add one or more label maps: ``prediction`` and ``target`` of the same shape, class indices."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        true, predicted = target[keep].long().cpu(), prediction[keep].long().cpu()
        if true.numel() and int(true.max()) >= self.num_classes:
            raise ValueError(f"label {int(true.max())} outside 0..{self.num_classes - 1} (and not ignore_index)")
        flat = true * self.num_classes + predicted
        self.matrix += torch.bincount(flat, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def reduce(self) -> None:
        """Sum the counts of all DDP ranks (no-op in a single process)."""
        self.matrix = all_reduce_sum(self.matrix.clone())

    def compute(self) -> dict[str, Any]:
        """mIoU and mean accuracy over classes present in the targets or predictions, and pixel accuracy, in %.

        Classes that never occur in either have no defined IoU and are left out of the means (as mmseg does).
        """
        matrix = self.matrix.double()
        true_positive = matrix.diag()
        per_target, per_prediction = matrix.sum(1), matrix.sum(0)
        union = per_target + per_prediction - true_positive
        iou = true_positive / union  # nan where the class never occurs
        accuracy = true_positive / per_target
        total = matrix.sum()
        return {
            "mIoU": 100 * float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else float("nan"),
            "mAcc": 100 * float(np.nanmean(accuracy.numpy())) if bool((per_target > 0).any()) else float("nan"),
            "pixel_acc": 100 * float(true_positive.sum() / total) if total > 0 else float("nan"),
            "IoU": [100 * float(v) for v in iou],
        }


# COCO ------------------------------------------------------------------------------------------------------
def detections_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """torchvision detector outputs -> COCO result dicts (``bbox`` xywh; ``segmentation`` RLE if masks).

    ``category_ids[label - 1]`` is the COCO category of contiguous label ``label`` (0 is background).
    """
    from pycocotools import mask as mask_utils

    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().cpu().float()
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
        scores, labels = output["scores"].tolist(), output["labels"].tolist()
        rles = []
        if "masks" in output:
            binary = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)  # (N, H, W)
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        for index, (box, score, label) in enumerate(zip(boxes.tolist(), scores, labels)):
            result = {"image_id": int(image_id), "category_id": int(category_ids[label - 1]), "bbox": box, "score": score}
            if rles:
                rle = dict(rles[index])
                rle["counts"] = rle["counts"].decode("ascii")
                result["segmentation"] = rle
            results.append(result)
    return results


def coco_evaluate(
    coco_gt: Any, results: list[dict[str, Any]], iou_types: Sequence[str] = ("bbox", "segm"),
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCO AP of ``results`` against the ground truth ``coco_gt`` (a ``pycocotools.coco.COCO``), in %.

    Returns ``{"bbox_AP": ..., "bbox_AP50": ..., "bbox_AP75": ..., "segm_AP": ..., ...}``; with no detections
    at all every AP is 0. ``image_ids`` limits scoring to those images (default: all of ``coco_gt``).
    """
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        kept = [r for r in results if iou_type != "segm" or "segmentation" in r]
        if not kept:
            metrics.update({f"{iou_type}_{name}": 0.0 for name in COCO_STATS})
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
            coco_dt = coco_gt.loadRes(kept)
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = sorted(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # -1 marks "no ground truth in this size range": report it as nan, not as a negative AP
        metrics.update({
            f"{iou_type}_{name}": 100 * float(v) if v >= 0 else float("nan")
            for name, v in zip(COCO_STATS, evaluator.stats[: len(COCO_STATS)])
        })
    return metrics


def gather_detections(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All ranks' COCO result dicts, on every rank."""
    return [r for part in all_gather_object(results) for r in part]
