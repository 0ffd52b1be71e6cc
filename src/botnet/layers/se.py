"""Squeeze-and-excitation (Hu et al.): the BoTNet-S1 "T" models put it after every block's last
conv (arXiv 2101.11605, its ImageNet models); timm's ``sebotnet33ts_256`` after the 3x3 conv instead."""
from __future__ import annotations

import torch
from torch import nn


def reduced_width(channels: int, ratio: float = 1 / 16, divisor: int = 8) -> int:
    """timm's SE bottleneck width: ``channels * ratio`` rounded to a multiple of ``divisor``
    (half-way up), at least ``divisor``."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool -> 1x1 conv (reduce) -> act -> 1x1 conv -> sigmoid.

    ``rd_channels`` is the bottleneck width; the T models use 0.0625 of the block's output
    channels, timm's SE :func:`reduced_width` with ReLU whatever the network's activation.
    """

    def __init__(self, channels: int, rd_channels: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()
