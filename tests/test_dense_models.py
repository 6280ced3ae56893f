"""Mask R-CNN and semantic FPN on every SwiftFormer variant: forward and backward in train mode, outputs in eval mode."""
from __future__ import annotations

import pytest
import torch

from swiftformer.dense import build_maskrcnn, build_semantic_fpn

from .conftest import VARIANT_NAMES


def _targets(sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    targets = []
    for height, width in sizes:
        masks = torch.zeros(2, height, width, dtype=torch.uint8)
        masks[0, 10:60, 20:50] = 1
        masks[1, 40:100, 60:110] = 1
        boxes = torch.tensor([[20.0, 10, 50, 60], [60, 40, 110, 100]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return targets


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_maskrcnn_train_and_eval(variant: str) -> None:
    torch.manual_seed(0)
    model = build_maskrcnn(variant, num_classes=2, out_channels=32, min_size=128, max_size=160,
                           box_batch_size_per_image=32, rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50)
    sizes = [(120, 150), (140, 128)]
    images = [torch.rand(3, h, w) for h, w in sizes]
    losses = model.train()(images, _targets(sizes))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    stem_grad = model.backbone.body.stem[0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    with torch.no_grad():
        outputs = model.eval()(images)
    for output, (height, width) in zip(outputs, sizes):
        assert output["masks"].shape[1:] == (1, height, width)  # masks pasted back at the input size
        assert output["boxes"].shape[0] == output["scores"].shape[0] == output["labels"].shape[0]


def test_faster_rcnn_without_masks() -> None:
    model = build_maskrcnn("swiftformer_xs", num_classes=2, masks=False, out_channels=32, min_size=128, max_size=160)
    targets = [{k: v for k, v in t.items() if k != "masks"} for t in _targets([(128, 128)])]
    losses = model.train()([torch.rand(3, 128, 128)], targets)
    assert "loss_mask" not in losses and torch.isfinite(sum(losses.values()))


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_semantic_fpn_train_and_eval(variant: str) -> None:
    torch.manual_seed(0)
    model = build_semantic_fpn(variant, num_classes=5, out_channels=32, channels=32)
    images = torch.rand(2, 3, 96, 130)  # not a multiple of 32: the head must still land on the input size
    labels = torch.randint(0, 5, (2, 96, 130))
    logits = model.train()(images)
    assert logits.shape == (2, 5, 96, 130)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert model.eval()(images[:1]).shape == (1, 5, 96, 130)
