"""Each path of MHSA2d is chosen by its name, and the qr-only ablation ("relative_only": relative
logits, no content logits; arXiv 2101.11605, section 6) is computed by every path.

The qr-only function is checked against the slow reference of tests/layers/reference.py with k
set to zero (its logits are then exactly scale * q.R), and its logits against a direct loop over
query and key positions.
"""
import pytest
import torch

from botnet.layers import MHSA2d
from botnet.layers.attention import ATTN_IMPLS, PATHS, POS_ENCODINGS
from tests.layers.reference import reference_mhsa


def _layer(impl="auto", pos_enc="relative_only", feat=(4, 6), dtype=torch.float64) -> MHSA2d:
    torch.manual_seed(5)
    m = MHSA2d(12, heads=3, feat_size=feat, attn_impl=impl, pos_enc=pos_enc).to(dtype)
    with torch.no_grad():
        m.qkv.weight.normal_(std=12**-0.5)  # unit-scale q, k, v: a sharp attention
        m.rel_h.mul_(4)
        m.rel_w.mul_(4)
    return m


def _qr_only_reference(m: MHSA2d, x: torch.Tensor) -> torch.Tensor:
    B, _, H, W = x.shape
    qkv = m.qkv(x).reshape(B, 3, m.heads, m.dim_head, H, W).permute(1, 0, 2, 4, 5, 3)
    out = reference_mhsa(qkv[0], torch.zeros_like(qkv[1]), qkv[2], m.rel_h, m.rel_w, m.dim_head**-0.5)
    return out.permute(0, 1, 4, 2, 3).reshape(B, m.heads * m.dim_head, H, W)


def _grads(fn, m: MHSA2d, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out = fn(x)
    params = dict(m.named_parameters())
    cotangent = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad(out, [x, *params.values()], cotangent, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [x, *params.values()])]
    return {"out": out.detach(), "x": grads[0], **dict(zip(params, grads[1:]))}


@pytest.mark.parametrize("impl", ATTN_IMPLS[1:])
def test_each_name_runs_its_own_path(impl, monkeypatch):
    m = _layer(impl, pos_enc="relative")
    x = torch.randn(1, 12, 4, 6, dtype=torch.float64)
    taken = []
    monkeypatch.setitem(PATHS, impl, lambda layer, qkv, size, f=PATHS[impl]: taken.append(impl) or f(layer, qkv, size))
    m(x)
    assert m.choose_path(m.project(x)) == impl and taken == [impl]


def test_non_relative_encodings_take_the_plain_path_and_plain_is_not_a_choice():
    for pos_enc in (None, "absolute"):
        m = MHSA2d(12, heads=3, feat_size=(4, 6), pos_enc=pos_enc, attn_impl="chunked")
        assert m.choose_path(m.project(torch.randn(1, 12, 4, 6))) == "plain"
    assert "plain" in PATHS and "plain" not in ATTN_IMPLS
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        MHSA2d(12, heads=3, feat_size=(4, 6), attn_impl="plain")


def test_relative_only_logits_are_the_position_term_alone():
    m = _layer()
    H, W = 3, 5
    x = torch.randn(2, 12, H, W, dtype=torch.float64)
    logits = m.logits(x)  # (B, heads, N, N)
    B = x.shape[0]
    q = m.qkv(x)[:, : m.out_dim].reshape(B, m.heads, m.dim_head, H, W)
    hr, wr = m.feat_size
    want = torch.empty(B, m.heads, H * W, H * W, dtype=torch.float64)
    for a in range(H):
        for b in range(W):
            for c in range(H):
                for e in range(W):
                    r = m.rel_h[c - a + hr - 1] + m.rel_w[e - b + wr - 1]  # the table rows of the offsets
                    want[:, :, a * W + b, c * W + e] = m.dim_head**-0.5 * torch.einsum("bnd,d->bn", q[..., a, b], r)
    torch.testing.assert_close(logits, want, rtol=1e-10, atol=1e-10)
    # no content term: the keys do not enter; with them (the BoTNet's encoding) the logits change
    with torch.no_grad():
        m.qkv.weight[m.out_dim: 2 * m.out_dim].normal_()
    torch.testing.assert_close(m.logits(x), want, rtol=1e-10, atol=1e-10)
    both = _layer(pos_enc="relative")
    both.load_state_dict(m.state_dict())
    assert not torch.allclose(both.logits(x), want)
    torch.testing.assert_close(both.logits(x, content=False), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("size", [(4, 6), (3, 5), (1, 4)])
def test_relative_only_every_path_matches_reference(impl, size):
    m = _layer(impl)
    x = torch.randn(2, 12, *size, dtype=torch.float64)
    got, want = _grads(m, m, x), _grads(lambda x: _qr_only_reference(m, x), m, x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-9, msg=f"{impl} {size} {key}")


def test_relative_only_larger_map_all_paths_agree():
    x = torch.randn(1, 12, 7, 9, dtype=torch.float64)
    results = {impl: _grads(_layer(impl, feat=(3, 4)), _layer(impl, feat=(3, 4)), x) for impl in ATTN_IMPLS}
    for impl, got in results.items():
        for key, value in got.items():
            torch.testing.assert_close(value, results["bias"][key], rtol=1e-9, atol=1e-9, msg=f"{impl} {key}")


@pytest.mark.parametrize("impl", ["chunked", "fold", "bias"])
def test_relative_only_float32_and_bf16(impl):
    m = _layer(impl, dtype=torch.float32)
    x = torch.randn(2, 12, 4, 6)
    full = _grads(m, m, x)
    ref = _layer(impl)
    ref.load_state_dict(m.state_dict())
    want = _grads(lambda x: _qr_only_reference(ref, x), ref, x.double())
    for key in want:
        torch.testing.assert_close(full[key].double(), want[key], rtol=1e-4, atol=1e-5, msg=key)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _grads(m, m, x)
    for key in full:
        err = float((low[key].float() - full[key]).norm() / full[key].norm().clamp(min=1e-12))
        assert err < 0.03, (key, err)


def test_relative_only_differs_from_the_other_encodings():
    x = torch.randn(1, 12, 4, 6, dtype=torch.float64)
    m = _layer()
    outs = {}
    for pos_enc in POS_ENCODINGS:
        other = MHSA2d(12, heads=3, feat_size=(4, 6), pos_enc=pos_enc).double()
        other.load_state_dict(m.state_dict(), strict=False)
        outs[pos_enc] = other(x)
    for pos_enc in ("relative", None):
        assert not torch.allclose(outs["relative_only"], outs[pos_enc])


def test_relative_only_flex_compiled_kernel_matches_reference():
    # float32 on the CPU runs FlexAttention's compiled kernel (float64 above runs its unfused
    # maths): scale 0 on q.k leaves the score_mod's position logits alone
    m = _layer("flex", dtype=torch.float32)
    x = torch.randn(2, 12, 4, 6)
    got = _grads(m, m, x)
    ref = _layer("flex")
    ref.load_state_dict(m.state_dict())
    want = _grads(lambda x: _qr_only_reference(ref, x), ref, x.double())
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_relative_only_cuda_matches_reference(impl, monkeypatch):
    # float32 without TF32 on the device against the float64 reference on the CPU
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = _layer(impl, dtype=torch.float32).cuda()
    x = torch.randn(2, 12, 5, 6)
    got = _grads(m, m, x.cuda())
    ref = _layer(impl, feat=(4, 6))
    ref.load_state_dict(m.state_dict())
    want = _grads(lambda x: _reference_any_size(ref, x), ref, x.double())
    for key in want:
        torch.testing.assert_close(got[key].cpu().double(), want[key], rtol=1e-4, atol=1e-5, msg=key)


def _reference_any_size(m: MHSA2d, x: torch.Tensor) -> torch.Tensor:
    # the qr-only reference on tables resized to the map (a 5-row map is larger than 4-row tables)
    from botnet.layers.pos_embed import rel_table_for_length

    B, _, H, W = x.shape
    qkv = m.qkv(x).reshape(B, 3, m.heads, m.dim_head, H, W).permute(1, 0, 2, 4, 5, 3)
    rows_h, rows_w = rel_table_for_length(m.rel_h, H), rel_table_for_length(m.rel_w, W)
    out = reference_mhsa(qkv[0], torch.zeros_like(qkv[1]), qkv[2], rows_h, rows_w, m.dim_head**-0.5)
    return out.permute(0, 1, 4, 2, 3).reshape(B, m.heads * m.dim_head, H, W)
