"""Each attention against a straightforward formula written out with loops and einsum."""
import math

import pytest
import torch

from swiftformer.models.attention import (
    EfficientAdditiveAttention,
    MultiHeadSelfAttention,
    SeparableSelfAttention,
    TransposedSelfAttention,
    build_attention,
)
from swiftformer.models.fused import l2_normalize_

B, N, C = 2, 13, 16


@pytest.fixture
def tokens():
    return torch.randn(B, N, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def split_qkv(x, layer):
    qkv = linear(x, layer)
    return qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]


def test_l2_normalize_equals_f_normalize(tokens):
    torch.testing.assert_close(l2_normalize_(tokens.clone(), dim=-1), torch.nn.functional.normalize(tokens, dim=-1))
    zeros = torch.zeros(2, 3)
    assert torch.equal(l2_normalize_(zeros.clone(), dim=-1), zeros)


def test_in_place_l2_normalize(tokens):
    expected = torch.nn.functional.normalize(tokens, dim=-1)
    copy = tokens.clone()
    assert l2_normalize_(copy, dim=-1) is copy  # eager inference: normalised in place
    torch.testing.assert_close(copy, expected)
    leaf = tokens.clone().requires_grad_()
    out = l2_normalize_(leaf * 1.0, dim=-1)  # autograd: a new tensor, gradients flow
    out.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    torch.testing.assert_close(out.detach(), expected)


def test_exported_fused_attention_has_only_primitive_normalisation():
    fused = EfficientAdditiveAttention(C).reparameterize().eval()
    program = torch.export.export(fused, (torch.randn(1, N, C),))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.rsqrt.default" in ops
    assert not any("norm" in op or "div_" in op or "baddbmm" in op for op in ops), ops


@pytest.mark.parametrize("legacy", [False, True])
def test_additive_attention_formula(tokens, legacy):
    attn = EfficientAdditiveAttention(C, legacy=legacy).double()
    out = torch.empty_like(tokens)
    for b in range(B):
        q = linear(tokens[b], attn.to_query)
        k = linear(tokens[b], attn.to_key)
        q = q / q.norm(dim=1, keepdim=True)
        k = k / k.norm(dim=1, keepdim=True)
        if legacy:  # softmax over a size-1 axis: every weight is 1
            a = torch.ones(N)
        else:
            a = torch.stack([q[n] @ attn.w_g[:, 0] / math.sqrt(C) for n in range(N)])
            a = a / a.norm()
        g = sum(a[n] * q[n] for n in range(N))
        out[b] = linear(linear(g * k, attn.proj) + q, attn.final)
    torch.testing.assert_close(attn(tokens), out)


@pytest.mark.parametrize("legacy", [False, True])
def test_fused_additive_attention_matches(tokens, legacy):
    attn = EfficientAdditiveAttention(C, legacy=legacy).double()
    scale = torch.rand(C, dtype=torch.float64) + 0.5
    fused = attn.reparameterize(scale)
    expected = attn(tokens) * scale
    torch.testing.assert_close(fused(tokens.clone()), expected)  # eager: in-place normalisation, baddbmm
    torch.testing.assert_close(fused.forward_exportable(tokens), expected)  # what export and tracing see


def test_exported_fused_attention_does_not_overflow_in_fp16(tokens):
    """fp16 artefacts (OpenVINO f16, Core ML on the Neural Engine) run the exportable form in half precision: a
    trained XS's last attention has sum(q²) ~ 6e6, beyond fp16's 65504, which made every token's norm infinite."""
    attn = EfficientAdditiveAttention(C).double()
    fused = attn.reparameterize(torch.ones(C, dtype=torch.float64))
    large = tokens * 300  # |q| in the hundreds, sum(q²) in the millions: inf in fp16 if squared unscaled
    expected = attn(large)
    half = fused.float().half().forward_exportable(large.half()).double()
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))
    zero = fused.float().half().forward_exportable(torch.zeros(B, N, C, dtype=torch.half))
    assert torch.isfinite(zero).all()  # F.normalize maps a zero vector to zero, not to NaN


def test_mhsa_formula(tokens):
    heads = 4
    attn = MultiHeadSelfAttention(C, heads).double()
    d = C // heads
    q, k, v = split_qkv(tokens, attn.qkv)
    out = torch.empty_like(tokens)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d), dim=-1)  # (B, N, N)
        out[..., s] = weights @ v[..., s]
    torch.testing.assert_close(attn(tokens), linear(out, attn.proj))


def test_transposed_attention_formula(tokens):
    heads = 4
    attn = TransposedSelfAttention(C, heads).double()
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1))
    d = C // heads
    q, k, v = split_qkv(tokens, attn.qkv)
    out = torch.empty_like(tokens)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        qh = q[..., s] / q[..., s].norm(dim=1, keepdim=True)  # normalised over tokens
        kh = k[..., s] / k[..., s].norm(dim=1, keepdim=True)
        weights = torch.softmax(attn.temperature[h] * torch.einsum("bnc,bnd->bcd", qh, kh), dim=-1)  # (B, d, d)
        out[..., s] = torch.einsum("bcd,bnd->bnc", weights, v[..., s])
    torch.testing.assert_close(attn(tokens), linear(out, attn.proj))


def test_separable_attention_formula(tokens):
    attn = SeparableSelfAttention(C).double()
    qkv = linear(tokens, attn.qkv)
    scores, key, value = qkv[..., 0], qkv[..., 1 : 1 + C], qkv[..., 1 + C :]
    weights = torch.softmax(scores, dim=1)  # over tokens
    context = torch.einsum("bn,bnc->bc", weights, key)
    expected = linear(torch.relu(value) * context[:, None], attn.out_proj)
    torch.testing.assert_close(attn(tokens), expected)


@pytest.mark.parametrize("name", ["additive", "additive_legacy", "mhsa", "transposed", "separable"])
def test_one_calling_convention(name, tokens):
    attn = build_attention(name, C).double()
    assert attn(tokens).shape == tokens.shape


def test_unknown_attention():
    with pytest.raises(ValueError, match="unknown attention 'linformer'"):
        build_attention("linformer", C)
