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
#: How the relative term reaches the fused kernel:
#: "fold" appends per-query position logits to q and one-hot key positions to k (no N x N bias);
#: "bias" builds the (B, heads, N, N) additive bias and passes it as ``attn_mask``;
#: "auto" picks per call (see ``MHSA2d._pick_impl``; the figures are in BENCHMARKS.md).
ATTN_IMPLS = ("auto", "fold", "bias")


_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _fold(q, k, v, logits_h, logits_w, onehot):
    """The fold's inputs to one fused call: ``[q | l_h | l_w]``, ``[k | onehots]``, ``[v | 0]``.

    The fused CPU kernel wants one head dim for q, k and v, hence the zero padding of v (its
    columns of the output are zero and are dropped)."""
    q_aug = torch.cat([q, logits_h.to(q.dtype), logits_w.to(q.dtype)], dim=-1)
    k_aug = torch.cat([k, onehot.to(k.dtype).expand(*k.shape[:-1], -1)], dim=-1)
    return q_aug, k_aug, F.pad(v, (0, onehot.shape[-1]))


class _RelativeAttentionCPU(torch.autograd.Function):
    """The fold on the CPU fused kernel with a backward that keeps only what cannot be recomputed.

    Autograd through ``F.scaled_dot_product_attention(q_aug, k_aug, v_aug)`` keeps the widened
    (B, heads, N, d + H + W) inputs and output for the backward, and the backward holds widened
    gradients of every head at once: about 2.5x the memory of plain attention on a 64 x 64 map,
    where the width doubles. Here the widened tensors exist for one head at a time, in buffers
    reused across heads, and the forward keeps only the projection (which plain attention keeps
    too), the d-wide output and the log-sum-exp. The backward recomputes each head's position
    logits (small matmuls), calls the kernel's own backward and applies the chain rule of the
    position logits by hand. The loops run over the heads, a constant of the layer, never over
    sizes. (One call over all heads saves a few small copies per head but holds every head's
    widened tensors at once: 1.9x plain attention's peak memory at 64 x 64 instead of 1.5x.)

    qkv: (B, H, W, 3, heads, d), the projection; table_h (H, H, d) with ``table_h[a, c] =
    R_h[c - a + H - 1]``, table_w (W, W, d) likewise; onehot (H * W, H + W).
    Returns the (B, H * W, heads, d) attention output.
    """

    @staticmethod
    def _logits(q, table_h, table_w):
        # q (B, H, W, heads, d) -> (B, H, W, heads, H + W): [q_ab . R_h[c - a + H - 1] | q_ab . R_w[e - b + W - 1]]
        return torch.cat([torch.einsum("zabnd,acd->zabnc", q, table_h),
                          torch.einsum("zabnd,bed->zabne", q, table_w)], dim=-1)

    @staticmethod
    def _buffers(qkv, onehot, count: int):
        # one head's widened (B, N, 1, d + H + W) tensors, reused across heads; zero padding and
        # the key one-hots are written once
        b, height, width, _, _, d = qkv.shape
        bufs = [qkv.new_zeros(b, height * width, 1, d + height + width) for _ in range(count)]
        bufs[1][..., d:] = onehot[:, None]
        return bufs

    @staticmethod
    def _fill(bufs, q, k, v, table_h, table_w, i: int):
        # head i's [q | position logits], [k | one-hots], [v | 0]; returns its q (B, H, W, 1, d)
        b, height, width, _, d = q.shape
        n = height * width
        h = slice(i, i + 1)
        q_head = q[..., h, :]
        bufs[0][..., :d] = q_head.reshape(b, n, 1, d)
        bufs[0][..., d:] = _RelativeAttentionCPU._logits(q_head, table_h, table_w).reshape(b, n, 1, height + width)
        bufs[1][..., :d] = k[..., h, :].reshape(b, n, 1, d)
        bufs[2][..., :d] = v[..., h, :].reshape(b, n, 1, d)
        return q_head

    @staticmethod
    def forward(ctx, qkv, table_h, table_w, onehot, scale: float):
        b, height, width, _, heads, d = qkv.shape
        q, k, v = qkv.unbind(3)
        bufs = _RelativeAttentionCPU._buffers(qkv, onehot, 3)
        out = qkv.new_empty(b, height * width, heads, d)
        lse = []
        for i in range(heads):
            _RelativeAttentionCPU._fill(bufs, q, k, v, table_h, table_w, i)
            o, l = _CPU_FLASH(*(t.transpose(1, 2) for t in bufs), scale=scale)
            out[:, :, i] = o[:, 0, :, :d]
            lse.append(l)
        ctx.save_for_backward(qkv, table_h, table_w, onehot, out, torch.cat(lse, 1))
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, table_h, table_w, onehot, out, lse = ctx.saved_tensors
        b, height, width, _, heads, d = qkv.shape
        q, k, v = qkv.unbind(3)
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_h, grad_w = torch.zeros_like(table_h), torch.zeros_like(table_w)
        bufs = _RelativeAttentionCPU._buffers(qkv, onehot, 5)  # q, k, v, out, grad_out
        grad_out = grad_out.to(qkv.dtype)
        for i in range(heads):
            q_head = _RelativeAttentionCPU._fill(bufs, q, k, v, table_h, table_w, i)[..., 0, :]
            bufs[3][..., :d] = out[:, :, i: i + 1]
            bufs[4][..., :d] = grad_out[:, :, i: i + 1]
            q_aug, k_aug, v_aug, o_aug, g_aug = (t.transpose(1, 2) for t in bufs)
            gq, gk, gv = _CPU_FLASH_BACKWARD(g_aug, q_aug, k_aug, v_aug, o_aug, lse[:, i: i + 1], 0.0, False,
                                             scale=ctx.scale)
            gq, gk, gv = (t.transpose(1, 2).reshape(b, height, width, -1) for t in (gq, gk, gv))
            g_h, g_w = gq[..., d: d + height], gq[..., d + height:]
            # the position logits are small matmuls of q with the tables: their chain rule by hand
            grad_qkv[..., 0, i, :] = (gq[..., :d] + torch.einsum("zabc,acd->zabd", g_h, table_h)
                                      + torch.einsum("zabe,bed->zabd", g_w, table_w))
            grad_h += torch.einsum("zabc,zabd->acd", g_h, q_head)
            grad_w += torch.einsum("zabe,zabd->bed", g_w, q_head)
            grad_qkv[..., 1, i, :] = gk[..., :d]
            grad_qkv[..., 2, i, :] = gv[..., :d]
        return grad_qkv, grad_h, grad_w, None, None


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
        # Training needs the gradient of the position logits: a bias that requires grad drops SDPA
        # to its unfused path (slower than fold, and an N x N tensor per head). Without gradients
        # the fused kernel takes the bias at almost no cost and runs at head dim d instead of
        # d + H + W. The choice depends on grad mode only, never on sizes.
        return "fold" if torch.is_grad_enabled() and qkv.requires_grad else "bias"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self._project(x)
        size = (x.shape[2], x.shape[3])
        if self.pos_enc == "relative" and self._cpu_training_fold(qkv):
            return self._relative_attention_cpu(qkv, size)
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

    def _cpu_training_fold(self, qkv: torch.Tensor) -> bool:
        # device and grad mode only: the graph never depends on sizes
        return (qkv.device.type == "cpu" and _CPU_FLASH_BACKWARD is not None and self._pick_impl(qkv) == "fold"
                and torch.is_grad_enabled() and qkv.requires_grad)

    def _relative_attention_cpu(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        b = qkv.shape[0]
        tables = []
        for table, length in ((self.rel_h, height), (self.rel_w, width)):
            pos = torch.arange(length, device=qkv.device)
            # expanded[a, c] = R[c - a + L - 1]: the rows each query position reads
            tables.append(rel_table_for_length(table, length)[pos[None, :] - pos[:, None] + (length - 1)].to(qkv.dtype))
        onehot = key_position_onehots(size, qkv.device, qkv.dtype)
        grid = qkv.view(b, height, width, 3, self.heads, self.dim_head)
        out = _RelativeAttentionCPU.apply(grid, tables[0], tables[1], onehot, self.scale)  # (B, N, heads, d)
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
        # one call over all heads (CUDA: flash / memory-efficient kernels; CPU without autograd)
        out = F.scaled_dot_product_attention(*_fold(q, k, v, logits_h, logits_w, onehot), scale=self.scale)
        return out[..., : self.dim_head]
