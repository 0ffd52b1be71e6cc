"""Multi-head self-attention over a 2-D feature map (the MHSA of the BoT block).

Parameter layout (documented so that weights from other implementations map onto it):

- ``qkv``: one bias-free 1x1 ``Conv2d`` with weight (3 * heads * dim_head, dim, 1, 1); output
  channels are ordered [q | k | v], each head-major (channel = head * dim_head + i).
- ``rel_h`` (2 * Hr - 1, dim_head) and ``rel_w`` (2 * Wr - 1, dim_head): relative tables shared by
  all heads, (Hr, Wr) = ``feat_size``; row ``L - 1`` is offset 0 (see ``pos_embed``).
- ``abs_h`` (Hr, dim_head) and ``abs_w`` (Wr, dim_head) for ``pos_enc="absolute"``.

Maths (spec section 3): ``logits = dim_head^-0.5 * (q.k + q.R_h[c-a+H-1] + q.R_w[e-b+W-1])``,
softmax over all H*W keys, weighted sum of v, heads concatenated. No output projection, no
dropout. q is scaled before both terms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from botnet.layers.pos_embed import (
    key_position_onehots,
    rel_table_for_length,
    relative_bias_2d,
    relative_logits_2d,
    resize_abs_table,
)

POS_ENCODINGS = ("relative", "absolute", None)
#: How the relative term is computed:
#: "chunked" a group of heads and a block of queries at a time with the position logits as a
#: broadcast bias of the block (``_ChunkedRelativeAttention``; no N x N tensor, every matmul at head dim d);
#: "fold" appends per-query position logits to q and one-hot key positions to k, one fused
#: ``F.scaled_dot_product_attention`` call (no N x N bias; head dim d + H + W);
#: "bias" builds the (B, heads, N, N) additive bias and passes it as ``attn_mask``;
#: "auto" picks per call (see ``MHSA2d._pick_impl``; the figures are in BENCHMARKS.md).
ATTN_IMPLS = ("auto", "chunked", "fold", "bias")


#: Head groups and query blocks of the "chunked" path. Eager: all heads in one block when their
#: scores fit in ``SCORES_PER_BLOCK`` (batch x heads x queries x keys; 8 MB in float32), else one
#: head at a time in blocks of about that many scores and at least ``MIN_BLOCK_ROWS`` queries:
#: large enough for efficient matmuls, small enough that a 64 x 64 map trains within 1.5x plain
#: attention's memory. Compiled or exported: ``QUERY_BLOCK`` queries at the layer's configured map size
#: (``feat_size``), a per-layer constant, so the graph never depends on the input size.
SCORES_PER_BLOCK = 2**21
MIN_BLOCK_ROWS = 64
QUERY_BLOCK = 256


def _fold(q, k, v, logits_h, logits_w, onehot):
    """The fold's inputs to one fused call: ``[q | l_h | l_w]``, ``[k | onehots]``, ``[v | 0]``.

    The fused kernels want one head dim for q, k and v, hence the zero padding of v (its columns
    of the output are zero and are dropped)."""
    q_aug = torch.cat([q, logits_h.to(q.dtype), logits_w.to(q.dtype)], dim=-1)
    k_aug = torch.cat([k, onehot.to(k.dtype).expand(*k.shape[:-1], -1)], dim=-1)
    return q_aug, k_aug, F.pad(v, (0, onehot.shape[-1]))


def _blocks(n, count: int) -> list[tuple]:
    # ``count`` query blocks covering 0..n (some empty when n < count)
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


class _ChunkedRelativeAttention(torch.autograd.Function):
    """Relative-position attention a group of heads and a block of queries at a time.

    Groups are every head at once on small maps (few, cheap calls) or one head on large ones (big
    blocks within the score budget); see ``MHSA2d._plan``. For a block of queries it forms
    ``scale * q k^T + (b_h[key row] + b_w[key column])`` with one ``baddbmm`` (the position logits
    b_h, b_w are per-query (H,) and (W,) vectors, scaled, added as a broadcast bias of the block),
    a softmax and a matmul with v: every matmul runs at the head dim d, where the fold runs the
    fused kernel at d + H + W, and one group's (block, N) scores, about ``SCORES_PER_BLOCK`` at
    most on large maps, are the only large temporaries. The forward keeps its inputs (the projection and the tables)
    and its output; the backward recomputes each block's probabilities (as flash attention does),
    takes the softmax backward in place using ``grad_out . out`` for the row sums, and applies the
    chain rule of the position logits by hand. Compiled graphs loop over single heads and a
    per-layer block count, never over input sizes.

    Precision: in float32 and float64 this is the spec's maths to rounding. With bf16 inputs
    (autocast) the scores come out of a bf16 matmul, as in any autocast matmul (the fused kernel
    keeps them in float32); the softmax and the matmuls accumulate in float32 internally, and the
    gradients of k, v and the tables accumulate across blocks and heads in float32.

    qkv: (B, H, W, 3, heads, d), the projection; table_h (H, H, d) with ``table_h[a, c] =
    R_h[c - a + H - 1]``, table_w (W, W, d) likewise. Returns the (B, H * W, heads, d) output.
    """

    @staticmethod
    def _position_logits(q, table_h, table_w, scale: float):
        # q (B, H, W, g, d), g heads -> scale * [q_ab . R_h[c - a + H - 1]] (B * g, N, H) and the
        # same over columns (B * g, N, W)
        b, height, width, g, _ = q.shape
        logits_h = torch.einsum("zabnd,acd->znabc", q, table_h).mul_(scale)
        logits_w = torch.einsum("zabnd,bed->znabe", q, table_w).mul_(scale)
        return (logits_h.reshape(b * g, height * width, height), logits_w.reshape(b * g, height * width, width))

    @staticmethod
    def _probs(q, k_t, bias_h, bias_w, scale: float):
        # softmax over the keys of one query block: (G, c, N)
        groups, c = q.shape[:2]
        scores = (bias_h[..., :, None] + bias_w[..., None, :]).view(groups, c, k_t.shape[-1])
        return torch.softmax(scores.baddbmm_(q, k_t, alpha=scale), -1)

    @staticmethod
    def _gather(t, heads: slice):
        # (B, N, heads, d) -> one contiguous (B * g, N, d) copy of the group's heads: strided
        # operands would be copied by every block's matmul
        b, n, _, d = t.shape
        return t[:, :, heads].transpose(1, 2).reshape(-1, n, d).contiguous()

    @staticmethod
    def _scatter(dst, heads: slice, src) -> None:
        # (B * g, N, d) back into the group's heads of dst (B, N, heads, d)
        b, n, _, d = dst.shape
        dst[:, :, heads] = src.view(b, -1, n, d).transpose(1, 2)

    @staticmethod
    def forward(ctx, qkv, table_h, table_w, scale: float, group: int, blocks: int):
        b, height, width, _, heads, d = qkv.shape
        n = height * width
        f = _ChunkedRelativeAttention
        with torch.autocast(qkv.device.type, enabled=False):
            q, k, v = qkv.view(b, n, 3, heads, d).unbind(2)  # each (B, N, heads, d)
            out = qkv.new_empty(b, n, heads, d)
            for first in range(0, heads, group):
                hs = slice(first, first + group)
                bias_h, bias_w = f._position_logits(qkv[..., 0, hs, :], table_h, table_w, scale)
                q_g, k_g, v_g = (f._gather(t, hs) for t in (q, k, v))
                k_t = k_g.transpose(1, 2)
                out_g = torch.empty_like(q_g)
                for lo, hi in _blocks(n, blocks):
                    p = f._probs(q_g[:, lo:hi], k_t, bias_h[:, lo:hi], bias_w[:, lo:hi], scale)
                    out_g[:, lo:hi] = torch.bmm(p, v_g)
                f._scatter(out, hs, out_g)
        ctx.save_for_backward(qkv, table_h, table_w, out)
        ctx.scale, ctx.group, ctx.blocks = scale, group, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, table_h, table_w, out = ctx.saved_tensors
        scale, group, blocks = ctx.scale, ctx.group, ctx.blocks
        b, height, width, _, heads, d = qkv.shape
        n = height * width
        f = _ChunkedRelativeAttention
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
                bias_h, bias_w = f._position_logits(q_grid, table_h, table_w, scale)
                grad_bias_h = torch.empty_like(bias_h, dtype=acc)
                grad_bias_w = torch.empty_like(bias_w, dtype=acc)
                q_g, k_g, v_g, g_g = (f._gather(t, hs) for t in (q, k, v, grad_out))
                delta_g = deltas[:, :, hs].transpose(1, 2).reshape(-1, n)
                k_t, v_t = k_g.transpose(1, 2), v_g.transpose(1, 2)
                grad_q_g = torch.empty_like(q_g)
                grad_k_g = torch.zeros(q_g.shape, dtype=acc, device=qkv.device)
                grad_v_g = torch.zeros_like(grad_k_g)
                for lo, hi in _blocks(n, blocks):
                    q_blk, g = q_g[:, lo:hi], g_g[:, lo:hi]
                    p = f._probs(q_blk, k_t, bias_h[:, lo:hi], bias_w[:, lo:hi], scale)
                    grad_v_g += torch.bmm(p.transpose(1, 2), g)
                    # the gradient of the block's scores (scale * q.k + position bias), in place
                    grad_s = torch.bmm(g, v_t).sub_(delta_g[:, lo:hi, None]).mul_(p)
                    per_key = grad_s.view(-1, hi - lo, height, width)
                    # (reduced-precision sums accumulate in float32 inside; no widened copy)
                    grad_bias_h[:, lo:hi] = per_key.sum(-1)
                    grad_bias_w[:, lo:hi] = per_key.sum(-2)
                    grad_q_g[:, lo:hi] = torch.bmm(grad_s, k_g).mul_(scale)
                    grad_k_g += torch.bmm(grad_s.transpose(1, 2), q_blk)
                f._scatter(grad_k, hs, grad_k_g.mul_(scale))
                f._scatter(grad_v, hs, grad_v_g)
                # the position logits are small matmuls of q with the tables: their chain rule by hand
                # (in the inputs' dtype: the matmuls accumulate in float32 inside)
                g_h = grad_bias_h.mul_(scale).to(qkv.dtype).view(b, -1, height, width, height)
                g_w = grad_bias_w.mul_(scale).to(qkv.dtype).view(b, -1, height, width, width)
                chain = (torch.einsum("znabc,acd->zabnd", g_h, table_h)
                         + torch.einsum("znabe,bed->zabnd", g_w, table_w))  # (B, H, W, g, d)
                f._scatter(grad_q, hs, grad_q_g)
                grad_q[:, :, hs] += chain.reshape(b, n, -1, d)
                grad_h += torch.einsum("znabc,zabnd->acd", g_h, q_grid)
                grad_w += torch.einsum("znabe,zabnd->bed", g_w, q_grid)
        return (grad_qkv.view(b, height, width, 3, heads, d), grad_h.to(table_h.dtype), grad_w.to(table_w.dtype),
                None, None, None)


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class MHSA2d(nn.Module):
    """All-to-all multi-head self-attention on (B, dim, H, W) maps, any H and W."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        dim_head: int | None = None,
        pos_enc: str | None = "relative",
        feat_size: int | tuple[int, int] | None = None,
        qkv_bias: bool = False,
        attn_impl: str = "auto",
    ):
        super().__init__()
        if pos_enc not in POS_ENCODINGS:
            raise ValueError(f"pos_enc must be one of {POS_ENCODINGS}, got {pos_enc!r}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"dim {dim} is not divisible by heads {heads}; pass dim_head")
            dim_head = dim // heads
        if pos_enc is not None and feat_size is None:
            raise ValueError("feat_size (the map size the position tables are made for) is required "
                             f"with pos_enc={pos_enc!r}")
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.out_dim = heads * dim_head
        self.pos_enc = pos_enc
        self.attn_impl = attn_impl
        self.feat_size = _pair(feat_size) if feat_size is not None else None
        self.scale = dim_head**-0.5
        self.qkv = nn.Conv2d(dim, 3 * self.out_dim, 1, bias=qkv_bias)
        if pos_enc == "relative":
            hr, wr = self.feat_size
            self.rel_h = nn.Parameter(torch.empty(2 * hr - 1, dim_head))
            self.rel_w = nn.Parameter(torch.empty(2 * wr - 1, dim_head))
        elif pos_enc == "absolute":
            hr, wr = self.feat_size
            self.abs_h = nn.Parameter(torch.empty(hr, dim_head))
            self.abs_w = nn.Parameter(torch.empty(wr, dim_head))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference code draws q/k/v weights from N(0, 0.01) and the tables from N(0, d^-0.5)
        # (its comment's intent; its code passes the std as the mean by mistake).
        nn.init.normal_(self.qkv.weight, std=0.01)
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        for name in ("rel_h", "rel_w", "abs_h", "abs_w"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=self.scale)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}, pos_enc={self.pos_enc!r}, "
                f"feat_size={self.feat_size}, attn_impl={self.attn_impl!r}")

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"MHSA2d expects a (B, {self.dim}, H, W) tensor, got shape {tuple(x.shape)}")
        # The 1x1 conv as a matmul over tokens: its output is (B, N, [q|k|v], heads, d), the
        # token-major layout the fused CPU kernel works in, so q, k and v are views (no transposing
        # copies forward or backward); on a channels_last input the tokens are a view too.
        tokens = x.flatten(2).transpose(1, 2)
        return F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # (B, N, 3 * heads * d)

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).transpose(1, 3).unbind(2)
        return q, k, v  # each (B, heads, N, d)

    def _merge_heads(self, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # (B, heads, N, d) -> (B, heads * d, H, W). The fused kernels return a token-major buffer,
        # so the result is a channels_last view rather than a copy.
        b = out.shape[0]
        return out.transpose(1, 2).reshape(b, size[0], size[1], self.out_dim).permute(0, 3, 1, 2)

    def _pick_impl(self, qkv: torch.Tensor) -> str:
        if self.attn_impl != "auto":
            return self.attn_impl
        # CPU: the chunked path, in training and inference (BENCHMARKS.md: faster than the fused
        # kernel at d + H + W, and than a bias that materialises N x N). Elsewhere (CUDA) the fused
        # kernels: with gradients the fold (a bias that requires grad loses the fused kernel),
        # without them a no-grad bias at head dim d. Depends on device and grad mode, never on sizes.
        if qkv.device.type == "cpu":
            return "chunked"
        return "fold" if torch.is_grad_enabled() and qkv.requires_grad else "bias"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self._project(x)
        size = (x.shape[2], x.shape[3])
        if self.pos_enc == "relative" and self._pick_impl(qkv) == "chunked":
            return self._relative_attention_chunked(qkv, size)
        q, k, v = self._split_heads(qkv)
        if self.pos_enc == "relative":
            out = self._relative_attention(q, k, v, size)
        else:
            if self.pos_enc == "absolute":
                h, w = size
                emb = resize_abs_table(self.abs_h, h)[:, None, :] + resize_abs_table(self.abs_w, w)[None, :, :]
                k = k + emb.reshape(h * w, self.dim_head).to(k.dtype)  # q.(k + emb) = q.k + q.emb
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self._merge_heads(out, size)

    def _plan(self, batch: int, n: int) -> tuple[int, int]:
        """Heads per group and query blocks of the chunked path (see ``SCORES_PER_BLOCK``)."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            hr, wr = self.feat_size
            return 1, -(-hr * wr // QUERY_BLOCK)
        if batch * self.heads * n * n <= SCORES_PER_BLOCK:
            return self.heads, 1  # small maps: every head in one pass, one block
        rows = max(MIN_BLOCK_ROWS, SCORES_PER_BLOCK // (batch * n))
        return 1, -(-n // rows)

    def _relative_attention_chunked(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        b = qkv.shape[0]
        tables = []
        for table, length in ((self.rel_h, height), (self.rel_w, width)):
            pos = torch.arange(length, device=qkv.device)
            # expanded[a, c] = R[c - a + L - 1]: the rows each query position reads
            tables.append(rel_table_for_length(table, length)[pos[None, :] - pos[:, None] + (length - 1)].to(qkv.dtype))
        group, blocks = self._plan(b, height * width)
        grid = qkv.view(b, height, width, 3, self.heads, self.dim_head)
        out = _ChunkedRelativeAttention.apply(grid, tables[0], tables[1], self.scale, group, blocks)  # (B, N, heads, d)
        return out.view(b, height, width, self.out_dim).permute(0, 3, 1, 2)

    def _relative_attention(self, q, k, v, size: tuple[int, int]) -> torch.Tensor:
        # q is left unscaled: SDPA's ``scale`` multiplies the whole logit, content and position
        # term alike (spec: logits = d^-0.5 * (q.k + q.r)), which saves a pass over q and its grad.
        logits_h, logits_w = relative_logits_2d(q, self.rel_h, self.rel_w, size)
        if self._pick_impl(q) == "bias":
            # scale the small per-axis logits, not the N x N bias
            bias = relative_bias_2d(logits_h * self.scale, logits_w * self.scale).to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        onehot = key_position_onehots(size, q.device, k.dtype)
        # one call over all heads (CUDA: flash / memory-efficient kernels)
        out = F.scaled_dot_product_attention(*_fold(q, k, v, logits_h, logits_w, onehot), scale=self.scale)
        return out[..., : self.dim_head]
