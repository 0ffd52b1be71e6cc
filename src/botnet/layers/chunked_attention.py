"""The chunked relative attention: the CPU default path of :class:`~botnet.layers.MHSA2d`.

A group of heads and a block of queries at a time, the relative term entering each block as a
broadcast bias of per-query (H,) + (W,) logits, every matmul at the head dim d; a hand-written
backward recomputes each block's probabilities, so no (N x N) tensor of the whole map is ever held.
:func:`plan_chunks` sizes the groups and blocks, :func:`chunked_relative_attention` runs it, and
:func:`attend` is the path as :class:`~botnet.layers.MHSA2d` calls it.
"""
from __future__ import annotations

import torch

from botnet.layers.pos_embed import expand_rel_table, relative_logits_expanded, relative_logits_expanded_grads

#: Head groups and query blocks of the "chunked" path. Eager: all heads in one block when their
#: scores fit in ``SCORES_PER_BLOCK`` (batch x heads x queries x keys; 8 MB in float32), else one
#: head at a time in blocks of about that many scores and at least ``MIN_BLOCK_ROWS`` queries:
#: large enough for efficient matmuls, small enough that a 64 x 64 map trains within 1.5x plain
#: attention's memory. Compiled or exported: ``QUERY_BLOCK`` queries at the layer's configured map size
#: (``feat_size``), a per-layer constant, so the graph never depends on the input size.
SCORES_PER_BLOCK = 2**21
MIN_BLOCK_ROWS = 64
QUERY_BLOCK = 256


def _blocks(n, count: int) -> list[tuple]:
    # ``count`` query blocks covering 0..n (some empty when n < count)
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


def _probs(q, k_t, bias_h, bias_w, scale: float):
    # softmax over the keys of one query block: (G, c, N)
    groups, c = q.shape[:2]
    scores = (bias_h[..., :, None] + bias_w[..., None, :]).view(groups, c, k_t.shape[-1])
    return torch.softmax(scores.baddbmm_(q, k_t, alpha=scale), -1)


def _gather(t, heads: slice):
    # (B, N, heads, d) -> one contiguous (B * g, N, d) copy of the group's heads: strided
    # operands would be copied by every block's matmul
    b, n, _, d = t.shape
    return t[:, :, heads].transpose(1, 2).reshape(-1, n, d).contiguous()


def _scatter(dst, heads: slice, src) -> None:
    # (B * g, N, d) back into the group's heads of dst (B, N, heads, d)
    b, n, _, d = dst.shape
    dst[:, :, heads] = src.view(b, -1, n, d).transpose(1, 2)


def chunked_forward(qkv, table_h, table_w, scale: float, pos_scale: float, group: int, blocks: int):
    """The forward of the chunked path (see :class:`ChunkedRelativeAttention`), no autograd."""
    b, height, width, _, heads, d = qkv.shape
    n = height * width
    with torch.autocast(qkv.device.type, enabled=False):
        q, k, v = qkv.view(b, n, 3, heads, d).unbind(2)  # each (B, N, heads, d)
        out = qkv.new_empty(b, n, heads, d)
        for first in range(0, heads, group):
            hs = slice(first, first + group)
            bias_h, bias_w = relative_logits_expanded(qkv[..., 0, hs, :], table_h, table_w, pos_scale)
            q_g, k_g, v_g = (_gather(t, hs) for t in (q, k, v))
            k_t = k_g.transpose(1, 2)
            out_g = torch.empty_like(q_g)
            for lo, hi in _blocks(n, blocks):
                p = _probs(q_g[:, lo:hi], k_t, bias_h[:, lo:hi], bias_w[:, lo:hi], scale)
                out_g[:, lo:hi] = torch.bmm(p, v_g)
            _scatter(out, hs, out_g)
    return out


def chunked_backward(grad_out, qkv, table_h, table_w, out, scale: float, pos_scale: float, group: int, blocks: int):
    """The gradients of qkv, table_h and table_w from those of the output: each block's
    probabilities recomputed from the saved inputs (see :class:`ChunkedRelativeAttention`). Also
    the backward of the CPU flex path, whose forward takes the same inputs."""
    b, height, width, _, heads, d = qkv.shape
    n = height * width
    acc = torch.promote_types(qkv.dtype, torch.float32)  # accumulators across blocks and heads
    with torch.autocast(qkv.device.type, enabled=False):
        grad_out = grad_out.to(qkv.dtype)
        # softmax backward needs sum_k p_k dp_k per query, which equals grad_out . out
        deltas = (grad_out * out).sum(-1)  # (B, N, heads)
        q, k, v = qkv.view(b, n, 3, heads, d).unbind(2)
        grad_qkv = qkv.new_empty(b, n, 3, heads, d)
        grad_q, grad_k, grad_v = grad_qkv.unbind(2)
        grad_h = torch.zeros_like(table_h, dtype=acc)
        grad_w = torch.zeros_like(table_w, dtype=acc)
        for first in range(0, heads, group):
            hs = slice(first, first + group)
            q_grid = qkv[..., 0, hs, :]  # (B, H, W, g, d)
            bias_h, bias_w = relative_logits_expanded(q_grid, table_h, table_w, pos_scale)
            grad_bias_h = torch.empty_like(bias_h, dtype=acc)
            grad_bias_w = torch.empty_like(bias_w, dtype=acc)
            q_g, k_g, v_g, g_g = (_gather(t, hs) for t in (q, k, v, grad_out))
            delta_g = deltas[:, :, hs].transpose(1, 2).reshape(-1, n)
            k_t, v_t = k_g.transpose(1, 2), v_g.transpose(1, 2)
            grad_q_g = torch.empty_like(q_g)
            grad_k_g = torch.zeros(q_g.shape, dtype=acc, device=qkv.device)
            grad_v_g = torch.zeros_like(grad_k_g)
            for lo, hi in _blocks(n, blocks):
                q_blk, g = q_g[:, lo:hi], g_g[:, lo:hi]
                p = _probs(q_blk, k_t, bias_h[:, lo:hi], bias_w[:, lo:hi], scale)
                grad_v_g += torch.bmm(p.transpose(1, 2), g)
                # the gradient of the block's scores (scale * q.k + position bias), in place
                grad_s = torch.bmm(g, v_t).sub_(delta_g[:, lo:hi, None]).mul_(p)
                per_key = grad_s.view(-1, hi - lo, height, width)
                # (reduced-precision sums accumulate in float32 inside; no widened copy)
                grad_bias_h[:, lo:hi] = per_key.sum(-1)
                grad_bias_w[:, lo:hi] = per_key.sum(-2)
                grad_q_g[:, lo:hi] = torch.bmm(grad_s, k_g).mul_(scale)
                grad_k_g += torch.bmm(grad_s.transpose(1, 2), q_blk)
            _scatter(grad_k, hs, grad_k_g.mul_(scale))
            _scatter(grad_v, hs, grad_v_g)
            # the position logits are small matmuls of q with the tables: their chain rule by hand
            # (in the inputs' dtype: the matmuls accumulate in float32 inside)
            chain, g_table_h, g_table_w = relative_logits_expanded_grads(
                grad_bias_h.mul_(pos_scale).to(qkv.dtype), grad_bias_w.mul_(pos_scale).to(qkv.dtype),
                q_grid, table_h, table_w)
            _scatter(grad_q, hs, grad_q_g)
            grad_q[:, :, hs] += chain.reshape(b, n, -1, d)
            grad_h += g_table_h
            grad_w += g_table_w
    return grad_qkv.view(b, height, width, 3, heads, d), grad_h.to(table_h.dtype), grad_w.to(table_w.dtype)


class ChunkedRelativeAttention(torch.autograd.Function):
    """Relative-position attention a group of heads and a block of queries at a time.

    Groups are every head at once on small maps (few, cheap calls) or one head on large ones (big
    blocks within the score budget); see :func:`plan_chunks`. For a block of queries it forms
    ``scale * q k^T + (b_h[key row] + b_w[key column])`` with one ``baddbmm`` (the position logits
    b_h, b_w are per-query (H,) and (W,) vectors times ``pos_scale``, a broadcast bias of the block),
    a softmax and a matmul with v: every matmul runs at the head dim d, where the fold runs the
    fused kernel at d + H + W, and one group's (block, N) scores, about ``SCORES_PER_BLOCK`` at
    most on large maps, are the only large temporaries. The forward keeps its inputs (the projection and the tables)
    and its output; the backward recomputes each block's probabilities (as flash attention does),
    takes the softmax backward in place using ``grad_out . out`` for the row sums, and applies the
    chain rule of the position logits by hand. Compiled graphs loop over single heads and a
    per-layer block count, never over input sizes. ``scale`` 0 drops the content term (the
    ``relative_only`` encoding): the scores are the position logits alone, and q, k get no
    gradient through q.k.

    Precision: in float32 and float64 this is the spec's maths to rounding. With bf16 inputs
    (autocast) the scores come out of a bf16 matmul, as in any autocast matmul (the fused kernel
    keeps them in float32); the softmax and the matmuls accumulate in float32 internally, and the
    gradients of k, v and the tables accumulate across blocks and heads in float32.

    qkv: (B, H, W, 3, heads, d), the projection; table_h (H, H, d) with ``table_h[a, c] =
    R_h[c - a + H - 1]``, table_w (W, W, d) likewise. Returns the (B, H * W, heads, d) output.
    """

    @staticmethod
    def forward(ctx, qkv, table_h, table_w, scale: float, pos_scale: float, group: int, blocks: int):
        out = chunked_forward(qkv, table_h, table_w, scale, pos_scale, group, blocks)
        ctx.save_for_backward(qkv, table_h, table_w, out)
        ctx.args = scale, pos_scale, group, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return (*chunked_backward(grad_out, *ctx.saved_tensors, *ctx.args), None, None, None, None)


def plan_chunks(batch: int, heads: int, n: int, feat_size: tuple[int, int]) -> tuple[int, int]:
    """(heads per group, query blocks) for ``batch`` maps of ``n`` tokens (see ``SCORES_PER_BLOCK``)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        hr, wr = feat_size
        return 1, -(-hr * wr // QUERY_BLOCK)
    if batch * heads * n * n <= SCORES_PER_BLOCK:
        return heads, 1  # small maps: every head in one pass, one block
    rows = max(MIN_BLOCK_ROWS, SCORES_PER_BLOCK // (batch * n))
    return 1, -(-n // rows)


def chunked_relative_attention(qkv: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor, scale: float,
                               pos_scale: float, feat_size: tuple[int, int]) -> torch.Tensor:
    """Relative attention of a (B, H, W, 3, heads, d) projection; returns (B, H * W, heads, d).

    ``table_h`` (H, H, d) and ``table_w`` (W, W, d) are the expanded tables
    (:func:`~botnet.layers.pos_embed.expand_rel_table`); logits are
    ``scale * q.k + pos_scale * (q.R_h + q.R_w)``."""
    b, height, width, _, heads, _ = qkv.shape
    group, blocks = plan_chunks(b, heads, height * width, feat_size)
    return ChunkedRelativeAttention.apply(qkv, table_h, table_w, scale, pos_scale, group, blocks)


def attend(layer, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The "chunked" path of :class:`~botnet.layers.MHSA2d`: its (B, N, 3 * heads * d) projection
    -> (B, N, heads, d)."""
    height, width = size
    table_h = expand_rel_table(layer.rel_h, height).to(qkv.dtype)  # (H, H, d)
    table_w = expand_rel_table(layer.rel_w, width).to(qkv.dtype)  # (W, W, d)
    grid = qkv.view(qkv.shape[0], height, width, 3, layer.heads, layer.dim_head)
    return chunked_relative_attention(grid, table_h, table_w, layer.qk_scale, layer.pos_scale, layer.feat_size)
