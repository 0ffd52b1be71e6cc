"""The FlexAttention path ("flex") of MHSA2d, and the rules by which "auto" picks a path.

On the CPU, PyTorch's FlexAttention compiles the forward only: float32 runs the compiled kernel
(the chunked path's backward), float64 runs FlexAttention's unfused maths (same score_mod). Both
are checked against the explicit reference of the paper's function (arXiv 2101.11605, section 3),
values and gradients; float32 to a stated tolerance of 1e-4 relative (float32 rounding through a
softmax of O(1) scores is about 1e-6). The gradients the CUDA path takes (autograd through the
captured position products, PyTorch's FlexAttention backward) are checked here too, in float64.
"""
import pytest
import torch

import botnet
from botnet.layers import MHSA2d, attention, chunked_attention, flex_attention
from botnet.layers.pos_embed import (
    rel_table_for_length,
    relative_bias_2d,
    relative_logits_2d,
    relative_products,
    token_positions,
)
from tests.layers.reference import reference_mhsa


def _layer(feat, dim=16, heads=2, impl="flex", dtype=torch.float64) -> MHSA2d:
    torch.manual_seed(3)
    m = MHSA2d(dim, heads=heads, feat_size=feat, attn_impl=impl).to(dtype)
    with torch.no_grad():
        m.qkv.weight.normal_(std=dim**-0.5)  # unit-scale q, k, v: a sharp attention
        m.rel_h.mul_(4)  # position terms large enough to matter
        m.rel_w.mul_(4)
    return m


def _reference(m: MHSA2d, x: torch.Tensor) -> torch.Tensor:
    # the slow reference with the tables resized to the map (exactly the tables at or below their
    # size), so that it covers maps larger than the tables too
    B, _, H, W = x.shape
    qkv = m.qkv(x).reshape(B, 3, m.heads, m.dim_head, H, W).permute(1, 0, 2, 4, 5, 3)
    rows_h, rows_w = rel_table_for_length(m.rel_h, H), rel_table_for_length(m.rel_w, W)
    out = reference_mhsa(qkv[0], qkv[1], qkv[2], rows_h, rows_w, m.dim_head**-0.5)
    return out.permute(0, 1, 4, 2, 3).reshape(B, m.heads * m.dim_head, H, W)


def _run(fn, params, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output and gradients (input and parameters) of ``fn(x)`` for a fixed cotangent."""
    x = x.detach().requires_grad_(True)
    out = fn(x)
    cotangent = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad(out, [x, *params.values()], cotangent)
    return {"out": out.detach(), "x": grads[0], **dict(zip(params, grads[1:]))}


def _params(m: MHSA2d) -> dict[str, torch.Tensor]:
    return dict(m.named_parameters())


def _assert_close(got: dict, want: dict, **tol) -> None:
    for key, value in want.items():
        torch.testing.assert_close(got[key].to(value.dtype), value, msg=lambda text, key=key: f"{key}: {text}", **tol)


# feat (table size), map size: at the table size, odd and non-square below it, a single row, larger
@pytest.mark.parametrize("feat, size", [((4, 6), (4, 6)), ((4, 6), (3, 5)), ((4, 6), (1, 5)), ((3, 4), (7, 9))])
def test_float64_values_and_gradients_match_reference(feat, size):
    m = _layer(feat)
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    got = _run(m, _params(m), x)
    want = _run(lambda x: _reference(m, x), _params(m), x)
    _assert_close(got, want, rtol=1e-9, atol=1e-9)


# 24 keys (8 more than a multiple of 16: the padded keys of the CPU kernel), head dim 8; and a map
# larger than its tables, 63 keys, head dim 4
@pytest.mark.parametrize("feat, size, dim, heads", [((4, 6), (4, 6), 16, 2), ((3, 4), (7, 9), 12, 3)])
def test_float32_compiled_kernel_matches_float64_reference(feat, size, dim, heads):
    m = _layer(feat, dim, heads, dtype=torch.float32)
    x = torch.randn(2, dim, *size)
    got = _run(m, _params(m), x)
    ref = _layer(feat, dim, heads)
    ref.load_state_dict(m.state_dict())
    want = _run(lambda x: _reference(ref, x), _params(ref), x.double())
    _assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert ("cpu", torch.float32, (2, heads, size[0] * size[1], dim // heads), *size) in flex_attention.compiled_families


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kind", ["products", "key_logits"])
def test_score_mod_adds_the_relative_logits_and_masks_padding(kind, padded):
    # the score_mod's index arithmetic, evaluated on every (query, key) pair at once, against the
    # gathered logits of pos_embed; padded: 15 keys padded to 16, the 16th scores -inf.
    # products: P_h, P_w (compiled models); key_logits: the chunked path's per-key logits (B, heads,
    # N, H), (.., W) read through the key position tables (the eager CPU path)
    torch.manual_seed(0)
    H, W, d = 3, 5, 4
    q = torch.randn(2, 2, H * W, d, dtype=torch.float64)
    rel_h, rel_w = torch.randn(2 * H - 1, d, dtype=torch.float64), torch.randn(2 * W - 1, d, dtype=torch.float64)
    logits_h, logits_w = (0.5 * t for t in relative_logits_2d(q, rel_h, rel_w, (H, W)))
    keys = H * W if padded else None
    if kind == "products":
        pos_h, pos_w = relative_products(q, rel_h, rel_w, 0.5)
        score_mod = flex_attention.relative_score_mod(pos_h, pos_w, keys)
    else:
        rows, cols = token_positions((H, W), "cpu", H * W + padded)
        score_mod = flex_attention.key_logits_score_mod(logits_h, logits_w, rows, cols, keys)
    b, h, qi, ki = torch.meshgrid(*[torch.arange(n) for n in (2, 2, H * W, H * W + padded)], indexing="ij")
    got = score_mod(torch.zeros(b.shape, dtype=torch.float64), b, h, qi, ki)
    torch.testing.assert_close(got[..., : H * W], relative_bias_2d(logits_h, logits_w))
    assert torch.isneginf(got[..., H * W:]).all()


def test_cpu_block_mask_tiles_the_kernel_without_masking():
    # PyTorch's CPU kernel holds one (query block x key block) score tile per thread: without a
    # block mask that tile is N x N, so the CPU path passes one of bounded blocks, all full
    mask = flex_attention.cpu_block_mask(300, 1040, "cpu")
    assert mask.BLOCK_SIZE == (flex_attention.CPU_Q_BLOCK, flex_attention.CPU_KV_BLOCK)
    assert mask.kv_num_blocks.sum() == 0  # no partial block: the mask function is never applied
    assert mask.full_kv_num_blocks.flatten().tolist() == [3] * 3
    assert mask.to_dense().all()


def test_float32_compiled_kernel_over_several_tiles_matches_float64_reference():
    # 23 x 25: 575 keys (padded to 576), several query and key blocks of the CPU kernel
    feat = (23, 25)
    m = _layer(feat, 16, 2, dtype=torch.float32)
    x = torch.randn(1, 16, *feat)
    got = _run(m, _params(m), x)
    ref = _layer(feat, 16, 2)
    ref.load_state_dict(m.state_dict())
    want = _run(lambda x: _reference(ref, x), _params(ref), x.double())
    _assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_cpu_bf16_autocast_as_close_to_float32_as_the_chunked_path():
    # bf16 on the CPU: the fused forward (bf16 q, k, v and per-key logits, float32 scores) and the
    # chunked backward; no further from float32 than the chunked path itself
    feat = (8, 8)
    x = torch.randn(2, 64, *feat)
    errors = {}
    for impl in ("flex", "chunked"):
        m = _layer(feat, 64, 2, impl=impl, dtype=torch.float32)
        full = _run(m, _params(m), x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = _run(m, _params(m), x)
        errors[impl] = {k: float((low[k].float() - v).norm() / v.norm()) for k, v in full.items()}
    for key, err in errors["flex"].items():
        assert err < max(0.03, 1.5 * errors["chunked"][key]), (key, errors)


def test_cuda_gradients_flow_through_the_captured_products(monkeypatch):
    # the CUDA branch of flex_attention.attend (autograd through FlexAttention's own backward, the
    # gradients of the captured products reaching q and the tables), run on the CPU in float64 by
    # lifting PyTorch's CPU-backward refusal: FlexAttention's unfused maths and backward
    monkeypatch.setattr(torch.nn.attention.flex_attention, "_validate_device", lambda *args: None)
    m = _layer((4, 6))
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)

    def cuda_branch(x):
        qkv = m.project(x)
        q, k, v = m.split_heads(qkv)
        rows_h, rows_w = rel_table_for_length(m.rel_h, 3), rel_table_for_length(m.rel_w, 5)
        pos_h, pos_w = relative_products(q, rows_h, rows_w, m.pos_scale)
        out = flex_attention.flex_relative_attention(q, k, v, pos_h, pos_w, m.scale)
        return out.transpose(1, 2).reshape(2, 3, 5, 16).permute(0, 3, 1, 2)

    got = _run(cuda_branch, _params(m), x)
    want = _run(lambda x: _reference(m, x), _params(m), x)
    _assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_whole_model_compiles_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    model = botnet.create_model("botnet_s1_tiny", num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, MHSA2d)]
    for m in layers:
        m.attn_impl = "flex"
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 64, 64)
    eager = _run(model, params, x)
    compiled = _run(torch.compile(model, fullgraph=True, backend="aot_eager"), params, x)
    _assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_layer_training_matches_eager():
    # inductor lowers FlexAttention (PyTorch's CPU kernel) inside the layer's graph, the chunked
    # backward beside it; one graph, no breaks
    torch._dynamo.reset()
    m = _layer((5, 6), dtype=torch.float32)
    x = torch.randn(2, 16, 5, 6)
    eager = _run(m, _params(m), x)
    compiled = _run(torch.compile(m, fullgraph=True), _params(m), x)
    _assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["bias", "flex"])
def test_no_op_allocates_a_full_score_map(impl, monkeypatch):
    # 48 x 48 (N = 2304): the chunked backward's blocks are about SCORES_PER_BLOCK scores, less than
    # one head's N x N; the fused forward holds tiles. The bias path is the control: it allocates
    # (B, heads, N, N), which this check sees.
    from torch.profiler import ProfilerActivity, profile

    m = _layer((48, 48), dim=32, heads=2, impl=impl, dtype=torch.float32)
    x = torch.randn(1, 32, 48, 48, requires_grad=True)
    m(x).sum().backward()  # compiles the kernel
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        m(x).sum().backward()
    largest = max(e.self_cpu_memory_usage for e in prof.events())
    full_map = (48 * 48) ** 2 * 4  # one head's scores in float32
    assert (largest < full_map) == (impl == "flex"), (largest, full_map)
    assert chunked_attention.plan_chunks(1, 2, 48 * 48, (48, 48))[1] > 1


# -- the rules of "auto" --------------------------------------------------------------------------

@pytest.mark.parametrize("d, h, w, flex_ok, want", [
    (128, 7, 7, True, "fold"),      # 224 classification: widened 142 <= 1.25 d
    (128, 16, 16, True, "fold"),    # widened 160 = 1.25 d
    (128, 32, 32, True, "flex"),    # 1024 canvas, c5 after the strided block
    (128, 64, 64, True, "flex"),    # 1024 canvas, first c5 block (the fold would be 256)
    (128, 80, 80, True, "flex"),    # 1280 canvas: the fold's 288 is past the flash kernels
    (128, 64, 64, False, "fold"),   # no Triton: the fold still fits (256)
    (128, 80, 80, False, "chunked"),  # no Triton, no room for the fold: never N x N
    (8, 4, 4, True, "flex"),        # tiny models: 16 > 1.25 * 8
])
def test_cuda_rule(d, h, w, flex_ok, want):
    assert attention.cuda_attn_impl(d, h, w, flex_ok) == want


@pytest.mark.parametrize("amx", [False, True])
def test_cpu_rule_by_capability(amx, monkeypatch):
    monkeypatch.setattr(attention, "CPU_HAS_AMX", amx)
    monkeypatch.setattr(attention, "flex_available", lambda device_type: True)  # not a reason to take flex
    m = _layer((4, 6), impl="auto", dtype=torch.float32)
    x = torch.randn(1, 16, 4, 6)
    picks = {}
    for dtype in (torch.float32, torch.bfloat16):
        for training in (True, False):
            with (torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
                  torch.set_grad_enabled(training)):
                picks[dtype, training] = m.choose_path(m.project(x))
    if not amx:  # AMD EPYC (AVX2): the chunked path everywhere, as before
        assert set(picks.values()) == {"chunked"}
    else:  # the AMX table: the faster measured path, chunked in fp32 and the fold in bf16
        assert picks == {(torch.float32, True): "chunked", (torch.bfloat16, True): "fold",
                         (torch.float32, False): "chunked", (torch.bfloat16, False): "fold"}


# -- CUDA (skipped without a device; benchmarks/gpu_check.py runs these) ----------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("feat, size, dim, heads", [((4, 6), (4, 6), 16, 2), ((3, 4), (7, 9), 64, 2)])
def test_cuda_flex_matches_float64_reference(feat, size, dim, heads, monkeypatch):
    # head dim 8 (zero-padded to the kernels' 16) and 32; float32 without TF32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = _layer(feat, dim, heads, dtype=torch.float32).cuda()
    x = torch.randn(2, dim, *size)
    got = _run(m, _params(m), x.cuda())
    ref = _layer(feat, dim, heads)
    ref.load_state_dict(m.state_dict())
    want = _run(lambda x: _reference(ref, x), _params(ref), x.double())
    _assert_close({k: v.cpu() for k, v in got.items()}, want, rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("impl", ["auto", "flex", "fold"])
def test_cuda_bf16_autocast_close_to_float32(impl):
    m = _layer((8, 8), 64, 2, impl=impl, dtype=torch.float32).cuda()
    x = torch.randn(2, 64, 8, 8, device="cuda")
    full = _run(m, _params(m), x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = _run(m, _params(m), x)
    for key, want in full.items():
        assert float((low[key].float() - want).norm() / want.norm()) < 0.03, key


@needs_cuda
def test_cuda_compiled_model_matches_eager():
    # auto on CUDA (fold or flex by the map sizes), channels_last, inductor, one graph
    torch.manual_seed(0)
    model = botnet.create_model("botnet_s1_tiny", num_classes=10).cuda().to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
    eager = _run(model, params, x)
    compiled = _run(torch.compile(model, fullgraph=True), params, x)
    _assert_close(compiled, eager, rtol=1e-3, atol=1e-4)
