"""Property tests (hypothesis): converters round-trip, and the fused form agrees at any supported size."""
import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import swiftformer
from swiftformer.convert import FORMATS, detect_format, from_native, to_native

from .conftest import VARIANT_NAMES, randomize


@functools.lru_cache(maxsize=8)
def random_state_dict(name: str, num_classes: int, distillation: bool) -> dict:
    model = swiftformer.create_model(name, num_classes=num_classes, distillation=distillation)
    return randomize(model, seed=num_classes).state_dict()


@settings(max_examples=16, deadline=None)
@given(
    name=st.sampled_from(VARIANT_NAMES),
    num_classes=st.integers(min_value=1, max_value=2000),
    distillation=st.booleans(),
    fmt=st.sampled_from(FORMATS),
)
def test_converters_round_trip(name, num_classes, distillation, fmt):
    native = random_state_dict(name, num_classes, distillation)
    converted = from_native(native, fmt)
    assert detect_format(converted) == ("native" if fmt == "timm" else fmt)
    back = to_native(converted)
    assert list(back) == list(native)
    assert all(torch.equal(back[k], native[k]) for k in native)


@functools.lru_cache(maxsize=2)
def model_and_fused(name: str, attention: str):
    model = randomize(swiftformer.create_model(name, num_classes=10, attention=attention), seed=3)
    return model, swiftformer.reparameterize(model)


@settings(max_examples=12, deadline=None)
@given(
    height=st.integers(min_value=32, max_value=320),
    width=st.integers(min_value=32, max_value=320),
    batch=st.integers(min_value=1, max_value=3),
    attention=st.sampled_from(["additive", "additive_legacy"]),
)
def test_fused_form_agrees_at_any_size(height, width, batch, attention):
    model, fused = model_and_fused("swiftformer_xs", attention)
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() <= 1e-4
