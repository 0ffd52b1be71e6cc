import torch
import torch.nn.functional as F

from botnet.layers.pos_embed import (
    absolute_grid,
    expand_rel_table,
    relative_index,
    key_position_onehots,
    rel_table_for_length,
    relative_logits_1d,
    relative_logits_2d,
    relative_logits_expanded,
    relative_logits_expanded_grads,
    relative_products,
    relative_token_index,
    resize_abs_table,
    resize_table,
    token_positions,
)


def test_relative_logits_1d_index_convention():
    q = torch.randn(2, 5, 3)
    table = torch.randn(9, 3)  # 2 * 5 - 1
    out = relative_logits_1d(q, table)
    for b in range(5):
        for e in range(5):
            torch.testing.assert_close(out[:, b, e], q[:, b] @ table[e - b + 4])


def test_relative_logits_2d_rows_and_cols():
    H, W, d = 3, 4, 2
    q = torch.randn(1, 1, H * W, d)
    rel_h, rel_w = torch.randn(2 * H - 1, d), torch.randn(2 * W - 1, d)
    lh, lw = relative_logits_2d(q, rel_h, rel_w, (H, W))
    assert lh.shape == (1, 1, H * W, H) and lw.shape == (1, 1, H * W, W)
    for a in range(H):
        for b in range(W):
            for c in range(H):
                torch.testing.assert_close(lh[0, 0, a * W + b, c], q[0, 0, a * W + b] @ rel_h[c - a + H - 1])
            for e in range(W):
                torch.testing.assert_close(lw[0, 0, a * W + b, e], q[0, 0, a * W + b] @ rel_w[e - b + W - 1])


def test_smaller_map_keeps_same_offsets():
    t = torch.randn(2 * 7 - 1, 4)
    for length in range(1, 8):
        sub = rel_table_for_length(t, length)
        assert torch.equal(sub[length - 1], t[6])  # offset 0
        assert torch.equal(sub, t[7 - length: 7 + length - 1])


def test_larger_map_interpolates_with_pinned_ends():
    t = torch.randn(2 * 4 - 1, 3)
    big = rel_table_for_length(t, 9)
    assert big.shape == (17, 3)
    torch.testing.assert_close(big[0], t[0])
    torch.testing.assert_close(big[8], t[3])
    torch.testing.assert_close(big[-1], t[-1])
    expected = F.interpolate(t.t()[None], size=17, mode="linear", align_corners=True)[0].t()
    torch.testing.assert_close(big, expected)


def test_expanded_table_follows_the_index_convention():
    t = torch.randn(2 * 5 - 1, 3)
    for length in (1, 3, 5):
        rows = rel_table_for_length(t, length)
        expanded = expand_rel_table(t, length)
        assert expanded.shape == (length, length, 3)
        for a in range(length):
            for c in range(length):
                assert int(relative_index(length)[a, c]) == c - a + length - 1
                assert torch.equal(expanded[a, c], rows[c - a + length - 1])


def test_single_row_table_and_abs_resize():
    t = torch.randn(1, 3)
    assert torch.equal(rel_table_for_length(t, 4), t.expand(7, 3))
    a = torch.randn(4, 3)
    assert torch.equal(resize_abs_table(a, 4), a)
    torch.testing.assert_close(resize_abs_table(a, 7)[[0, -1]], a[[0, -1]])


def test_key_onehots():
    oh = key_position_onehots((2, 3), "cpu", torch.float32)
    assert oh.shape == (6, 5)
    assert oh.sum(1).eq(2).all()
    assert oh[4, 1] == 1 and oh[4, 2 + 1] == 1  # token 4 = (row 1, col 1)


def test_token_index_is_the_axis_index_on_flattened_tokens():
    H, W = 3, 4
    q_idx, kv_idx = torch.meshgrid(torch.arange(H * W), torch.arange(H * W), indexing="ij")
    rows, cols = relative_token_index(q_idx, kv_idx, (H, W))
    for qi in range(H * W):
        for ki in range(H * W):
            (a, b), (c, e) = divmod(qi, W), divmod(ki, W)
            assert (int(rows[qi, ki]), int(cols[qi, ki])) == (relative_index(H)[a, c], relative_index(W)[b, e])


def test_token_positions_with_padding():
    rows, cols = token_positions((2, 3), "cpu", 8)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1, 1, 1] and cols.tolist() == [0, 1, 2, 0, 1, 2, 2, 2]


def test_products_read_at_the_token_index_are_the_logits():
    H, W, d = 3, 5, 4
    q = torch.randn(2, 2, H * W, d, dtype=torch.float64)
    rel_h, rel_w = torch.randn(2 * H - 1, d, dtype=torch.float64), torch.randn(2 * W - 1, d, dtype=torch.float64)
    pos_h, pos_w = relative_products(q, rel_h, rel_w, 0.5)
    lh, lw = relative_logits_2d(q, rel_h, rel_w, (H, W))
    q_idx, kv_idx = torch.meshgrid(torch.arange(H * W), torch.arange(H * W), indexing="ij")
    rows, cols = relative_token_index(q_idx, kv_idx, (H, W))
    kr, kc = token_positions((H, W), "cpu")
    torch.testing.assert_close(pos_h.gather(-1, rows.expand(2, 2, -1, -1)), 0.5 * lh[..., kr])
    torch.testing.assert_close(pos_w.gather(-1, cols.expand(2, 2, -1, -1)), 0.5 * lw[..., kc])


def test_expanded_logits_and_their_chain_rule():
    torch.manual_seed(0)
    B, H, W, g, d = 2, 3, 4, 2, 5
    q = torch.randn(B, H, W, g, d, dtype=torch.float64, requires_grad=True)
    rel_h = torch.randn(2 * H - 1, d, dtype=torch.float64)
    rel_w = torch.randn(2 * W - 1, d, dtype=torch.float64)
    table_h = expand_rel_table(rel_h, H).requires_grad_(True)
    table_w = expand_rel_table(rel_w, W).requires_grad_(True)
    lh, lw = relative_logits_expanded(q, table_h, table_w, 0.5)
    want_h, want_w = relative_logits_2d(q.permute(0, 3, 1, 2, 4).reshape(B, g, H * W, d), rel_h, rel_w, (H, W))
    torch.testing.assert_close(lh, 0.5 * want_h.reshape(B * g, H * W, H))
    torch.testing.assert_close(lw, 0.5 * want_w.reshape(B * g, H * W, W))
    g_h, g_w = torch.randn_like(lh), torch.randn_like(lw)
    auto = torch.autograd.grad((lh * g_h).sum() + (lw * g_w).sum(), [q, table_h, table_w])
    by_hand = relative_logits_expanded_grads(0.5 * g_h, 0.5 * g_w, q.detach(), table_h.detach(), table_w.detach())
    for a, b in zip(by_hand, auto):
        torch.testing.assert_close(a, b)


def test_resize_table_and_absolute_grid():
    rel, ab = torch.randn(7, 3), torch.randn(4, 3)
    assert torch.equal(resize_table(rel, 5, relative=True), rel_table_for_length(rel, 3))
    assert torch.equal(resize_table(ab, 6, relative=False), resize_abs_table(ab, 6))
    abs_h, abs_w = torch.randn(3, 2), torch.randn(4, 2)
    grid = absolute_grid(abs_h, abs_w, (3, 4))
    assert grid.shape == (12, 2)
    torch.testing.assert_close(grid[1 * 4 + 2], abs_h[1] + abs_w[2])
