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

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"MHSA2d expects a (B, {self.dim}, H, W) tensor, got shape {tuple(x.shape)}")
        # The 1x1 conv as a matmul over tokens: its output is (B, N, [q|k|v], heads, d), the
        # token-major layout the fused CPU kernel works in, so q, k and v are views (no transposing
        # copies forward or backward); on a channels_last input the tokens are a view too.
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).transpose(1, 3).unbind(2)
        return q, k, v  # each (B, heads, N, d)

    def _merge_heads(self, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # (B, heads, N, d) -> (B, heads * d, H, W). The fused kernels return a token-major buffer,
        # so the result is a channels_last view rather than a copy.
        b = out.shape[0]
        return out.transpose(1, 2).reshape(b, size[0], size[1], self.out_dim).permute(0, 3, 1, 2)

    def _pick_impl(self, q: torch.Tensor) -> str:
        if self.attn_impl != "auto":
            return self.attn_impl
        # Training needs the gradient of the position logits: a bias that requires grad drops SDPA
        # to its unfused path (slower than fold, and an N x N tensor per head). Without gradients
        # the fused kernel takes the bias at almost no cost and runs at head dim d instead of
        # d + H + W. The choice depends on grad mode only, never on sizes.
        return "fold" if torch.is_grad_enabled() and q.requires_grad else "bias"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split_heads(x)
        size = (x.shape[2], x.shape[3])
        if self.pos_enc == "relative":
            out = self._relative_attention(q, k, v, size)
        else:
            if self.pos_enc == "absolute":
                h, w = size
                emb = resize_abs_table(self.abs_h, h)[:, None, :] + resize_abs_table(self.abs_w, w)[None, :, :]
                k = k + emb.reshape(h * w, self.dim_head).to(k.dtype)  # q.(k + emb) = q.k + q.emb
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self._merge_heads(out, size)

    def _relative_attention(self, q, k, v, size: tuple[int, int]) -> torch.Tensor:
        # q is left unscaled: SDPA's ``scale`` multiplies the whole logit, content and position
        # term alike (spec: logits = d^-0.5 * (q.k + q.r)), which saves a pass over q and its grad.
        logits_h, logits_w = relative_logits_2d(q, self.rel_h, self.rel_w, size)
        if self._pick_impl(q) == "bias":
            bias = relative_bias_2d(logits_h, logits_w) * self.scale
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        onehot = key_position_onehots(size, q.device, k.dtype)
        q_aug = torch.cat([q, logits_h.to(q.dtype), logits_w.to(q.dtype)], dim=-1)
        k_aug = torch.cat([k, onehot.expand(*k.shape[:-1], -1)], dim=-1)
        # fused CPU kernels want one head dim for q, k and v: pad v, then drop the padding
        v_aug = F.pad(v, (0, onehot.shape[-1]))
        out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=self.scale)
        return out[..., : self.dim_head]
