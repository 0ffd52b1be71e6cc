"""Efficient channel attention (ECA; Wang et al., arXiv 1910.03151), as timm's ``eca_botnext26ts``
uses it after the 3x3 conv of its bottleneck blocks.

The channel descriptor (global average) goes through one bias-free 1-D conv across channels and a
sigmoid. The kernel size follows the ECA paper's rule for ``channels`` C with gamma 2, beta 1:
``t = int(|log2(C) + 1| / 2)``, rounded up to odd, at least 3 (timm's ``EcaModule`` default).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(nn.Module):
    """Channel gating by a 1-D conv over the pooled channels; one ``conv`` of weight (1, 1, k)."""

    def __init__(self, channels: int):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x.mean((2, 3))[:, None, :])  # (B, 1, C)
        return x * s.sigmoid().view(x.shape[0], -1, 1, 1)
