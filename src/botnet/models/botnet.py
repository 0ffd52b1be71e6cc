"""One builder for the whole family: ResNet when no block is a BoT block, BoTNet otherwise."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from botnet.layers.act import get_act_layer, make_act
from botnet.layers.blocks import Bottleneck, BoTBlock
from botnet.layers.stem import ConvBnAct, TieredStem
from botnet.models.config import ModelConfig

STAGES = ("c2", "c3", "c4", "c5")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _down(size: tuple[int, int]) -> tuple[int, int]:
    # every stride-2 op in the network (padded convs, max pool, ceil-mode avg pool) gives ceil(L / 2)
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class BoTNet(nn.Module):
    """A ResNet-style network whose chosen bottleneck blocks are BoT blocks.

    ``forward_features(x)`` returns an ordered dict of the c2..c5 maps (for FPN), ``forward_head``
    pools c5 and classifies, ``forward`` does both. ``feature_channels`` and ``feature_reductions``
    describe the maps. With ``num_classes=0`` there is no classifier and ``forward`` returns the
    pooled features (after the ``final_conv`` of configs with ``num_features``).

    The stem is the ResNet's 7x7 one under torchvision's names (``conv1``, ``bn1``) or timm's
    tiered ``stem``; ``stem_modules`` lists its modules either way.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        name: str = "",
    ):
        super().__init__()
        self.cfg, self.name, self.num_classes = cfg, name, num_classes
        act_layer = get_act_layer(cfg.act)
        self.in_chans = in_chans
        self._build_stem(cfg, in_chans, act_layer, norm_layer)

        size = _down(_down(cfg.img_size))
        channels = cfg.stem_width
        total = sum(cfg.layers)
        index = 0
        self.feature_channels: dict[str, int] = {}
        self.feature_reductions: dict[str, int] = {}
        reduction = 4
        for s, (depth, width, out) in enumerate(zip(cfg.layers, cfg.widths, cfg.stage_out_channels())):
            stride = 1 if s == 0 else (cfg.c5_stride if s == 3 else 2)
            bot = cfg.bot_indices(s)
            if any(not 0 <= i < depth for i in bot):
                raise ValueError(f"BoT block indices {sorted(bot)} of stage {s} are outside its {depth} blocks")
            if cfg.group_size and width % cfg.group_size:
                raise ValueError(f"width {width} is not a multiple of group_size {cfg.group_size}")
            blocks = []
            for i in range(depth):
                block_stride = stride if i == 0 else 1
                dpr = cfg.drop_path_rate * index / max(total - 1, 1)
                common = dict(act_layer=act_layer, norm_layer=norm_layer, se_ratio=cfg.se_ratio,
                              drop_path=dpr, zero_init_last=cfg.zero_init_last, out_channels=out)
                if i in bot:
                    block = BoTBlock(channels, width, block_stride, feat_size=size, heads=cfg.heads,
                                     pos_enc=cfg.pos_enc, shortcut_act=cfg.bot_shortcut_act,
                                     scale_pos_embed=cfg.scale_pos_embed, attn_impl=cfg.attn_impl, **common)
                else:
                    groups = width // cfg.group_size if cfg.group_size else 1
                    block = Bottleneck(channels, width, block_stride, groups=groups, mid_attn=cfg.mid_attn, **common)
                blocks.append(block)
                channels = block.out_channels
                if block_stride == 2:
                    size = _down(size)
                index += 1
            reduction *= stride
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
            self.feature_channels[STAGES[s]] = channels
            self.feature_reductions[STAGES[s]] = reduction
        self.final_conv = None
        if cfg.num_features:
            self.final_conv = ConvBnAct(channels, cfg.num_features, 1, act_layer=act_layer, norm_layer=norm_layer)
            channels = cfg.num_features
        self.num_features = channels
        self.drop = nn.Dropout(cfg.drop_rate) if cfg.drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {
            "architecture": name,
            "input_size": (in_chans, *cfg.img_size),  # timm's pretrained_cfg key
            "num_classes": num_classes,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        }

    def _build_stem(self, cfg: ModelConfig, in_chans: int, act_layer: type[nn.Module],
                    norm_layer: Callable[[int], nn.Module]) -> None:
        if cfg.stem == "tiered":
            self.stem = TieredStem(in_chans, cfg.stem_width, act_layer, norm_layer, pool=cfg.stem_pool)
        elif cfg.stem == "7x7":
            self.conv1 = nn.Conv2d(in_chans, cfg.stem_width, 7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(cfg.stem_width)
            self.act1 = make_act(act_layer)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        else:
            raise ValueError(f"stem must be '7x7' or 'tiered', got {cfg.stem!r}")

    @property
    def stem_modules(self) -> list[nn.Module]:
        """The stem's modules (what freezing "the stem" freezes)."""
        return [self.stem] if hasattr(self, "stem") else [self.conv1, self.bn1]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "stem"):
            return self.stem(x)
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg["num_classes"] = num_classes

    def _check_input(self, x: torch.Tensor) -> None:
        expected = self.in_chans
        if x.dim() != 4 or x.shape[1] != expected:
            raise ValueError(f"{self.name or 'model'} expects a (B, {expected}, H, W) image batch, "
                             f"got shape {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        self._check_input(x)
        x = self.forward_stem(x)
        out = OrderedDict()
        for key, stage in zip(STAGES, self.stages):
            x = stage(x)
            out[key] = x
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.final_conv is not None:
            x = self.final_conv(x)
        x = x.mean((2, 3))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)["c5"])
