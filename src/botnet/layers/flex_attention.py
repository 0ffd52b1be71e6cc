"""Relative attention through PyTorch's FlexAttention: the "flex" path of :class:`~botnet.layers.MHSA2d`.

The relative term of arXiv 2101.11605 (section 3, figure 4) enters the fused kernel as a
``score_mod``. With ``P_h = q . R_h^T`` (B, heads, N, 2H - 1) and ``P_w = q . R_w^T``
(B, heads, N, 2W - 1), the products of every query with every table row (times the layer's
``pos_scale``), the score of query token q at (a, b) and key token k at (c, e) on an H x W map
(token = row * W + col), in image i and head h, is

    score(q, k) = scale * q.k + P_h[i, h, q, c - a + H - 1] + P_w[i, h, q, e - b + W - 1]

reading the table rows of the offsets key - query (:func:`~botnet.layers.pos_embed.relative_token_index`;
the products are :func:`~botnet.layers.pos_embed.relative_products`). The kernel forms scores a
tile at a time and reads the two small tensors per score, so no (N x N) tensor exists at any size, and the head dim stays d (the fold widens it to d + H + W). ``P_h`` and
``P_w`` are matmul outputs taken as they are (no gather into per-key logits): inductor's CPU
kernel mis-reads captured tensors that are still pending pointwise results inside a compiled model.

Devices:

- CUDA (and other devices with a FlexAttention backward): PyTorch's compiled kernels forward and
  backward; the gradients of the captured ``P_h``, ``P_w`` flow to q and the tables by autograd.
  Head dims under ``MIN_HEAD_DIM`` (small test models) are zero-padded to it.
- CPU: PyTorch compiles FlexAttention's forward only (its CPU backward is not implemented), so the
  forward is the fused kernel and the backward is the chunked path's (the same function: it
  recomputes blocks of probabilities from q, k and the tables, at most
  ``chunked_attention.SCORES_PER_BLOCK`` scores at a time). PyTorch's CPU kernel (torch 2.14)
  computes wrong rows when the key count is 8 more than a multiple of 16, so on the CPU the keys
  are padded to a multiple of ``CPU_KEY_MULTIPLE`` and the padded keys score -inf (no weight). The CPU kernel takes float32, bfloat16 and float16; float64 (tests) runs
  FlexAttention's unfused reference maths instead, which holds the (N x N) scores.
  The CPU kernel's score tile is its block mask's block: the CPU path passes one of
  ``CPU_Q_BLOCK`` x ``CPU_KV_BLOCK`` blocks (PyTorch's default without a mask is a single block of
  the whole sequence: an N x N float32 tile per thread, and a bf16 copy of it in bf16).
  Eager CPU calls (the training layer) also take q as a token-major copy, so the kernel's output
  is token-major as returned (FlexAttention lays the output out like q), leave k and v views of the
  projection, and add the chunked path's per-key logits (B, heads, N, H) and (B, heads, N, W)
  (:func:`key_logits_score_mod`: half the size of ``P_h``, ``P_w``, no index arithmetic on q):
  the forward then holds no more than the chunked backward does (``benchmarks/attention_layer.py``
  reports the peak memory).

Eager calls go through one ``torch.compile`` of :func:`_attend` with static shapes, so each shape
family (device, dtype, batch, heads, H, W, d) is compiled once, on first use; inside a compiled
model the FlexAttention call is traced into the model's graph instead.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from botnet.layers.chunked_attention import chunked_backward, plan_chunks
from botnet.layers.pos_embed import (
    expand_rel_table,
    rel_table_for_length,
    relative_logits_expanded,
    relative_products,
    relative_token_index,
    token_positions,
)

#: on the CPU the key count is padded to a multiple of this (see the module docstring)
CPU_KEY_MULTIPLE = 16
#: on the CPU, the query and key block sizes of the block mask passed to FlexAttention: PyTorch's
#: CPU kernel works in tiles of exactly these (a float32 (query block x key block) score tile per
#: thread, plus a reduced-precision copy of it for bf16 / fp16 inputs). Without a block mask PyTorch
#: makes one block of the whole sequence, so every thread held an N x N tile: at 64 x 64 (N = 4096)
#: 64 MiB per thread in float32, twice that in bfloat16.
CPU_Q_BLOCK = 128
CPU_KV_BLOCK = 512
#: dtypes PyTorch's CPU FlexAttention kernel compiles for
CPU_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: PyTorch's Triton FlexAttention kernels need a head dim of at least 16: smaller ones are
#: zero-padded to it (q.k is unchanged; v's extra columns are dropped)
MIN_HEAD_DIM = 16

#: shape families compiled so far by eager calls: (device type, dtype, q shape, H, W)
compiled_families: set[tuple] = set()


def relative_score_mod(pos_h: torch.Tensor, pos_w: torch.Tensor, keys: int | None = None):
    """The ``score_mod`` adding ``pos_h[i, h, q, c - a + H - 1] + pos_w[i, h, q, e - b + W - 1]``
    in image i, head h, for query q at (a, b) and key at (c, e); ``pos_h`` (B, heads, N, 2H - 1) and
    ``pos_w`` (B, heads, N, 2W - 1) already times ``pos_scale``. With ``keys`` set, key indices from
    ``keys`` on are padding: -inf."""
    size = (pos_h.shape[-1] + 1) // 2, (pos_w.shape[-1] + 1) // 2

    def position(q_idx, kv_idx):
        return relative_token_index(q_idx, kv_idx, size)

    if keys is None:
        def score_mod(score, b, h, q_idx, kv_idx):
            row, col = position(q_idx, kv_idx)
            return score + pos_h[b, h, q_idx, row] + pos_w[b, h, q_idx, col]
        return score_mod

    def padded_score_mod(score, b, h, q_idx, kv_idx):
        row, col = position(q_idx, torch.clamp(kv_idx, max=keys - 1))  # in-range reads for padding too
        score = score + pos_h[b, h, q_idx, row] + pos_w[b, h, q_idx, col]
        return torch.where(kv_idx < keys, score, -float("inf"))
    return padded_score_mod


def key_logits_score_mod(logits_h: torch.Tensor, logits_w: torch.Tensor, key_rows: torch.Tensor,
                         key_cols: torch.Tensor, keys: int | None = None):
    """The ``score_mod`` adding ``logits_h[i, h, q, c] + logits_w[i, h, q, e]`` for key k at
    (c, e) = (``key_rows[k]``, ``key_cols[k]``): the per-query position logits of every key row
    and column, ``logits_h`` (B, heads, N, H) and ``logits_w`` (B, heads, N, W), already times
    ``pos_scale`` (what the chunked path adds as its broadcast bias): half the size of the products
    ``P_h``, ``P_w`` (H + W against 2H + 2W - 2 per query). The key positions come from the two
    small index tables (:func:`~botnet.layers.pos_embed.token_positions`) rather than from
    ``k // W`` and ``k % W``: inductor's CPU code divides integer vectors an element at a time. With ``keys`` set, key
    indices from ``keys`` on are padding: -inf (their table entries are in range)."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + logits_h[b, h, q_idx, key_rows[kv_idx]] + logits_w[b, h, q_idx, key_cols[kv_idx]]

    if keys is None:
        return score_mod

    def padded_score_mod(score, b, h, q_idx, kv_idx):
        return torch.where(kv_idx < keys, score_mod(score, b, h, q_idx, kv_idx), -float("inf"))
    return padded_score_mod


def cpu_block_mask(q_len: int, kv_len: int, device) -> BlockMask:
    """A block mask of only full blocks (nothing masked) in ``CPU_Q_BLOCK`` x ``CPU_KV_BLOCK``
    tiles: the tile size of PyTorch's CPU kernel (see ``CPU_Q_BLOCK``). Full blocks skip the
    mask function; made of plain tensor ops, as PyTorch's own default mask, so it traces."""
    q_blocks, kv_blocks = -(-q_len // CPU_Q_BLOCK), -(-kv_len // CPU_KV_BLOCK)
    none = torch.zeros(1, 1, q_blocks, dtype=torch.int32, device=device)
    full = torch.full((1, 1, q_blocks), kv_blocks, dtype=torch.int32, device=device)
    order = torch.arange(kv_blocks, dtype=torch.int32, device=device).repeat(1, 1, q_blocks, 1)
    return BlockMask.from_kv_blocks(none, torch.zeros_like(order), full, order,
                                    BLOCK_SIZE=(CPU_Q_BLOCK, CPU_KV_BLOCK), seq_lengths=(q_len, kv_len))


def _attend(q, k, v, pos_h, pos_w, scale: float, key_rows=None, key_cols=None):
    """(B, heads, N, d) q, k, v and the scaled position products -> (B, heads, N, d); with the key
    position tables ``key_rows``, ``key_cols`` (``token_positions``, of the padded key count),
    ``pos_h``, ``pos_w`` are the per-key logits of :func:`key_logits_score_mod` instead.

    FlexAttention's output follows q's stride order (PyTorch lays it out like the query), so a
    token-major q, (B, N, heads, d) in memory, gives a token-major output."""
    keys, d, pad = k.shape[-2], q.shape[-1], 0
    if q.device.type == "cpu":
        # inductor's CPU template wants q as a 4-D buffer of its own, not a view of the projection;
        # a dense token-major q (the eager CPU path copies it so) is one already
        if not q.transpose(1, 2).is_contiguous():
            q = q.contiguous()
        pad = -keys % CPU_KEY_MULTIPLE
    elif d < MIN_HEAD_DIM:
        q, k, v = (F.pad(t, (0, MIN_HEAD_DIM - d)) for t in (q, k, v))
    if pad:
        k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    if key_rows is not None:
        score_mod = key_logits_score_mod(pos_h, pos_w, key_rows, key_cols, keys if pad else None)
    else:
        score_mod = relative_score_mod(pos_h, pos_w, keys if pad else None)
    block_mask = cpu_block_mask(q.shape[-2], k.shape[-2], q.device) if q.device.type == "cpu" else None
    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)[..., :d]


@functools.cache
def _compiled_attend():
    return torch.compile(_attend, fullgraph=True, dynamic=False)


def _no_recompile_limit():
    # one compiled entry per shape family: more families than dynamo's default limit (8) must not
    # fall back to the unfused maths (PyTorch's own eager FlexAttention lifts the limit likewise)
    lift = getattr(torch._dynamo.utils, "disable_cache_limit", None)
    return lift() if lift is not None else contextlib.nullcontext()


def flex_relative_attention(q, k, v, pos_h, pos_w, scale: float, per_key: bool = False) -> torch.Tensor:
    """FlexAttention with the relative ``score_mod``: (B, heads, N, d) q, k, v and the position
    products (B, heads, N, 2H - 1), (B, heads, N, 2W - 1) -> (B, heads, N, d); autograd throughout
    where PyTorch has the backward (CUDA; on the CPU see :class:`FlexForwardChunkedBackward`).
    ``per_key``: ``pos_h``, ``pos_w`` are the per-key logits (B, heads, N, H), (B, heads, N, W)
    instead (:func:`key_logits_score_mod`; the eager CPU path).

    Traced into the graph when compiling, else the kernel of this shape family (compiled on first
    use); float64 on the CPU runs FlexAttention's unfused maths."""
    tables = ()
    if per_key:
        keys = k.shape[-2]
        padded = keys + (-keys % CPU_KEY_MULTIPLE if q.device.type == "cpu" else 0)
        positions = token_positions((pos_h.shape[-1], pos_w.shape[-1]), q.device, padded)
        tables = tuple(t.to(torch.int32) for t in positions)
    if torch.compiler.is_compiling():
        return _attend(q, k, v, pos_h, pos_w, scale, *tables)
    if q.device.type == "cpu" and q.dtype not in CPU_KERNEL_DTYPES:
        with warnings.catch_warnings():  # unfused on purpose: PyTorch warns that it is
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return _attend(q, k, v, pos_h, pos_w, scale, *tables)
    height, width = (pos_h.shape[-1], pos_w.shape[-1]) if per_key else ((pos_h.shape[-1] + 1) // 2,
                                                                          (pos_w.shape[-1] + 1) // 2)
    compiled_families.add((q.device.type, q.dtype, tuple(q.shape), height, width))
    with _no_recompile_limit():
        return _compiled_attend()(q, k, v, pos_h, pos_w, scale, *tables)


class FlexForwardChunkedBackward(torch.autograd.Function):
    """CPU: the FlexAttention forward, the chunked path's backward (PyTorch has no CPU backward of
    FlexAttention). Takes what :class:`~botnet.layers.chunked_attention.ChunkedRelativeAttention`
    takes, the tables both expanded (table_h (H, H, d), table_w (W, W, d), for the backward) and as
    rows (rows_h (2H - 1, d), rows_w (2W - 1, d), no gradient). Returns (B, H * W, heads, d)."""

    @staticmethod
    def forward(ctx, qkv, table_h, table_w, rows_h, rows_w, scale: float, pos_scale: float, group: int, blocks: int):
        b, height, width, _, heads, d = qkv.shape
        n = height * width
        with torch.autocast(qkv.device.type, enabled=False):
            grid = qkv.detach()
            if torch.compiler.is_compiling():
                # traced into a model's graph: the matmul products as they are (module docstring)
                q, k, v = grid.view(b, n, 3, heads, d).transpose(1, 3).unbind(2)
                pos_h, pos_w = relative_products(q, rows_h.detach(), rows_w.detach(), pos_scale)
                out = flex_relative_attention(q, k, v, pos_h, pos_w, scale)
            else:
                # eager: q copied token-major (B, N, heads, d), so the kernel writes its output
                # token-major too, the layout returned (no transposing copy); k, v stay views of
                # the projection. The position term as the chunked path's per-key logits (the same
                # values, half the size of the products).
                tokens = grid.view(b, n, 3, heads, d)
                q = tokens[:, :, 0].contiguous().transpose(1, 2)
                k, v = tokens[:, :, 1].transpose(1, 2), tokens[:, :, 2].transpose(1, 2)
                logits_h, logits_w = relative_logits_expanded(
                    grid[..., 0, :, :], table_h.detach(), table_w.detach(), pos_scale)  # (B * heads, N, H), (.., W)
                logits_h = logits_h.reshape(b, heads, n, height).contiguous()
                logits_w = logits_w.reshape(b, heads, n, width).contiguous()
                out = flex_relative_attention(q, k, v, logits_h, logits_w, scale, per_key=True)
            out = out.transpose(1, 2).contiguous()  # (B, N, heads, d); no copy when token-major
        ctx.save_for_backward(qkv, table_h, table_w, out)
        ctx.args = scale, pos_scale, group, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grads = chunked_backward(grad_out, *ctx.saved_tensors, *ctx.args)
        return (*grads, None, None, None, None, None, None)


def attend(layer, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The "flex" path of :class:`~botnet.layers.MHSA2d`: its (B, N, 3 * heads * d) projection ->
    (B, N, heads, d). On CUDA autograd through FlexAttention; on the CPU
    :class:`FlexForwardChunkedBackward`."""
    height, width = size
    rows_h = rel_table_for_length(layer.rel_h, height)  # (2H - 1, d)
    rows_w = rel_table_for_length(layer.rel_w, width)
    if qkv.device.type == "cpu":
        grid = qkv.view(qkv.shape[0], height, width, 3, layer.heads, layer.dim_head)
        table_h = expand_rel_table(layer.rel_h, height).to(qkv.dtype)  # (H, H, d)
        table_w = expand_rel_table(layer.rel_w, width).to(qkv.dtype)
        group, blocks = plan_chunks(qkv.shape[0], layer.heads, height * width, layer.feat_size)
        return FlexForwardChunkedBackward.apply(grid, table_h, table_w, rows_h.detach(), rows_w.detach(),
                                                layer.qk_scale, layer.pos_scale, group, blocks)
    q, k, v = layer.split_heads(qkv)
    pos_h, pos_w = relative_products(q, rows_h, rows_w, layer.pos_scale)
    return flex_relative_attention(q, k, v, pos_h, pos_w, layer.qk_scale).transpose(1, 2)


_AVAILABLE: dict[str, bool] = {}


@torch.compiler.assume_constant_result
def flex_available(device_type: str) -> bool:
    """Whether FlexAttention can compile its kernel here: Triton on CUDA; on the CPU an x86 CPU with
    AVX2 (PyTorch's CPU kernel needs it) and inductor's C++ compiler. A constant when traced."""
    if device_type not in _AVAILABLE:
        if device_type == "cuda":
            from torch.utils._triton import has_triton

            _AVAILABLE[device_type] = has_triton()
        elif device_type == "cpu":
            compiler = os.environ.get("CXX", "g++")
            _AVAILABLE[device_type] = (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
                                       and shutil.which(compiler) is not None)
        else:
            _AVAILABLE[device_type] = False
    return _AVAILABLE[device_type]
