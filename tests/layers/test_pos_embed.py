import torch
import torch.nn.functional as F

from botnet.layers.pos_embed import (
    expand_rel_table,
    relative_index,
    key_position_onehots,
    rel_table_for_length,
    relative_logits_1d,
    relative_logits_2d,
    resize_abs_table,
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
