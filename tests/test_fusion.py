"""The fused inference form computes the same logits as the unfused eval model."""
import functools

import pytest
import torch

import swiftformer
from swiftformer.models import fused
from swiftformer.models.fused import FusedConvEncoder, FusedHead, FusedSwiftFormerEncoder

from .conftest import VARIANT_NAMES, OpRecorder, randomize


@functools.lru_cache(maxsize=2)
def model_and_fused(name: str, channels_last: bool):
    model = randomize(swiftformer.create_model(name), seed=7)
    return model, swiftformer.reparameterize(model, channels_last=channels_last)


@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("name", VARIANT_NAMES)
@pytest.mark.parametrize("batch,size", [(1, (224, 224)), (4, (224, 224)), (1, (256, 192)), (4, (160, 224))])
def test_fused_matches_unfused(name, batch, size, channels_last):
    model, fused = model_and_fused(name, channels_last)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() <= 1e-4


def test_fused_form_has_no_batchnorm_or_layer_scale():
    fused = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs")))
    kinds = {type(m).__name__ for m in fused.modules()}
    assert "BatchNorm2d" not in kinds and "LayerScale2d" not in kinds
    assert sum(isinstance(m, FusedSwiftFormerEncoder) for m in fused.modules()) == 4
    assert sum(isinstance(m, FusedConvEncoder) for m in fused.modules()) == 16 - 4 + 4  # + local representations
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in fused.modules())
    heads = [m for m in fused.modules() if isinstance(m, FusedHead)]
    assert len(heads) == 1 and heads[0].head.out_features == 1000  # twin heads merged into one linear


def test_reparameterize_leaves_the_model_untouched():
    model = randomize(swiftformer.create_model("swiftformer_xs"))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swiftformer.reparameterize(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("attention", ["additive_legacy", "mhsa", "transposed", "separable"])
def test_fused_other_attentions(attention):
    model = randomize(swiftformer.create_model("swiftformer_xs", attention=attention, num_classes=10))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert (swiftformer.reparameterize(model)(x) - model(x)).abs().max() <= 1e-4


def test_fused_model_without_distillation_head():
    model = randomize(swiftformer.create_model("swiftformer_xs", distillation=False, num_classes=10))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert (swiftformer.reparameterize(model)(x) - model(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("num_threads,groups", [(2, 2), (3, 2), (4, 4)])
def test_small_mlp_splits_hidden_channels_per_thread(threads, num_threads, groups):
    """Below SPLIT_MLP_MAX_TOKENS an MLP runs as one hidden-channel group per thread (a group count that
    divides the hidden width), with the same result as the single GEMM; larger maps keep the single GEMM."""
    threads(num_threads)
    block = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs"))).body[1][3].blocks[0]
    fc1, fc2 = block.fc1, block.fc2  # 220 -> 880 -> 220: 880 is not divisible by 3
    generator = torch.Generator().manual_seed(3)
    for tokens, split in ((7, True), (fused.SPLIT_MLP_MAX_TOKENS + 1, False)):
        x, residual = (torch.randn(1, tokens, 1, 220, generator=generator) for _ in range(2))
        with torch.no_grad():
            expected = residual + fc2(torch.nn.functional.gelu(fc1(x)))
            with OpRecorder() as ops:
                out = block.add_mlp(residual, x, fc1, fc2)
        assert fused._hidden_groups(x, fc1) == (groups if split else 1)
        assert ("aten.bmm.default" in ops.names) == split
        assert (out - expected).abs().max() <= 1e-5
