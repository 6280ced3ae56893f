"""The fused inference form computes the same logits as the unfused eval model."""
import functools

import pytest
import torch

import swiftformer
from swiftformer.models.fused import FusedConvEncoder, FusedHead, FusedSwiftFormerEncoder, fold_bn_before_linear

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


def test_fold_bn_before_linear_on_pooled_features():
    """The head's fold: a linear layer after BN on pooled features equals one linear layer (pooling commutes)."""
    generator = torch.Generator().manual_seed(4)
    bn = randomize(torch.nn.Sequential(torch.nn.BatchNorm2d(6)))[0]
    linear = torch.nn.Linear(6, 3)
    x = torch.randn(2, 6, 5, 4, generator=generator)
    with torch.no_grad():
        expected = linear(bn(x).mean(dim=(2, 3)))
        assert (fold_bn_before_linear(bn, linear)(x.mean(dim=(2, 3))) - expected).abs().max() <= 1e-6


def test_eager_mlp_is_two_gemms_with_the_residual_as_accumulator():
    """A fused MLP in eager inference: two ``addmm`` (the second accumulating into the residual), one GELU."""
    block = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs"))).body[1][3].blocks[0]
    generator = torch.Generator().manual_seed(3)
    residual, x = (torch.randn(2, 7, 5, block.fc1.in_features, generator=generator) for _ in range(2))
    with torch.no_grad(), OpRecorder() as ops:
        out = block.add_mlp(residual, x, block.fc1, block.fc2)
    assert ops.names.count("aten.addmm.default") == 2 and ops.names.count("aten.gelu.default") == 1
    assert "aten.add.Tensor" not in ops.names  # the residual is the GEMM's accumulator, not a separate sum
    with torch.no_grad():
        assert (out - (residual + block.fc2(torch.nn.functional.gelu(block.fc1(x))))).abs().max() <= 1e-5


def test_model_fused_in_inference_mode_can_be_loaded_and_trained():
    """The usual deployment code builds, fuses and runs under ``torch.inference_mode()``: the fused weights are
    normal tensors, so the model takes a later ``load_state_dict`` and fine-tuning outside that mode."""
    with torch.inference_mode():
        model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=10), seed=2)
        fused_model = swiftformer.reparameterize(model)
        x = torch.randn(1, 3, 96, 96)
        assert (fused_model(x) - model(x)).abs().max() <= 1e-4
    halved = {k: v * 0.5 for k, v in fused_model.state_dict().items()}
    fused_model.load_state_dict(halved)
    reference = swiftformer.reparameterize(model)
    reference.load_state_dict(halved)
    with torch.no_grad():
        assert torch.equal(fused_model(x), reference(x))
    fused_model.requires_grad_(True)
    fused_model(x).sum().backward()
    assert all(p.grad is not None for p in fused_model.parameters())
