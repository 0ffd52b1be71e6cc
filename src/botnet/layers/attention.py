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

``pos_enc`` selects the paper's position-encoding ablation (section 6, the 36-epoch table):
``None`` qk only, ``"relative_only"`` qr only (relative logits, no content logits q.k: k is
computed but unused), ``"relative"`` qk + qr relative (the BoTNet), ``"absolute"`` qk + qr absolute.

``attn_impl`` selects how the relative term is computed, by name from :data:`PATHS` (each path
lives in its module; all compute one function), or ``"auto"``: a choice per call by device,
dtype, gradients and map size (:meth:`MHSA2d.choose_path`). The other encodings have one path,
"plain" (fused SDPA).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from botnet.layers import chunked_attention, flex_attention, sdpa_attention
from botnet.layers.flex_attention import flex_available
from botnet.layers.pos_embed import relative_bias_2d, relative_logits_2d

#: the paper's four position encodings (see the module docstring)
POS_ENCODINGS = ("relative", "absolute", None, "relative_only")
#: the encodings with relative tables, computed by the paths a user chooses with ``attn_impl``
RELATIVE_ENCODINGS = ("relative", "relative_only")
#: every path by name: ``(layer, (B, N, 3 * heads * d) projection, (H, W)) -> (B, N, heads, d)``.
#: "chunked": a group of heads and a block of queries at a time, the position logits a broadcast
#: bias of the block (no N x N tensor, every matmul at head dim d; a hand-written backward);
#: "fold": per-query position logits appended to q, one-hot key positions to k, one fused SDPA
#: call (no N x N bias; head dim d + H + W); "bias": the (B, heads, N, N) additive bias as SDPA's
#: ``attn_mask``; "flex": PyTorch's FlexAttention with the position logits added by a
#: ``score_mod`` (no N x N tensor, head dim d; compiled once per shape family); "plain": fused SDPA
#: for the encodings without a relative term.
PATHS = {
    "chunked": chunked_attention.attend,
    "fold": sdpa_attention.fold,
    "bias": sdpa_attention.bias,
    "flex": flex_attention.attend,
    "plain": sdpa_attention.plain,
}
#: the values of ``attn_impl``: the paths of the relative term, or "auto"
ATTN_IMPLS = ("auto", *(name for name in PATHS if name != "plain"))

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


#: whether this CPU has AMX tiles (bf16 matrix units); read once, at import
CPU_HAS_AMX = _cpu_has_amx()


def cpu_attn_impl(has_amx: bool, bf16: bool) -> str:
    """The CPU choice of "auto": the fold where AMX runs the fused kernel's bf16 matmuls, else the
    chunked path (the faster of the two in each case measured; BENCHMARKS.md, "The CPU choice of
    auto"). Never flex on a CPU: its kernel is compiled anew for each map size, which inference
    over images of many sizes would pay again and again."""
    return "fold" if has_amx and bf16 else "chunked"


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
        #: the factor of the content logits q.k: d^-0.5, or 0 for the qr-only ablation
        self.qk_scale = 0.0 if pos_enc == "relative_only" else self.scale
        #: the factor of the position logits: the content term's (the paper) or 1 (timm's default)
        self.pos_scale = self.scale if scale_pos_embed else 1.0
        self.qkv = nn.Conv2d(dim, 3 * self.out_dim, 1, bias=qkv_bias)
        if pos_enc in RELATIVE_ENCODINGS:
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

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The q, k, v projection of a (B, dim, H, W) map: (B, N, 3 * heads * d), token-major."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"MHSA2d expects a (B, {self.dim}, H, W) tensor, got shape {tuple(x.shape)}")
        # The 1x1 conv as a matmul over tokens: its output is (B, N, [q|k|v], heads, d), the
        # token-major layout the fused CPU kernel works in, so q, k and v are views (no transposing
        # copies forward or backward); on a channels_last input the tokens are a view too.
        tokens = x.flatten(2).transpose(1, 2)
        return F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # (B, N, 3 * heads * d)

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, 3 * heads * d) projection -> q, k, v, each a (B, heads, N, d) view."""
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).transpose(1, 3).unbind(2)
        return q, k, v

    def position_logits(self, q: torch.Tensor, size: tuple[int, int], queries: torch.Tensor | None = None):
        """The relative term of the logits, times ``pos_scale``: (B, heads, P, N) for the query
        tokens ``queries`` (default all N) of q (B, heads, N, d) on an (H, W) map."""
        logits_h, logits_w = relative_logits_2d(q, self.rel_h, self.rel_w, size)  # (B, heads, N, H), (.., W)
        if queries is not None:
            logits_h, logits_w = logits_h[:, :, queries], logits_w[:, :, queries]
        return relative_bias_2d(logits_h * self.pos_scale, logits_w * self.pos_scale)

    def logits(self, x: torch.Tensor, queries: torch.Tensor | None = None, content: bool = True) -> torch.Tensor:
        """The attention logits of a (B, dim, H, W) map, (B, heads, P, N) for the query tokens
        ``queries`` (default all): ``qk_scale q.k + pos_scale (q.R_h + q.R_w)``, the softmax's
        input; ``content=False``: the position term alone. Relative encodings only."""
        if self.pos_enc not in RELATIVE_ENCODINGS:
            raise ValueError(f"logits are computed for relative encodings, not pos_enc={self.pos_enc!r}")
        q, k, _ = self.split_heads(self.project(x))  # each (B, heads, N, d)
        logits = self.position_logits(q, (x.shape[2], x.shape[3]), queries)
        if content and self.qk_scale:
            q = q if queries is None else q[:, :, queries]
            logits = logits + (q @ k.transpose(-1, -2)) * self.qk_scale
        return logits

    def choose_path(self, qkv: torch.Tensor, size: tuple[int, int] | None = None) -> str:
        """The name in :data:`PATHS` of this call's path: "plain" without a relative term, else
        ``attn_impl`` unless it is "auto". ``size``: the (H, W) of the map (CUDA's rule reads it;
        default ``feat_size``).

        "auto": CPU, by what the CPU has and the dtype (:func:`cpu_attn_impl`). CUDA: flex, or the
        fold where its widened head dim fits the flash kernels (:func:`cuda_attn_impl`, from d, H
        and W; never an N x N tensor). Elsewhere (MPS, meta): the fused SDPA kernels, with
        gradients the fold (a bias that requires grad loses the fused kernel), without them a
        no-grad bias at head dim d."""
        if self.pos_enc not in RELATIVE_ENCODINGS:
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
            return cpu_attn_impl(CPU_HAS_AMX, qkv.dtype == torch.bfloat16)
        if device == "cuda":
            height, width = size if size is not None else self.feat_size
            return cuda_attn_impl(self.dim_head, height, width, flex_available("cuda"))
        return "fold" if training else "bias"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.project(x)  # (B, N, 3 * heads * d)
        size = (x.shape[2], x.shape[3])
        out = PATHS[self.choose_path(qkv, size)](self, qkv, size)  # (B, N, heads, d)
        # (B, N, heads, d) -> (B, heads * d, H, W); a channels_last view of the token-major buffer
        b, (height, width) = x.shape[0], size
        return out.reshape(b, height, width, self.out_dim).permute(0, 3, 1, 2)
