"""mIoU / pixel accuracy on a hand-computed case; COCO AP end to end with known answers."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from swiftformer.dense.metrics import ConfusionMatrix, coco_evaluate, detections_to_coco

pytest.importorskip("pycocotools")


def test_miou_hand_computed() -> None:
    target = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 255]])
    prediction = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])
    metric = ConfusionMatrix(num_classes=4)
    metric.update(prediction, target)
    result = metric.compute()
    # scored pixels: 7 (one ignored). class 0: TP 2, FN 1, FP 1 -> 2/4; class 1: TP 2, FP 1 -> 2/3;
    # class 2: TP 1, FN 1 -> 1/2; class 3 never occurs -> left out of the mean.
    assert result["IoU"][:3] == pytest.approx([50.0, 200 / 3, 50.0])
    assert math.isnan(result["IoU"][3])
    assert result["mIoU"] == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert result["pixel_acc"] == pytest.approx(100 * 5 / 7)
    assert result["mAcc"] == pytest.approx(100 * (2 / 3 + 1 + 1 / 2) / 3)


def test_all_background_baseline() -> None:
    target = torch.tensor([[0, 0, 0, 1]])
    metric = ConfusionMatrix(num_classes=2)
    metric.update(torch.zeros_like(target), target)
    assert metric.compute()["mIoU"] == pytest.approx(100 * (3 / 4 + 0) / 2)


def _ground_truth():
    from pycocotools.coco import COCO

    masks = [np.zeros((40, 50), np.uint8) for _ in range(3)]
    masks[0][5:20, 10:30] = 1
    masks[1][22:38, 2:12] = 1
    masks[2][10:30, 15:45] = 1
    boxes = [[10, 5, 20, 15], [2, 22, 10, 16], [15, 10, 30, 20]]
    from pycocotools import mask as mask_utils

    annotations = []
    for index, (image_id, mask, box) in enumerate(zip([1, 1, 2], masks, boxes)):
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({"id": index + 1, "image_id": image_id, "category_id": 7, "bbox": box, "area": int(mask.sum()),
                            "segmentation": rle, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": 50, "height": 40} for i in (1, 2)], "annotations": annotations,
                    "categories": [{"id": 7, "name": "thing"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, masks, boxes


def _outputs(masks, boxes, scores):
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)
    return {"boxes": xyxy, "scores": torch.tensor(scores), "labels": torch.ones(len(boxes), dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)).float()[:, None]}


def test_coco_perfect_predictions_score_100() -> None:
    coco, masks, boxes = _ground_truth()
    outputs = [_outputs(masks[:2], boxes[:2], [0.9, 0.8]), _outputs(masks[2:], boxes[2:], [0.7])]
    results = detections_to_coco(outputs, [1, 2], category_ids=[7])
    assert {r["category_id"] for r in results} == {7} and results[0]["bbox"] == [10.0, 5.0, 20.0, 15.0]
    metrics = coco_evaluate(coco, results)
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        assert metrics[key] == pytest.approx(100.0), key


def test_coco_half_recall_known_answer() -> None:
    # One of three objects found, with the top score: precision 1 up to recall 1/3, then nothing.
    # COCO's 101-point interpolated AP = (number of recall points <= 1/3) / 101 = 34 / 101.
    coco, masks, boxes = _ground_truth()
    results = detections_to_coco([_outputs(masks[2:], boxes[2:], [0.9])], [2], category_ids=[7])
    metrics = coco_evaluate(coco, results)
    assert metrics["bbox_AP"] == pytest.approx(100 * 34 / 101)
    assert metrics["segm_AP50"] == pytest.approx(100 * 34 / 101)


def test_coco_no_detections_is_zero() -> None:
    coco, _, _ = _ground_truth()
    assert coco_evaluate(coco, [])["bbox_AP"] == 0.0
