"""Residual bottleneck blocks: the ResNet bottleneck and the BoT block (arXiv 2101.11605, section 3 and figure 3).

Both share one structure; only the spatial operation differs:

    1x1 conv (C_in -> w), BN, act
    spatial op:  3x3 conv, stride s, [groups]   (Bottleneck)
                 MHSA, then 2x2 avg pool if s=2 (BoTBlock; the pool comes AFTER attention)
    BN, act, [mid_attn: SE or ECA on the w channels, timm's ``attn_layer``; Bottleneck only]
    1x1 conv (w -> C_out, 4w by default), BN (gamma initialised to zero), [SE], [stochastic depth]
    + shortcut (identity, or 1x1 conv stride s + BN [+ act in the reference code]), act

Module names follow torchvision's ResNet (conv1/bn1/conv2/bn2/conv3/bn3/downsample) so that
ResNet checkpoints map onto these blocks; the BoT block has ``attn`` where the ResNet has ``conv2``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from botnet.layers.act import make_act
from botnet.layers.attention import MHSA2d
from botnet.layers.drop import DropPath
from botnet.layers.eca import EfficientChannelAttention
from botnet.layers.se import SqueezeExcite, reduced_width

NormLayer = Callable[[int], nn.Module]
#: channel attention after the 3x3 conv (timm's ``attn_layer``): SE (ReLU, timm's width) or ECA
MID_ATTN = ("se", "eca", None)


def make_mid_attn(kind: str | None, channels: int) -> nn.Module | None:
    if kind not in MID_ATTN:
        raise ValueError(f"mid_attn must be one of {MID_ATTN}, got {kind!r}")
    if kind == "se":
        return SqueezeExcite(channels, reduced_width(channels), nn.ReLU)
    return EfficientChannelAttention(channels) if kind == "eca" else None


class Bottleneck(nn.Module):
    """The ResNet bottleneck (stride on the 3x3 conv, as torchvision's ResNet v1.5)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_ratio: float = 0.0,
        drop_path: float = 0.0,
        shortcut_act: bool = False,
        zero_init_last: bool = True,
        out_channels: int | None = None,
        groups: int = 1,
        mid_attn: str | None = None,
    ):
        super().__init__()
        out_channels = out_channels or width * self.expansion
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.act1 = make_act(act_layer)
        self._build_spatial(width, stride)
        self.bn2 = norm_layer(width)
        self.act2 = make_act(act_layer)
        self.mid_attn = make_mid_attn(mid_attn, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.se = SqueezeExcite(out_channels, max(1, round(out_channels * se_ratio)), act_layer) if se_ratio else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            layers = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm_layer(out_channels)]
            if shortcut_act:  # the reference code's quirk: an activation on the projection shortcut
                layers.append(make_act(act_layer))
            self.downsample = nn.Sequential(*layers)
        self.act3 = make_act(act_layer)
        self.reset_parameters(zero_init_last)

    def _build_spatial(self, width: int, stride: int) -> None:
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=self.groups, bias=False)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)

    def reset_parameters(self, zero_init_last: bool = True) -> None:
        # He-normal (fan_in) for the block's own convs; MHSA and SE keep their own init.
        convs = [self.conv1, self.conv3, getattr(self, "conv2", None)]
        convs.append(self.downsample[0] if self.downsample is not None else None)
        for conv in convs:
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        if zero_init_last and getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self._spatial(x)))
        if self.mid_attn is not None:
            x = self.mid_attn(x)
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        return self.act3(self.drop_path(x) + shortcut)


class BoTBlock(Bottleneck):
    """The bottleneck with global MHSA in place of the 3x3 conv.

    ``feat_size`` is the size of the map the MHSA sees, i.e. the block's input size (before the
    pool in a strided block). Any other size works at run time (see ``MHSA2d``).
    ``scale_pos_embed=False`` leaves the position logits unscaled (timm's ``BottleneckAttn``);
    ``attn_impl`` picks the attention's path (``MHSA2d``)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        feat_size: int | tuple[int, int] | None = None,
        heads: int = 4,
        pos_enc: str | None = "relative",
        shortcut_act: bool = True,
        scale_pos_embed: bool = True,
        attn_impl: str = "auto",
        **kwargs,
    ):
        self._attn_args = dict(heads=heads, pos_enc=pos_enc, feat_size=feat_size, scale_pos_embed=scale_pos_embed,
                               attn_impl=attn_impl)
        super().__init__(in_channels, width, stride, shortcut_act=shortcut_act, **kwargs)

    def _build_spatial(self, width: int, stride: int) -> None:
        self.attn = MHSA2d(width, **self._attn_args)
        # ceil_mode so that an odd map halves to ceil(L / 2) like the strided shortcut conv; on even
        # maps (every size in the paper) this is the plain 2x2 average pool
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.attn(x))
