"""Multi-head self-attention over a 2-D feature map (the MHSA of the BoT block).

Parameter layout (documented so that weights from other implementations map onto it):

- ``qkv``: one bias-free 1x1 ``Conv2d`` with weight (3 * heads * dim_head, dim, 1, 1); output
  channels are ordered [q | k | v], each head-major (channel = head * dim_head + i).
- ``rel_h`` (2 * Hr - 1, dim_head) and ``rel_w`` (2 * Wr - 1, dim_head): relative tables shared by
  all heads, (Hr, Wr) = ``feat_size``; row ``L - 1`` is offset 0 (see ``pos_embed``).
- ``abs_h`` (Hr, dim_head) and ``abs_w`` (Wr, dim_head) for ``pos_enc="absolute"``.

Maths (arXiv 2101.11605, section 3 and figure 4):
``logits = d^-0.5 * (q.k + q.R_h[c-a+H-1] + q.R_w[e-b+W-1])``, softmax over all H*W keys,
weighted sum of v, heads concatenated. No output projection, no dropout. q is scaled before both
terms. ``scale_pos_embed=False`` leaves the position term unscaled (``d^-0.5 q.k + q.R``), as
timm's ``BottleneckAttn`` does by default: an option for its weights, not the paper's function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from botnet.layers.chunked_attention import chunked_relative_attention
from botnet.layers.flex_attention import (
    flex_available,
    flex_relative_attention,
    flex_relative_attention_cpu,
    position_products,
)
from botnet.layers.pos_embed import (
    expand_rel_table,
    key_position_onehots,
    rel_table_for_length,
    relative_bias_2d,
    relative_logits_2d,
    resize_abs_table,
)

POS_ENCODINGS = ("relative", "absolute", None)
#: How the relative term is computed:
#: "chunked" a group of heads and a block of queries at a time with the position logits as a
#: broadcast bias of the block (``chunked_attention``; no N x N tensor, every matmul at head dim d);
#: "fold" appends per-query position logits to q and one-hot key positions to k, one fused
#: ``F.scaled_dot_product_attention`` call (no N x N bias; head dim d + H + W);
#: "bias" builds the (B, heads, N, N) additive bias and passes it as ``attn_mask``;
#: "flex" runs PyTorch's FlexAttention with the position logits added by a ``score_mod``
#: (``flex_attention``; no N x N tensor, head dim d; compiled once per shape family);
#: "auto" picks per call (see ``MHSA2d._pick_impl``; the figures are in BENCHMARKS.md).
ATTN_IMPLS = ("auto", "chunked", "fold", "bias", "flex")

#: CUDA: the largest head dim of the flash kernels. Past it SDPA falls back to a kernel that holds
#: the N x N scores, so the fold (head dim d + H + W) is only picked within it.
FLASH_MAX_HEAD_DIM = 256
#: CUDA: the fold's matmuls cost (d + H + W) / d times plain attention's, flex's about plain's plus
#: the score_mod's two reads per score; the fold is picked while it widens d by at most this factor
#: (small maps, e.g. 16 x 16 at d = 128, where it also needs no compilation), flex past it.
FOLD_MAX_WIDENING = 1.25


def cuda_attn_impl(dim_head: int, height: int, width: int, flex_ok: bool = True) -> str:
    """The CUDA choice of "auto", from sizes known when the graph is traced (never N x N):
    the fold while ``d + H + W <= min(FLASH_MAX_HEAD_DIM, FOLD_MAX_WIDENING * d)``; else flex
    (``flex_ok``: Triton is there to compile it); else the fold if it fits the flash kernels; else
    the chunked path (blocks of queries, any device)."""
    widened = dim_head + height + width
    if widened <= min(FLASH_MAX_HEAD_DIM, FOLD_MAX_WIDENING * dim_head):
        return "fold"
    if flex_ok:
        return "flex"
    return "fold" if widened <= FLASH_MAX_HEAD_DIM else "chunked"


def _cpu_has_amx() -> bool:
    caps = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.10
    if caps is not None:
        found = caps()
        return bool(found.get("amx_bf16") or found.get("amx_tile"))
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


#: whether this CPU has AMX tiles (Intel Xeon since Sapphire Rapids); read once, at import
CPU_HAS_AMX = _cpu_has_amx()
#: CPU choice of "auto": (AMX, bf16, training) -> path, the fastest measured (BENCHMARKS.md,
#: "FlexAttention path and the CPU rule"). Without AMX (AMD EPYC, AVX2) the chunked path is the
#: fastest in every cell. On a Xeon with AMX (2 cores, ``attention_layer.py --quick``, ms, ours /
#: fold / plain SDPA): training fp32 382 / 391 / 304, bf16 243 / 227 / 179; inference fp32
#: 155 / 171 / 116, bf16 71 / 62 / 43: the faster of the two in each cell. Flex is not taken on a
#: CPU: it was not measured on AMX, and its kernel is compiled for each map size (12 s for the
#: first, 3.7 to 4.6 s for each further one, against 9-16 ms for the layer, on a 2-core AMD
#: EPYC: ``benchmarks/flex_compile.py``), which inference over photos of many sizes would pay
#: again and again.
CPU_RULE = {
    (False, False, True): "chunked", (False, True, True): "chunked",
    (False, False, False): "chunked", (False, True, False): "chunked",
    (True, False, True): "chunked", (True, True, True): "fold",
    (True, False, False): "chunked", (True, True, False): "fold",
}


def cpu_attn_impl(has_amx: bool, bf16: bool, training: bool) -> str:
    """The CPU choice of "auto" (see ``CPU_RULE``)."""
    return CPU_RULE[(bool(has_amx), bool(bf16), bool(training))]


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
        scale_pos_embed: bool = True,
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
        self.scale_pos_embed = scale_pos_embed
        #: the factor of the position logits: the content term's (the paper) or 1 (timm's default)
        self.pos_scale = self.scale if scale_pos_embed else 1.0
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
                f"feat_size={self.feat_size}, attn_impl={self.attn_impl!r}"
                + ("" if self.scale_pos_embed else ", scale_pos_embed=False"))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"MHSA2d expects a (B, {self.dim}, H, W) tensor, got shape {tuple(x.shape)}")
        # The 1x1 conv as a matmul over tokens: its output is (B, N, [q|k|v], heads, d), the
        # token-major layout the fused CPU kernel works in, so q, k and v are views (no transposing
        # copies forward or backward); on a channels_last input the tokens are a view too.
        tokens = x.flatten(2).transpose(1, 2)
        return F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # (B, N, 3 * heads * d)

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # (B, N, 3 * heads * d) -> q, k, v, each a (B, heads, N, d) view
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).transpose(1, 3).unbind(2)
        return q, k, v

    def _pick_impl(self, qkv: torch.Tensor, size: tuple[int, int] | None = None) -> str:
        """The strategy of this call: "plain" without relative encoding, else one of ``ATTN_IMPLS``.
        ``size``: the (H, W) of the map (CUDA's rule reads it; default ``feat_size``).

        CPU: by what the CPU has, dtype and grad mode (:func:`cpu_attn_impl`; the chunked path
        without AMX, the chunked path or the fold with it). CUDA: flex, or the fold where its widened head dim fits the flash kernels
        (:func:`cuda_attn_impl`, from d, H and W; never an N x N tensor). Elsewhere (MPS, meta):
        the fused SDPA kernels, with gradients the fold (a bias that requires grad loses the fused
        kernel), without them a no-grad bias at head dim d."""
        if self.pos_enc != "relative":
            return "plain"
        if self.attn_impl != "auto":
            return self.attn_impl
        if torch.jit.is_tracing():
            # TorchScript tracing (the ONNX exporter detectors go through) records the chunked
            # path's autograd Function and flex's compiled kernel as opaque nodes, which the
            # exporter turned into constants: the bias path is plain ops, which trace
            return "bias"
        device = qkv.device.type
        training = torch.is_grad_enabled() and qkv.requires_grad
        if device == "cpu":
            return cpu_attn_impl(CPU_HAS_AMX, qkv.dtype == torch.bfloat16, training)
        if device == "cuda":
            height, width = size if size is not None else self.feat_size
            return cuda_attn_impl(self.dim_head, height, width, flex_available("cuda"))
        return "fold" if training else "bias"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self._project(x)  # (B, N, 3 * heads * d)
        size = (x.shape[2], x.shape[3])
        impl = self._pick_impl(qkv, size)
        if impl == "chunked":
            out = self._attend_chunked(qkv, size)
        elif impl == "flex":
            out = self._attend_flex(qkv, size)
        elif impl == "fold":
            out = self._attend_fold(qkv, size)
        elif impl == "bias":
            out = self._attend_bias(qkv, size)
        else:
            out = self._attend_plain(qkv, size)
        # (B, N, heads, d) -> (B, heads * d, H, W); a channels_last view of the token-major buffer
        b, (height, width) = x.shape[0], size
        return out.reshape(b, height, width, self.out_dim).permute(0, 3, 1, 2)

    # -- one function per strategy: (B, N, 3 * heads * d) projection -> (B, N, heads, d) ----------

    def _attend_chunked(self, qkv: torch.Tensor, size: tuple[int, int], attend=chunked_relative_attention):
        height, width = size
        table_h = expand_rel_table(self.rel_h, height).to(qkv.dtype)  # (H, H, d)
        table_w = expand_rel_table(self.rel_w, width).to(qkv.dtype)  # (W, W, d)
        grid = qkv.view(qkv.shape[0], height, width, 3, self.heads, self.dim_head)
        return attend(grid, table_h, table_w, self.scale, self.pos_scale, self.feat_size)

    def _attend_flex(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # FlexAttention, the position term added per score by a score_mod (see flex_attention); the
        # CPU has no flex backward, so there it takes the chunked path's inputs and backward
        if qkv.device.type == "cpu":
            return self._attend_chunked(qkv, size, attend=flex_relative_attention_cpu)
        q, k, v = self._split_heads(qkv)
        height, width = size
        rows_h = rel_table_for_length(self.rel_h, height)  # (2H - 1, d)
        rows_w = rel_table_for_length(self.rel_w, width)
        pos_h, pos_w = position_products(q, rows_h, rows_w, self.pos_scale)
        return flex_relative_attention(q, k, v, pos_h, pos_w, self.scale).transpose(1, 2)

    def _attend_fold(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # [q | l_h | l_w] . [k | onehot_row | onehot_col] = q.k + l_h[c] + l_w[e]: one fused call
        # over all heads (CUDA: flash / memory-efficient kernels), no N x N bias. SDPA's ``scale``
        # multiplies the whole dot product, so the appended logits carry pos_scale / scale.
        q, k, v = self._split_heads(qkv)
        logits_h, logits_w = relative_logits_2d(q, self.rel_h, self.rel_w, size)  # (B, heads, N, H), (.., W)
        if self.pos_scale != self.scale:
            logits_h, logits_w = logits_h * (self.pos_scale / self.scale), logits_w * (self.pos_scale / self.scale)
        onehot = key_position_onehots(size, q.device, k.dtype)  # (N, H + W)
        q_aug = torch.cat([q, logits_h.to(q.dtype), logits_w.to(q.dtype)], dim=-1)  # (B, heads, N, d + H + W)
        k_aug = torch.cat([k, onehot.expand(*k.shape[:-1], -1)], dim=-1)
        # the fused kernels want one head dim for q, k and v: v is zero-padded, its extra columns dropped
        v_aug = F.pad(v, (0, onehot.shape[-1]))
        out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=self.scale)[..., : self.dim_head]
        return out.transpose(1, 2)

    def _attend_bias(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # the (B, heads, N, N) additive bias; the small per-axis logits are scaled, not the bias
        q, k, v = self._split_heads(qkv)
        logits_h, logits_w = relative_logits_2d(q, self.rel_h, self.rel_w, size)
        bias = relative_bias_2d(logits_h * self.pos_scale, logits_w * self.pos_scale).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale).transpose(1, 2)

    def _attend_plain(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # no position term, or the absolute one: q.(k + emb) = q.k + q.emb[key position]
        q, k, v = self._split_heads(qkv)
        if self.pos_enc == "absolute":
            h, w = size
            emb = resize_abs_table(self.abs_h, h)[:, None, :] + resize_abs_table(self.abs_w, w)[None, :, :]
            k = k + emb.reshape(h * w, self.dim_head).to(k.dtype) * (self.pos_scale / self.scale)
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale).transpose(1, 2)
