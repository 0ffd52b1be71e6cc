"""Squeeze-and-excitation (Hu et al.), as used in every block of the BoTNet-S1 "T" models."""
from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool -> 1x1 conv (reduce) -> act -> 1x1 conv -> sigmoid.

    ``rd_channels`` is the bottleneck width; the T models use 0.0625 of the block's output channels.
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
