"""Every attention path of MHSA2d computes the paper's function, forward and backward.

The paths: "chunked" (per head and query block, hand-written backward; the CPU default), "fold"
(one SDPA call with widened q / k), "bias" (an N x N additive bias), "auto" (chunked on CPU; fold
with gradients and bias without elsewhere). All are checked against the slow reference and
against each other.
"""
import pytest
import torch

from botnet.layers import MHSA2d
from botnet.layers import chunked_attention
from botnet.layers.attention import ATTN_IMPLS
from tests.layers.reference import reference_mhsa

SIZES = [(4, 6), (3, 3), (1, 5), (4, 1)]  # within the tables, as the reference needs


def _reference(m: MHSA2d, x: torch.Tensor) -> torch.Tensor:
    B, _, H, W = x.shape
    qkv = m.qkv(x).reshape(B, 3, m.heads, m.dim_head, H, W).permute(1, 0, 2, 4, 5, 3)
    out = reference_mhsa(qkv[0], qkv[1], qkv[2], m.rel_h, m.rel_w, m.dim_head**-0.5)
    return out.permute(0, 1, 4, 2, 3).reshape(B, m.heads * m.dim_head, H, W)


def _layer(impl: str, feat=(4, 6), dtype=torch.float64) -> MHSA2d:
    torch.manual_seed(3)
    m = MHSA2d(12, heads=3, feat_size=feat, attn_impl=impl).to(dtype)
    with torch.no_grad():
        m.rel_h.mul_(4)  # position terms large enough to matter
        m.rel_w.mul_(4)
    return m


def _grads(m: MHSA2d, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out = m(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in m.named_parameters()}}
    m.zero_grad(set_to_none=True)
    return {"out": out.detach(), **grads}


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("grad", [True, False])
def test_forward_matches_reference(impl, size, grad):
    m = _layer(impl)
    x = torch.randn(2, 12, *size, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out = m(x)
    torch.testing.assert_close(out, _reference(m, x).detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
@pytest.mark.parametrize("size", SIZES[:2])
def test_gradients_match_reference(impl, size):
    x = torch.randn(2, 12, *size, dtype=torch.float64)

    class Ref(torch.nn.Module):  # the reference with the same parameters, autograd throughout
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return _reference(self.m, x)

    m = _layer(impl)
    got = _grads(m, x)
    want = _grads(Ref(_layer(impl)), x)
    want = {k.removeprefix("m."): v for k, v in want.items()}
    for key in got:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-9, msg=f"{impl} {size} {key}")


def test_larger_map_than_tables_all_paths_agree():
    x = torch.randn(1, 12, 7, 9, dtype=torch.float64)
    results = {impl: _grads(_layer(impl, feat=(3, 4)), x) for impl in ATTN_IMPLS}
    for impl, got in results.items():
        for key, value in got.items():
            torch.testing.assert_close(value, results["bias"][key], rtol=1e-9, atol=1e-9, msg=f"{impl} {key}")


def test_auto_picks_chunked_on_cpu_and_fused_kernels_elsewhere():
    m = _layer("auto", dtype=torch.float32)
    x = torch.randn(1, 12, 4, 6)
    assert m.choose_path(m.project(x)) == "chunked"
    with torch.no_grad():
        assert m.choose_path(m.project(x)) == "chunked"
    meta = _layer("auto", dtype=torch.float32).to("meta")
    assert meta.choose_path(meta.project(x.to("meta"))) == "fold"
    with torch.no_grad():
        assert meta.choose_path(meta.project(x.to("meta"))) == "bias"


def test_chunked_plan_small_maps_all_heads_large_maps_per_head_blocks():
    plan = chunked_attention.plan_chunks
    assert plan(2, 3, 24, (4, 6)) == (3, 1)
    assert plan(2, 3, 4096, (64, 64)) == (1, 4096 // (chunked_attention.SCORES_PER_BLOCK // (2 * 4096)))


@pytest.mark.parametrize("feat, size, rows", [((4, 6), (4, 6), 5), ((40, 40), (1, 3), 1)])
def test_chunked_query_blocks_match_bias_path(feat, size, rows, monkeypatch):
    # one head at a time, queries split into blocks by the score budget (uneven blocks included)
    monkeypatch.setattr(chunked_attention, "MIN_BLOCK_ROWS", rows)
    monkeypatch.setattr(chunked_attention, "SCORES_PER_BLOCK", 2 * rows * size[0] * size[1])
    m = _layer("chunked", feat=feat)
    assert chunked_attention.plan_chunks(2, 3, size[0] * size[1], feat) == (1, -(-size[0] * size[1] // rows))
    x = torch.randn(2, 12, *size, dtype=torch.float64)
    chunked = _grads(m, x)
    m.attn_impl = "bias"
    bias = _grads(m, x)
    for key in chunked:
        torch.testing.assert_close(chunked[key], bias[key], rtol=1e-9, atol=1e-9, msg=key)


@pytest.mark.parametrize("impl", ["chunked", "fold", "bias"])
def test_channels_last_input_same_result(impl):
    m = _layer(impl, dtype=torch.float32)
    x = torch.randn(2, 12, 4, 6)
    a = _grads(m, x)
    b = _grads(m, x.contiguous(memory_format=torch.channels_last))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["chunked", "fold"])
def test_bf16_training_close_to_fp32(impl):
    m = _layer(impl, dtype=torch.float32)
    x = torch.randn(2, 12, 4, 6)
    full = _grads(m, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _grads(m, x)
    for key in full:
        scale = full[key].abs().max().item()
        torch.testing.assert_close(low[key].float(), full[key], rtol=0.05, atol=0.05 * scale, msg=key)


def test_qkv_bias_and_dim_head():
    torch.manual_seed(0)
    m = MHSA2d(8, heads=2, dim_head=5, feat_size=(3, 3), qkv_bias=True).double()
    with torch.no_grad():
        m.qkv.bias.normal_()
    x = torch.randn(2, 8, 3, 2, dtype=torch.float64)
    auto = _grads(m, x)
    m.attn_impl = "bias"
    bias = _grads(m, x)
    for key in auto:
        torch.testing.assert_close(auto[key], bias[key], rtol=1e-9, atol=1e-9, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_cuda_path_matches_cpu_path(impl):
    m = _layer(impl, dtype=torch.float32)
    x = torch.randn(2, 12, 5, 6)
    cpu = _grads(m, x)
    cuda = _grads(m.cuda(), x.cuda())
    for key in cpu:
        torch.testing.assert_close(cuda[key].cpu(), cpu[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_unscaled_position_term_matches_timm_default(impl):
    # scale_pos_embed=False: d^-0.5 q.k + q.R, timm BottleneckAttn's default; values and gradients
    from timm.layers.bottleneck_attn import BottleneckAttn

    torch.manual_seed(0)
    theirs = BottleneckAttn(24, 24, feat_size=(4, 6), num_heads=3, scale_pos_embed=False).double().eval()
    ours = MHSA2d(24, heads=3, feat_size=(4, 6), attn_impl=impl, scale_pos_embed=False).double()
    with torch.no_grad():
        theirs.pos_embed.height_rel.normal_()
        theirs.pos_embed.width_rel.normal_()
        ours.qkv.weight.copy_(theirs.qkv.weight)
        ours.rel_h.copy_(theirs.pos_embed.height_rel)
        ours.rel_w.copy_(theirs.pos_embed.width_rel)
    x = torch.randn(2, 24, 4, 6, dtype=torch.float64)
    got, want = _grads(ours, x), _grads(theirs, x)
    torch.testing.assert_close(got["out"], want["out"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["x"], want["x"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["rel_h"], want["pos_embed.height_rel"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["qkv.weight"], want["qkv.weight"], rtol=1e-9, atol=1e-9)
    paper = MHSA2d(24, heads=3, feat_size=(4, 6), attn_impl=impl).double()
    paper.load_state_dict(ours.state_dict())
    assert not torch.allclose(paper(x), got["out"])  # the option changes the function
