"""Parity with the reference implementations through the converters (eval mode, ≤ 1e-5)."""
import pytest
import timm
import torch

import swiftformer
from swiftformer.convert import detect_format, from_native, hf_to_native, native_to_official, official_to_native, to_native

from .conftest import VARIANT_NAMES, randomize

HF_CONFIGS = {
    "swiftformer_xs": ([3, 3, 6, 4], [48, 56, 112, 220]),
    "swiftformer_s": ([3, 3, 9, 6], [48, 64, 168, 224]),
    "swiftformer_l1": ([4, 3, 10, 5], [48, 96, 192, 384]),
    "swiftformer_l3": ([4, 4, 12, 6], [64, 128, 320, 512]),
}


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_timm_parity_both_directions(name, small_images):
    images = small_images
    ours = randomize(swiftformer.create_model(name), seed=3)
    theirs = timm.create_model(name, pretrained=False).eval()
    theirs.load_state_dict(from_native(ours.state_dict(), "timm"))
    with torch.no_grad():
        assert (ours(images) - theirs(images)).abs().max() <= 1e-5
    # and back: timm weights into a fresh model of ours
    randomize(theirs, seed=4)
    back = swiftformer.create_model(name).eval()
    back.load_state_dict(to_native(theirs.state_dict()))
    with torch.no_grad():
        assert (back(images) - theirs(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_hf_transformers_parity_with_legacy_attention(name, small_images):
    images = small_images
    transformers = pytest.importorskip("transformers")
    depths, widths = HF_CONFIGS[name]
    config = transformers.SwiftFormerConfig(depths=depths, embed_dims=widths, num_labels=1000)
    theirs = randomize(transformers.SwiftFormerForImageClassification(config), seed=5)
    ours = swiftformer.create_model(name, attention="additive_legacy").eval()
    assert detect_format(theirs.state_dict()) == "hf"
    ours.load_state_dict(hf_to_native(theirs.state_dict()))
    with torch.no_grad():
        assert (ours(images) - theirs(pixel_values=images).logits).abs().max() <= 1e-5
        # and back: ours -> HF keys -> transformers
        randomize(ours, seed=6)
        theirs.load_state_dict(from_native(ours.state_dict(), "hf"))
        assert (ours(images) - theirs(pixel_values=images).logits).abs().max() <= 1e-5


def test_hf_weights_differ_under_current_attention(images):
    """The two attention generations really compute different things on the same weights."""
    legacy = randomize(swiftformer.create_model("swiftformer_xs", attention="additive_legacy"))
    current = swiftformer.create_model("swiftformer_xs").eval()
    current.load_state_dict(legacy.state_dict())
    with torch.no_grad():
        assert (legacy(images) - current(images)).abs().max() > 1e-3


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_official_round_trip_is_identity(name):
    native = randomize(swiftformer.create_model(name)).state_dict()
    official = native_to_official(native)
    assert detect_format(official) == "official"
    assert all(k.startswith(("patch_embed.", "network.", "norm.", "head.", "dist_head.")) for k in official)
    assert any(".attn.Proj." in k for k in official)
    assert any(k.endswith(".layer_scale") for k in official)
    native_again = official_to_native(official)
    assert native_again.keys() == native.keys()
    assert all(torch.equal(native_again[k], native[k]) for k in native)
    official_again = native_to_official(native_again)
    assert list(official_again) == list(official)
    assert all(torch.equal(official_again[k], official[k]) for k in official)


def test_official_layout_interleaves_downsampling():
    official = native_to_official(swiftformer.create_model("swiftformer_xs").state_dict())
    # network.0 = stage 0 blocks, network.1 = downsampling into stage 1, ..., network.6 = stage 3 blocks
    assert official["network.1.proj.weight"].shape == (56, 48, 3, 3)
    assert official["network.6.3.attn.w_g"].shape == (220, 1)
    assert official["network.0.0.layer_scale"].shape == (48, 1, 1)
    assert official["network.6.3.layer_scale_1"].shape == (220, 1, 1)
