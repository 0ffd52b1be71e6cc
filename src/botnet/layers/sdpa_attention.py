"""The paths of :class:`~botnet.layers.MHSA2d` that are one call of PyTorch's fused
``F.scaled_dot_product_attention`` (SDPA), side by side: "fold", "bias" and "plain".

Each takes the layer and its (B, N, 3 * heads * d) projection and returns (B, N, heads, d); the
logits are ``qk_scale * q.k + pos_scale * (position term)`` (arXiv 2101.11605, section 3), with
``qk_scale`` 0 for the ``relative_only`` encoding (no content term).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from botnet.layers.pos_embed import absolute_grid, key_position_onehots, relative_logits_2d


def fold(layer, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[q | l_h | l_w] . [k | onehot_row | onehot_col] = q.k + l_h[c] + l_w[e]: the per-query
    position logits appended to q and each key's one-hot row and column to k, one fused call over
    all heads (CUDA: the flash / memory-efficient kernels) with no N x N bias, at head dim
    d + H + W. Without the content term only the logits and the one-hots are folded (head dim H + W)."""
    q, k, v = layer.split_heads(qkv)
    logits_h, logits_w = relative_logits_2d(q, layer.rel_h, layer.rel_w, size)  # (B, heads, N, H), (.., W)
    # SDPA's ``scale`` multiplies the whole dot product, so the appended logits carry pos_scale / scale
    scale = layer.qk_scale or layer.pos_scale
    if layer.pos_scale != scale:
        logits_h, logits_w = logits_h * (layer.pos_scale / scale), logits_w * (layer.pos_scale / scale)
    onehot = key_position_onehots(size, q.device, k.dtype)  # (N, H + W)
    content_q, content_k = ([q], [k]) if layer.qk_scale else ([], [])
    q_aug = torch.cat([*content_q, logits_h.to(q.dtype), logits_w.to(q.dtype)], dim=-1)  # (B, heads, N, d + H + W)
    k_aug = torch.cat([*content_k, onehot.expand(*k.shape[:-1], -1)], dim=-1)
    # the fused kernels want one head dim for q, k and v: the narrower side is zero-padded, and
    # v's extra columns dropped
    width = max(q_aug.shape[-1], v.shape[-1])
    q_aug, k_aug = F.pad(q_aug, (0, width - q_aug.shape[-1])), F.pad(k_aug, (0, width - k_aug.shape[-1]))
    v_aug = F.pad(v, (0, width - v.shape[-1]))
    out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=scale)[..., : layer.dim_head]
    return out.transpose(1, 2)


def bias(layer, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The (B, heads, N, N) additive position bias passed as SDPA's ``attn_mask``: plain ops, so
    it is what traced graphs (the ONNX exporter) take."""
    q, k, v = layer.split_heads(qkv)
    position = layer.position_logits(q, size).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=position, scale=layer.qk_scale).transpose(1, 2)


def plain(layer, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """No position term, or the absolute one: q.(k + emb) = q.k + q.emb[key position]."""
    q, k, v = layer.split_heads(qkv)
    if layer.pos_enc == "absolute":
        emb = absolute_grid(layer.abs_h, layer.abs_w, size)  # (N, d)
        k = k + emb.to(k.dtype) * (layer.pos_scale / layer.qk_scale)
    return F.scaled_dot_product_attention(q, k, v, scale=layer.qk_scale).transpose(1, 2)
