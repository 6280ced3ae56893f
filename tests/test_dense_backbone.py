"""SwiftFormerFPN: stage shapes and widths of every variant, weight loading from classification checkpoints, freezing."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from swiftformer import CheckpointError, create_model, save_checkpoint
from swiftformer.dense import SwiftFormerFPN
from swiftformer.models import VARIANTS

from .conftest import VARIANT_NAMES, randomize


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_pyramid_shapes_and_channels(variant: str) -> None:
    backbone = SwiftFormerFPN(variant, out_channels=32).eval()
    widths = VARIANTS[variant].widths
    stages = backbone.body.forward_intermediates(torch.zeros(1, 3, 128, 192), intermediates_only=True)
    assert [tuple(s.shape[1:]) for s in stages] == [(w, 128 // r, 192 // r) for w, r in zip(widths, (4, 8, 16, 32))]
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 128, 192))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[1:]) for f in features.values()] == [
        (32, 128 // r, 192 // r) for r in (4, 8, 16, 32, 64)
    ]
    assert backbone.out_channels == 32 and backbone.strides == [4, 8, 16, 32, 64]


@pytest.mark.parametrize("fmt", ["native", "timm", "official"])
def test_loads_classification_weights_and_reports_dropped_head(tmp_path, fmt: str) -> None:
    classifier = randomize(create_model("swiftformer_xs", num_classes=10))
    path = save_checkpoint(classifier, tmp_path / ("w.safetensors" if fmt == "native" else "w.pth"), format=fmt)
    backbone = SwiftFormerFPN("swiftformer_xs", pretrained=path)
    assert {k.split(".")[0] for k in backbone.dropped_keys} == {"head", "head_dist", "norm"}
    loaded = backbone.body.state_dict()
    for key, value in classifier.state_dict().items():
        if not key.startswith(("head", "norm")):
            torch.testing.assert_close(loaded[key], value, msg=key)


def test_other_variant_checkpoint_is_a_clear_error(tmp_path) -> None:
    path = save_checkpoint(create_model("swiftformer_s"), tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match="another SwiftFormer variant"):
        SwiftFormerFPN("swiftformer_xs", pretrained=path)


def test_frozen_stages_and_frozen_bn() -> None:
    backbone = SwiftFormerFPN("swiftformer_xs", frozen_stages=2, freeze_bn=True).train()
    assert not any(p.requires_grad for p in backbone.body.stem.parameters())
    assert not any(p.requires_grad for p in backbone.body.stages[1].parameters())
    assert all(p.requires_grad for p in backbone.body.stages[2].parameters())
    assert not backbone.body.stages[0].training and backbone.body.stages[2].training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    backbone(torch.rand(1, 3, 64, 64))["0"].sum().backward()
    assert backbone.body.stem[0].weight.grad is None and backbone.body.stages[2].blocks[0].dwconv.weight.grad is not None
