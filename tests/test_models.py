"""The four variants: exact size and cost, and the timm-style model API."""
import pytest
import torch

import swiftformer
from swiftformer.models import build_attention
from swiftformer.models.swiftformer import PointwiseConv2d, elementwise
from swiftformer.profiling import count_macs, count_params

from .conftest import VARIANT_NAMES, OpRecorder, randomize

EXPECTED_PARAMS = {
    "swiftformer_xs": 3_475_360,
    "swiftformer_s": 6_092_128,
    "swiftformer_l1": 12_057_920,
    "swiftformer_l3": 28_494_736,
}
PUBLISHED_GMACS = {"swiftformer_xs": 0.6, "swiftformer_s": 1.0, "swiftformer_l1": 1.6, "swiftformer_l3": 4.0}


def test_list_models_in_size_order():
    assert swiftformer.list_models() == VARIANT_NAMES


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_parameter_count_is_exact(name):
    assert count_params(swiftformer.create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_macs_match_paper(name):
    macs = count_macs(swiftformer.create_model(name), 224)
    assert abs(macs / 1e9 - PUBLISHED_GMACS[name]) / PUBLISHED_GMACS[name] < 0.02


def test_without_distillation_head_has_one_head_less():
    model = swiftformer.create_model("swiftformer_xs", distillation=False)
    assert model.head_dist is None
    assert count_params(model) == EXPECTED_PARAMS["swiftformer_xs"] - (220 * 1000 + 1000)
    with pytest.raises(ValueError, match="distillation"):
        model.set_distilled_training(True)


def test_unknown_model_suggests_close_names():
    with pytest.raises(swiftformer.UnknownModelError, match="did you mean swiftformer_xs"):
        swiftformer.create_model("swiftformer_xss")


def test_official_and_timm_spellings_resolve():
    assert swiftformer.create_model("SwiftFormer_L1").variant == "swiftformer_l1"
    assert swiftformer.create_model("timm/swiftformer_s.dist_in1k").variant == "swiftformer_s"


def test_forward_features_head_and_pre_logits(images):
    model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=7))
    features = model.forward_features(images)
    assert features.shape == (2, 220, 7, 7)
    assert model.forward_head(features, pre_logits=True).shape == (2, 220)
    torch.testing.assert_close(model.forward_head(features), model(images))
    assert model(images).shape == (2, 7)


def test_eval_logits_average_both_heads(images):
    model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=5))
    pooled = model.forward_head(model.forward_features(images), pre_logits=True)
    expected = (model.head(pooled) + model.head_dist(pooled)) / 2
    torch.testing.assert_close(model(images), expected)


def test_distilled_training_returns_both_logits(images):
    model = swiftformer.create_model("swiftformer_xs", num_classes=5)
    model.set_distilled_training(True)
    model.train()
    logits, logits_dist = model(images)
    assert logits.shape == logits_dist.shape == (2, 5)
    assert not torch.allclose(logits, logits_dist)
    model.eval()
    assert model(images).shape == (2, 5)


def test_forward_intermediates_give_four_strides():
    model = randomize(swiftformer.create_model("swiftformer_s"))
    x = torch.randn(1, 3, 256, 192)
    final, maps = model.forward_intermediates(x)
    assert [m.shape for m in maps] == [
        (1, 48, 64, 48), (1, 64, 32, 24), (1, 168, 16, 12), (1, 224, 8, 6),
    ]
    torch.testing.assert_close(final, model.forward_features(x))
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    torch.testing.assert_close(last_two[1], maps[3])
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 16, 32]


def test_reset_classifier():
    model = swiftformer.create_model("swiftformer_xs")
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model.pretrained_cfg["num_classes"] == 3
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 220)


def test_gradient_checkpointing_recomputes_blocks_and_gives_same_gradients():
    torch.manual_seed(0)
    model = swiftformer.create_model("swiftformer_xs", num_classes=4)
    x = torch.randn(2, 3, 64, 64)
    calls = []  # one entry per forward run of a block: checkpointing runs each again in backward
    for stage in model.stages:
        for block in stage.blocks:
            block.register_forward_pre_hook(lambda *_: calls.append(1))
    blocks = sum(len(stage.blocks) for stage in model.stages)

    def grads():
        calls.clear()
        model.zero_grad()
        model.train()
        torch.manual_seed(1)
        model(x).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    assert len(calls) == blocks
    model.set_grad_checkpointing(True)
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b)
    assert len(calls) == 2 * blocks  # forward, then the recomputation in backward
    with torch.no_grad():
        calls.clear()
        model(x)
    assert len(calls) == blocks  # nothing to recompute without gradients


@pytest.mark.parametrize("coarse, groups", [(True, 4), (False, 16)])
def test_group_matcher_groups_stages_or_blocks(coarse, groups):
    from timm.models import group_parameters

    model = swiftformer.create_model("swiftformer_xs")  # depths 3, 3, 6, 4: 16 blocks in 4 stages
    grouped = group_parameters(model, model.group_matcher(coarse=coarse))
    stem, *middle, heads = grouped.values()
    assert all(name.startswith("stem.") for name in stem)
    assert len(middle) == groups and all(name.startswith("stages.") for group in middle for name in group[:-2])
    assert middle[-1][-2:] == ["norm.weight", "norm.bias"]  # the final norm joins the last group (timm's 99999)
    assert all(name.startswith("head") for name in heads)
    if not coarse:  # a downsampling goes with the first block of its stage
        assert any(name.startswith("stages.1.downsample.") for name in middle[3])
        assert any(name.startswith("stages.1.blocks.0.") for name in middle[3])


def test_pointwise_conv_is_one_matrix_product_on_channels_last_maps():
    conv = PointwiseConv2d(8, 16)
    x = torch.randn(2, 8, 5, 7)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias)
    with OpRecorder() as ops:
        out = conv(x.contiguous(memory_format=torch.channels_last))
    assert "aten.addmm.default" in ops.names and not any("convolution" in name for name in ops.names)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    with OpRecorder() as ops:
        torch.testing.assert_close(conv(x), expected)
    assert any("convolution" in name for name in ops.names)


def test_elementwise_runs_on_the_contiguous_view_of_channels_last_maps():
    seen = []

    def gelu(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.is_contiguous())
        return torch.nn.functional.gelu(t)

    x = torch.randn(2, 6, 5, 7)
    out = elementwise(gelu, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, torch.nn.functional.gelu(x))
    assert out.is_contiguous(memory_format=torch.channels_last) and seen == [True]


def test_channels_last_training_gives_the_same_gradients():
    """The channels-last step (1x1 convolutions as GEMMs) computes what the NCHW step does."""
    torch.manual_seed(0)
    model = randomize(swiftformer.create_model("swiftformer_xs", num_classes=5)).double().train()
    images = torch.randn(2, 3, 64, 96, dtype=torch.double)
    weights = torch.randn(2, 5, dtype=torch.double)

    def gradients(memory_format):
        model.zero_grad()
        model.to(memory_format=memory_format)
        loss = (model(images.contiguous(memory_format=memory_format)) * weights).sum()
        loss.backward()
        return loss, [p.grad.clone() for p in model.parameters()]

    loss, grads = gradients(torch.contiguous_format)
    loss_cl, grads_cl = gradients(torch.channels_last)
    torch.testing.assert_close(loss_cl, loss)
    for a, b in zip(grads_cl, grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_drop_path_only_in_training():
    model = swiftformer.create_model("swiftformer_xs", num_classes=4, drop_path_rate=0.5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_data_config_drives_preprocessing():
    model = swiftformer.create_model("swiftformer_xs")
    config = swiftformer.resolve_data_config(model)
    assert config["input_size"] == (3, 224, 224)
    assert config["crop_pct"] == 0.875
    assert config["interpolation"] == "bicubic"
    assert config["mean"] == (0.485, 0.456, 0.406)
    assert swiftformer.resolve_data_config(model, img_size=160)["input_size"] == (3, 160, 160)


@pytest.mark.parametrize("attention", ["mhsa", "transposed", "separable", "additive_legacy"])
def test_attention_zoo_inside_model(attention):
    model = swiftformer.create_model("swiftformer_xs", num_classes=3, attention=attention)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 3)
    for stage in model.stages:
        built = stage.blocks[-1].attn
        assert type(built) is type(build_attention(attention, 8))
        assert getattr(built, "legacy", False) == (attention == "additive_legacy")


def test_the_model_package_knows_no_file_formats():
    """Weights from files are read a layer above (swiftformer.pretrained); the networks stay format-free."""
    import ast
    from pathlib import Path

    package = Path(swiftformer.__file__).parent / "models"
    imported = {
        f"{'.' * node.level}{node.module or ''}"
        for path in package.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert not {name for name in imported if name.lstrip(".").startswith(("checkpoint", "convert", "pretrained"))}
    assert swiftformer.create_model.__module__ == "swiftformer.pretrained"
