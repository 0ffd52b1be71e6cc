"""Stems: the 3x3 "tiered" stem of timm's ResNet-T / BoTNet-T models, and the conv-BN-act unit.

The paper's models keep the ResNet's 7x7 stem (built inline by :class:`~botnet.models.BoTNet`
under torchvision's names, so ResNet checkpoints map onto it). timm's BoTNets
(``botnet26t_256``, ``botnet50ts_256``, ...) replace it with three 3x3 convs of 3w/8, w/2 and w
channels, the first with stride 2, each followed by BN and the activation; then either a 3x3
max pool (stride 2) or, without the pool, stride 2 on the last conv. Module names follow timm's
(``stem.conv{1,2,3}.{conv,bn}``) so its checkpoints map by name.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from botnet.layers.act import make_act


class ConvBnAct(nn.Sequential):
    """Bias-free conv, BN, activation (``act_layer=None``: none); children ``conv``, ``bn``, ``act``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 act_layer: type[nn.Module] | None = nn.ReLU,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                          padding=kernel_size // 2, bias=False))
        self.add_module("bn", norm_layer(out_channels))
        self.add_module("act", make_act(act_layer) if act_layer is not None else nn.Identity())
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")


class TieredStem(nn.Sequential):
    """Three 3x3 conv-BN-act layers (3w/8, w/2, w channels), overall stride 4."""

    def __init__(self, in_channels: int, width: int, act_layer: type[nn.Module] = nn.ReLU,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, pool: bool = True):
        super().__init__()
        widths = (3 * width // 8, width // 2, width)
        strides = (2, 1, 1 if pool else 2)
        channels = in_channels
        for i, (w, s) in enumerate(zip(widths, strides)):
            self.add_module(f"conv{i + 1}", ConvBnAct(channels, w, 3, s, act_layer, norm_layer))
            channels = w
        if pool:
            self.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
        self.out_channels = width
