"""The fused inference form computes the same logits as the unfused eval model."""
import copy
import functools

import pytest
import torch

import swiftformer
from swiftformer.models import fused, onednn
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


def _mlp_inputs(block, tokens: tuple[int, int] = (7, 5), seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, *tokens, block.fc1.in_features, generator=generator) for _ in range(2))


def _reference_mlp(block, residual, x):
    return residual + block.fc2(torch.nn.functional.gelu(block.fc1(x)))


@pytest.fixture
def large_block():
    """A fused ConvEncoder with SwiftFormer-L3's stage-3 MLP (320 -> 1280 -> 320: at least MIN_MLP_WEIGHTS)."""
    torch.manual_seed(5)
    block = FusedConvEncoder(torch.nn.Conv2d(320, 320, 3, padding=1, groups=320), torch.nn.Linear(320, 1280),
                             torch.nn.Linear(1280, 320))
    return block.requires_grad_(False).eval()


def test_inference_mlp_runs_on_onednn_with_packed_weights(large_block):
    """Without gradients the MLP is two oneDNN 1×1 convolutions on weights packed once per input shape; the result
    is the plain GEMM MLP's."""
    residual, x = _mlp_inputs(large_block)
    with torch.no_grad():
        with OpRecorder() as ops:
            out = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
        assert (out - _reference_mlp(large_block, residual, x)).abs().max() <= 1e-5
    assert "mkldnn._convolution_pointwise.default" in ops.names and "mkldnn._convolution_pointwise.binary" in ops.names
    assert not {"aten.addmm.default", "aten.mm.default", "aten.gelu.default"} & set(ops.names)
    assert out.shape == x.shape and out.is_contiguous()
    packed = {shape: entry[-1] for shape, entry in onednn._packed[large_block.fc1].items()}
    with torch.no_grad():
        large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
        assert all(onednn._packed[large_block.fc1][shape][-1] is weight for shape, weight in packed.items())  # reused
        large_block.add_mlp(*_mlp_inputs(large_block, tokens=(3, 3)), large_block.fc1, large_block.fc2)
    assert len(onednn._packed[large_block.fc1]) == 2  # one packing per input shape


def test_onednn_mlp_follows_new_weights(large_block):
    """Loading other weights into a fused model that has already run repacks them: no stale packed weights."""
    residual, x = _mlp_inputs(large_block)
    with torch.no_grad():
        before = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
        large_block.load_state_dict({k: torch.randn_like(v) * 0.05 for k, v in large_block.state_dict().items()})
        out = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
        assert (out - _reference_mlp(large_block, residual, x)).abs().max() <= 1e-5
        assert (out - before).abs().max() > 0.1
        assert len(onednn._packed[large_block.fc1]) == 1  # the old weight's packing is dropped, not kept
        # writes through .data bypass the version counter: clear() is the documented way to repack after them
        large_block.fc1.weight.data.mul_(-1)
        onednn.clear(large_block)
        out = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
        assert (out - _reference_mlp(large_block, residual, x)).abs().max() <= 1e-5


def test_model_fused_and_run_in_inference_mode_packs_and_follows_loads():
    """The usual deployment code: build, fuse, load and run all under ``torch.inference_mode()``. The fused weights
    are normal tensors (with version counters), so they are packed and a later load is honoured."""
    with torch.inference_mode():
        model = randomize(swiftformer.create_model("swiftformer_l3", num_classes=10), seed=2)
        fused_model = swiftformer.reparameterize(model)
        x = torch.randn(1, 3, 96, 96)
        assert (fused_model(x) - model(x)).abs().max() <= 1e-4
        assert any(m in onednn._packed for m in fused_model.modules())
        halved = {k: v * 0.5 for k, v in fused_model.state_dict().items()}
        fused_model.load_state_dict(halved)
        reference = swiftformer.reparameterize(model)
        reference.load_state_dict(halved)
        with OpRecorder() as ops:
            expected = reference(x)
        assert "mkldnn._convolution_pointwise.binary" in ops.names
        assert torch.equal(fused_model(x), expected)


def test_parameters_that_want_gradients_or_autocast_take_plain_ops():
    """Fine-tuning a fused model (parameters trainable again) gets real gradients; autocast gets its own dtypes."""
    model = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs", num_classes=10)))
    model.requires_grad_(True)
    with OpRecorder() as ops:
        model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert not any(name.startswith("mkldnn.") for name in ops.names)
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), OpRecorder() as ops:
        model(torch.randn(1, 3, 64, 64))
    assert not any(name.startswith("mkldnn.") for name in ops.names)


def test_mlp_with_gradients_or_switched_off_runs_on_mkl(large_block, monkeypatch):
    """oneDNN's fused kernels have no backward: an input that wants a gradient takes the GEMM path and gets one;
    ``onednn.ENABLED = False`` takes it too. A fused model that has run stays copyable."""
    residual, x = _mlp_inputs(large_block)
    x.requires_grad_(True)
    with OpRecorder() as ops:
        out = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
    assert not any(name.startswith("mkldnn.") for name in ops.names)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    monkeypatch.setattr(onednn, "ENABLED", False)
    with torch.no_grad(), OpRecorder() as ops:
        large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)
    assert not any(name.startswith("mkldnn.") for name in ops.names)
    monkeypatch.setattr(onednn, "ENABLED", True)
    with torch.no_grad():
        out = large_block.add_mlp(residual, x, large_block.fc1, large_block.fc2)  # packs the weights
        clone = copy.deepcopy(large_block)
        assert torch.equal(clone.add_mlp(residual, x, clone.fc1, clone.fc2), out)


def test_small_mlp_stays_on_mkl_gemms():
    """An MLP with weights below MIN_MLP_WEIGHTS (XS's 220 -> 880 -> 220) runs as MKL GEMMs, residual as accumulator."""
    block = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs"))).body[1][3].blocks[0]
    assert block.fc1.weight.numel() < onednn.MIN_MLP_WEIGHTS
    residual, x = _mlp_inputs(block)
    with torch.no_grad(), OpRecorder() as ops:
        out = block.add_mlp(residual, x, block.fc1, block.fc2)
    assert ops.names.count("aten.addmm.default") == 2 and not any(name.startswith("mkldnn.") for name in ops.names)
    with torch.no_grad():
        assert (out - _reference_mlp(block, residual, x)).abs().max() <= 1e-5


def test_fused_inference_runs_its_convolutions_on_packed_weights(monkeypatch):
    """Without gradients every 3×3 convolution of the fused model (stem, depthwise, downsampling) is a oneDNN
    convolution on packed weights, the stem's ReLU fused into it; with ``onednn.ENABLED = False`` none is."""
    model = swiftformer.reparameterize(randomize(swiftformer.create_model("swiftformer_xs", num_classes=10)))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad(), OpRecorder() as ops:
        model(x)
    packed_calls = ops.names.count("mkldnn._convolution_pointwise.default")
    assert packed_calls == convs and "aten.convolution.default" not in ops.names
    assert "aten.relu.default" not in ops.names
    packed = [entry[-1] for m in model.modules() if isinstance(m, torch.nn.Conv2d) for entry in onednn._packed[m].values()]
    assert len(packed) == convs and all(weight.is_mkldnn for weight in packed)
    monkeypatch.setattr(onednn, "ENABLED", False)
    with torch.no_grad(), OpRecorder() as ops:
        model(x)
    assert ops.names.count("aten.convolution.default") == convs and not any(n.startswith("mkldnn.") for n in ops.names)


def test_convolution_with_string_padding_takes_the_plain_conv():
    conv = torch.nn.Conv2d(4, 4, 3, padding="same").requires_grad_(False)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad(), OpRecorder() as ops:
        out = fused._conv_nchw(conv, x)
    assert torch.equal(out, conv(x)) and not any(name.startswith("mkldnn.") for name in ops.names)
    with pytest.raises(ValueError, match="explicit zero padding"):
        onednn.conv(conv, x)
