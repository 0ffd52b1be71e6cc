"""2-D relative (and absolute) position encodings of the BoT attention layer.

Index convention (arXiv 2101.11605, section 3 and figure 4): for a query at (row a, col b) and a key at (row c, col e) on an
H x W map, the relative position logit is

    q_ab . ( R_h[c - a + H - 1] + R_w[e - b + W - 1] )

i.e. a table of 2L - 1 rows is indexed by ``(key - query) + (L - 1)``; row ``L - 1`` is offset 0
(arXiv 2101.11605, section 3 and figure 4). :func:`relative_index` is that index along one axis and
:func:`relative_token_index` the same on flattened tokens (``token = row * W + col``). This module is
the one home of the position maths: every attention path, the attention maps of ``botnet.viz`` and
the resizing of tables when weights are loaded read the tables through the functions here.

Scaling: every function here takes q as given and returns the plain dot products ``q . R``. The
attention multiplies them by its ``pos_scale`` (the paper: ``d^-0.5``, the same factor as the
content term; timm's ``scale_pos_embed=False``: 1).

Any map size works. A map no larger than the table's native length L_t uses the same rows for the
same offsets (rows ``L_t - L .. L_t + L - 2``), which is exactly the paper's function restricted to
the smaller map. A larger map resamples the table along the offset axis by linear interpolation
with the end rows pinned (offset -(L_t-1) -> -(L-1), 0 -> 0, L_t-1 -> L-1): a choice of ours, as
the paper fixes the input size.
"""
from __future__ import annotations

import torch


def _lerp_rows(table: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` at fractional ``positions`` by linear interpolation (exact at integers)."""
    positions = positions.clamp(0, table.shape[0] - 1)
    lo = positions.floor()
    frac = (positions - lo).unsqueeze(-1).to(table.dtype)
    lo = lo.long()
    hi = (lo + 1).clamp(max=table.shape[0] - 1)
    return table[lo] * (1 - frac) + table[hi] * frac


def rel_table_for_length(table: torch.Tensor, length: int) -> torch.Tensor:
    """The (2 * length - 1, d) rows of a relative table that serve a map of ``length`` positions.

    Row ``j`` of the result holds offset ``o = j - (length - 1)``, read from the table at position
    ``(L_t - 1) + o * min(1, (L_t - 1) / (length - 1))``: the same row for the same offset when
    ``length <= L_t`` (exactly the paper's function), linear interpolation with the extreme offsets
    pinned to the table's ends when the map is larger. One formula with no branch on the size, so
    that traced and exported graphs keep height and width dynamic."""
    native = (table.shape[0] + 1) // 2
    offsets = torch.arange(2 * length - 1, device=table.device, dtype=torch.float32) - (length - 1)
    # min / max as tensor ops: Python's would put a guard on a symbolic length when exporting
    step = ((native - 1) / offsets[-1:].clamp(min=1)).clamp(max=1.0)
    return _lerp_rows(table, offsets * step + (native - 1))


def relative_index(length: int, device=None) -> torch.Tensor:
    """(L, L) long tensor: ``index[a, c] = c - a + L - 1``, the table row that query position a
    reads for key position c along one axis."""
    pos = torch.arange(length, device=device)
    return pos[None, :] - pos[:, None] + (length - 1)


def relative_token_index(q_idx, kv_idx, size: tuple[int, int]):
    """The table rows that query token ``q_idx`` reads for key token ``kv_idx`` on an H x W map,
    ``(c - a + H - 1, e - b + W - 1)`` for query (a, b) and key (c, e): :func:`relative_index` on
    flattened tokens, for code that sees token indices only (a FlexAttention ``score_mod``)."""
    height, width = size
    return kv_idx // width - q_idx // width + (height - 1), kv_idx % width - q_idx % width + (width - 1)


def token_positions(size: tuple[int, int], device, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of each token of an H x W map, two long tensors of length ``count`` (default
    H * W); entries past the map (padding) repeat the last token."""
    height, width = size
    # by broadcasting, not token // W and token % W: the ONNX exporter cannot translate a remainder
    # by a symbolic width
    rows = torch.arange(height, device=device)[:, None].expand(height, width).reshape(-1)
    cols = torch.arange(width, device=device)[None, :].expand(height, width).reshape(-1)
    pad = (count or height * width) - height * width
    if pad > 0:
        rows, cols = (torch.cat([t, t[-1:].expand(pad)]) for t in (rows, cols))
    return rows, cols


def relative_products(q: torch.Tensor, rows_h: torch.Tensor, rows_w: torch.Tensor, scale: float = 1.0):
    """``scale * q . R^T`` along both axes: every query with every table row, (..., N, 2H - 1) and
    (..., N, 2W - 1), in float32 at least (kernels that add them to scores do so in float32).
    ``rows_h``, ``rows_w``: the tables for the map (:func:`rel_table_for_length`). Entry
    :func:`relative_token_index` of a key is that key's position logit."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    return tuple((q @ (rows * scale).to(q.dtype).t()).to(dtype) for rows in (rows_h, rows_w))


def expand_rel_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """(L, L, d) rows of a relative table for a map of ``length`` positions along one axis:
    ``expanded[a, c] = R[c - a + L - 1]`` (the table first resized by :func:`rel_table_for_length`)."""
    return rel_table_for_length(table, length)[relative_index(length, table.device)]


def resize_abs_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resample an absolute table (L_t, d) to (length, d), linear with the ends pinned (ViT style).

    This is our choice for the ablation's absolute encoding at other sizes; the paper fixes it."""
    native = table.shape[0]
    positions = torch.arange(length, device=table.device, dtype=torch.float32)
    return _lerp_rows(table, positions * ((native - 1) / max(length - 1, 1)))


def resize_table(table: torch.Tensor, rows: int, relative: bool) -> torch.Tensor:
    """A stored relative (2L - 1 rows) or absolute (L rows) table resized to ``rows`` rows: what a
    layer with other table sizes needs when it loads the weights."""
    return rel_table_for_length(table, (rows + 1) // 2) if relative else resize_abs_table(table, rows)


def absolute_grid(abs_h: torch.Tensor, abs_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H * W, d) absolute embedding of every key position: ``emb[c * W + e] = E_h[c] + E_w[e]``,
    the tables resized to the map by :func:`resize_abs_table`."""
    height, width = size
    grid = resize_abs_table(abs_h, height)[:, None, :] + resize_abs_table(abs_w, width)[None, :, :]
    return grid.reshape(height * width, -1)


def relative_logits_expanded(q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor, scale: float):
    """Per-query relative logits from expanded tables (:func:`expand_rel_table`), for q laid out as
    a map of heads: q (B, H, W, g, d) with g heads, table_h (H, H, d), table_w (W, W, d).
    Returns ``scale * [q_ab . R_h[c - a + H - 1]]`` (B * g, N, H) and the same over columns
    (B * g, N, W): :func:`relative_logits_2d`'s values, as two einsums with no gather, whose chain
    rule :func:`relative_logits_expanded_grads` writes out for hand-written backwards."""
    b, height, width, g, _ = q.shape
    logits_h = torch.einsum("zabnd,acd->znabc", q, table_h).mul_(scale)
    logits_w = torch.einsum("zabnd,bed->znabe", q, table_w).mul_(scale)
    return logits_h.reshape(b * g, height * width, height), logits_w.reshape(b * g, height * width, width)


def relative_logits_expanded_grads(grad_h: torch.Tensor, grad_w: torch.Tensor, q: torch.Tensor, table_h: torch.Tensor,
                                   table_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chain rule of :func:`relative_logits_expanded` (with the scale already applied to the
    incoming gradients): ``grad_h`` (B * g, N, H) and ``grad_w`` (B * g, N, W) -> the gradients of
    q (B, H, W, g, d), table_h and table_w."""
    b, height, width, _, _ = q.shape
    g_h = grad_h.view(b, -1, height, width, height)
    g_w = grad_w.view(b, -1, height, width, width)
    grad_q = torch.einsum("znabc,acd->zabnd", g_h, table_h) + torch.einsum("znabe,bed->zabnd", g_w, table_w)
    return grad_q, torch.einsum("znabc,zabnd->acd", g_h, q), torch.einsum("znabe,zabnd->bed", g_w, q)


def relative_logits_1d(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Relative logits along the last spatial axis.

    q: (..., W, d) queries along one axis; table: (2W - 1, d), row j = offset j - (W - 1).
    Returns (..., W, W) with ``out[..., b, e] = q[..., b, :] . table[e - b + W - 1]``.
    Computed as the small product q . table^T (..., W, 2W - 1) followed by a gather, so the cost is
    O(W * (2W - 1) * d) per row rather than anything quadratic in the number of tokens.
    """
    width = q.shape[-2]
    logits = q @ table.to(q.dtype).t()  # (..., W, 2W - 1)
    index = relative_index(width, q.device)  # [b, e] -> e - b + W - 1
    return logits.gather(-1, index.expand(*logits.shape[:-1], width))


def relative_logits_2d(
    q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query relative logits along rows and columns.

    q: (B, heads, H * W, d) queries as given (unscaled: the caller applies its ``pos_scale``);
    rel_h, rel_w: tables of any native size.
    Returns ``(logits_h, logits_w)`` of shapes (B, heads, H * W, H) and (B, heads, H * W, W):
    ``logits_h[..., a * W + b, c] = q_ab . R_h[c - a + H - 1]`` and
    ``logits_w[..., a * W + b, e] = q_ab . R_w[e - b + W - 1]``.
    The full position logit of query (a, b) and key (c, e) is ``logits_h[.., c] + logits_w[.., e]``.
    """
    height, width = size
    bh = q.shape[:-2]
    grid = q.reshape(*bh, height, width, q.shape[-1])  # (B, heads, H, W, d)
    lw = relative_logits_1d(grid, rel_table_for_length(rel_w, width))  # (.., H, W, W)
    lh = relative_logits_1d(grid.transpose(-2, -3), rel_table_for_length(rel_h, height))  # (.., W, H, H)
    lh = lh.transpose(-2, -3)  # (.., H, W, H)
    return lh.reshape(*bh, height * width, height), lw.reshape(*bh, height * width, width)


def relative_bias_2d(logits_h: torch.Tensor, logits_w: torch.Tensor) -> torch.Tensor:
    """Expand per-axis logits to the full (B, heads, N, N) additive attention bias."""
    n, height = logits_h.shape[-2], logits_h.shape[-1]
    width = logits_w.shape[-1]
    bias = logits_h[..., :, None] + logits_w[..., None, :]  # (.., N, H, W)
    return bias.reshape(*logits_h.shape[:-2], n, height * width)


def key_position_onehots(size: tuple[int, int], device, dtype) -> torch.Tensor:
    """(H * W, H + W) one-hot rows [row(c) | col(e)] of every key position (c, e).

    Appending these to the keys and the per-query logits of :func:`relative_logits_2d` to the
    queries turns the relative term into part of one dot product:
    ``[q | l_h | l_w] . [k | onehot_row | onehot_col] = q.k + l_h[c] + l_w[e]``,
    so fused attention kernels run with no (N x N) bias at all."""
    height, width = size
    row, col = token_positions(size, device)
    rows = row[:, None] == torch.arange(height, device=device)[None, :]
    cols = col[:, None] == torch.arange(width, device=device)[None, :]
    return torch.cat([rows, cols], dim=1).to(dtype)
