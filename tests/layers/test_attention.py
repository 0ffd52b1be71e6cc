import pytest
import torch

from botnet.layers import MHSA2d
from botnet.layers.attention import ATTN_IMPLS
from tests.layers.reference import reference_mhsa


def _qkv_grid(m: MHSA2d, x: torch.Tensor):
    B, _, H, W = x.shape
    qkv = m.qkv(x).reshape(B, 3, m.heads, m.dim_head, H, W).permute(1, 0, 2, 4, 5, 3)
    return qkv[0], qkv[1], qkv[2]  # (B, heads, H, W, d)


def _from_grid(out):
    B, heads, H, W, d = out.shape
    return out.permute(0, 1, 4, 2, 3).reshape(B, heads * d, H, W)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("size", [(5, 7), (3, 4), (1, 1), (5, 2), (2, 6)])
def test_matches_reference_at_and_below_table_size(impl, size):
    m = MHSA2d(12, heads=3, feat_size=(5, 7), attn_impl=impl).double()
    x = torch.randn(2, 12, *size, dtype=torch.float64)
    q, k, v = _qkv_grid(m, x)
    expected = _from_grid(reference_mhsa(q, k, v, m.rel_h, m.rel_w, m.dim_head**-0.5))
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_larger_map_uses_interpolated_tables(impl):
    m = MHSA2d(8, heads=2, feat_size=(3, 2), attn_impl=impl).double()
    x = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    big = MHSA2d(8, heads=2, feat_size=(6, 5), attn_impl=impl).double()
    big.qkv.load_state_dict(m.qkv.state_dict())
    with torch.no_grad():
        big.rel_h.copy_(torch.nn.functional.interpolate(m.rel_h.t()[None], size=11, mode="linear",
                                                        align_corners=True)[0].t())
        big.rel_w.copy_(torch.nn.functional.interpolate(m.rel_w.t()[None], size=9, mode="linear",
                                                        align_corners=True)[0].t())
    torch.testing.assert_close(m(x), big(x))


def test_paths_agree_and_differ_from_no_position():
    x = torch.randn(2, 16, 4, 6)
    outs = {}
    for impl in ATTN_IMPLS:
        torch.manual_seed(1)
        outs[impl] = MHSA2d(16, heads=4, feat_size=(4, 6), attn_impl=impl)(x)
    torch.testing.assert_close(outs["fold"], outs["bias"], rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    m = MHSA2d(16, heads=4, feat_size=(4, 6))
    with torch.no_grad():
        m.rel_h.mul_(20)  # a position term that matters
    plain = MHSA2d(16, heads=4, pos_enc=None)
    plain.qkv.load_state_dict(m.qkv.state_dict())
    assert not torch.allclose(m(x), plain(x), atol=1e-3)


def test_absolute_encoding_adds_q_dot_embedding():
    m = MHSA2d(8, heads=2, pos_enc="absolute", feat_size=(3, 4)).double()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    q, k, v = _qkv_grid(m, x)
    emb = m.abs_h[:, None, :] + m.abs_w[None, :, :]  # (H, W, d)
    logits = torch.einsum("bnhwd,bnxyd->bnhwxy", q, k + emb) * m.dim_head**-0.5
    att = logits.flatten(-2).softmax(-1)
    expected = torch.einsum("bnhwk,bnkd->bnhwd", att, v.flatten(2, 3))
    torch.testing.assert_close(m(x), _from_grid(expected))


def test_matches_timm_bottleneck_attn():
    from timm.layers.bottleneck_attn import BottleneckAttn

    timm_layer = BottleneckAttn(32, 32, feat_size=(6, 5), num_heads=4, scale_pos_embed=True).double().eval()
    ours = MHSA2d(32, heads=4, feat_size=(6, 5)).double()
    with torch.no_grad():
        ours.qkv.weight.copy_(timm_layer.qkv.weight)
        ours.rel_h.copy_(timm_layer.pos_embed.height_rel)
        ours.rel_w.copy_(timm_layer.pos_embed.width_rel)
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), timm_layer(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_gradcheck_float64(impl):
    m = MHSA2d(4, heads=2, feat_size=(3, 2), attn_impl=impl).double()
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = (m.qkv.weight, m.rel_h, m.rel_w)

    def f(x, w, rh, rw):
        return torch.func.functional_call(m, {"qkv.weight": w, "rel_h": rh, "rel_w": rw}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_output_shape_and_dim_head():
    m = MHSA2d(24, heads=3, dim_head=5, feat_size=4)
    assert m(torch.randn(2, 24, 4, 3)).shape == (2, 15, 4, 3)
    assert m.qkv.weight.shape == (45, 24, 1, 1)
    assert m.rel_h.shape == (7, 5) and m.rel_w.shape == (7, 5)


@pytest.mark.parametrize("shape", [(2, 8, 4), (2, 7, 4, 4)])
def test_bad_input_says_expected_shape(shape):
    m = MHSA2d(8, heads=2, feat_size=4)
    with pytest.raises(ValueError, match=r"expects a \(B, 8, H, W\)"):
        m(torch.randn(*shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="feat_size"):
        MHSA2d(8, heads=2)
    with pytest.raises(ValueError, match="pos_enc"):
        MHSA2d(8, pos_enc="rotary", feat_size=4)
    with pytest.raises(ValueError, match="divisible"):
        MHSA2d(10, heads=4, feat_size=4)


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().float() - want.detach()).norm() / want.detach().norm())


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_bf16_autocast_close_to_fp32(impl):
    # q, k, v of unit scale (the init's N(0, 0.01) makes every output tiny and the softmax uniform):
    # the attention is sharp, the outputs are O(1), and an all-zero or position-free output is far
    # outside the tolerance (checked below)
    m = MHSA2d(32, heads=4, feat_size=(8, 8), attn_impl=impl)
    with torch.no_grad():
        m.qkv.weight.normal_(std=32**-0.5)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    grad = torch.randn(2, 32, 8, 8)
    ref = m(x)
    ref_grads = torch.autograd.grad(ref, (x, m.qkv.weight, m.rel_h), grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    low_grads = torch.autograd.grad(low, (x, m.qkv.weight, m.rel_h), grad)
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4 %); the paths measure 0.5-0.7 %
    # on the output and 0.7-1.0 % on the gradients
    assert _relative_error(low, ref.detach()) < 0.02
    assert (low.float() - ref).abs().max() < 0.03 * ref.abs().max()
    for got, want in zip(low_grads, ref_grads):
        assert _relative_error(got, want) < 0.03
    # the tolerance sees the attention: zeros, or the same layer without its position term, fail it
    assert _relative_error(torch.zeros_like(ref), ref.detach()) == 1.0
    plain = MHSA2d(32, heads=4, pos_enc=None)
    plain.qkv.load_state_dict(m.qkv.state_dict())
    assert _relative_error(plain(x).detach(), ref.detach()) > 0.1
