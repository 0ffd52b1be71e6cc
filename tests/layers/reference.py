"""A slow, obvious MHSA written from the paper's definition, with explicit offsets."""
import torch


def reference_mhsa(q, k, v, rel_h, rel_w, scale):
    """q, k, v: (B, heads, H, W, d); rel_h (2Hr-1, d), rel_w (2Wr-1, d) with H <= Hr, W <= Wr.

    logit(query (a, b), key (c, e)) = scale * q_ab . (k_ce + R_h[c - a + Hr - 1] + R_w[e - b + Wr - 1])
    """
    B, heads, H, W, d = q.shape
    hr, wr = (rel_h.shape[0] + 1) // 2, (rel_w.shape[0] + 1) // 2
    out = torch.zeros_like(v)
    for a in range(H):
        for b in range(W):
            logits = torch.zeros(B, heads, H, W, dtype=q.dtype)
            for c in range(H):
                for e in range(W):
                    key = k[:, :, c, e] + rel_h[c - a + hr - 1] + rel_w[e - b + wr - 1]
                    logits[:, :, c, e] = scale * (q[:, :, a, b] * key).sum(-1)
            weights = logits.reshape(B, heads, H * W).softmax(-1).reshape(B, heads, H, W, 1)
            out[:, :, a, b] = (weights * v).sum((2, 3))
    return out
