"""timm's ``features_only`` interface: ``create_model(name, features_only=True, out_indices=...)``
returns a module whose forward gives a list of feature maps, described by ``feature_info``, so a
BoTNet drops into code written for timm backbones (detectron2 / mmdet wrappers, segmentation
heads).

Levels follow timm's: 0 is the stem at stride 2 (before its max pool, or before the last conv of
a stem without one), 1..4 are ``layer1`` .. ``layer4`` (c2..c5: strides 4, 8, 16 and 32, or 16
for c5 in the BoTNet-S1 models, whose last stage keeps the resolution; arXiv 2101.11605, Sec. 4.3),
level 4 taken after the ``final_conv`` in the timm-style configs that have one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from botnet.models.botnet import BoTNet


class FeatureInfo:
    """One dict per returned level: ``num_chs``, ``reduction`` (stride against the input) and
    ``module`` (the name of the module whose output it is, in the wrapped model), read through
    ``channels()``, ``reduction()``, ``module_name()`` and ``get_dicts()`` as timm's are."""

    def __init__(self, levels: list[dict]):
        self.info = levels

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [level[key] for level in self.info]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        pick = (lambda d: d) if keys is None else (lambda d: {k: d[k] for k in keys})
        if isinstance(idx, int):
            return pick(self.info[idx])
        return [pick(self.info[i]) for i in (range(len(self.info)) if idx is None else idx)]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, i: int) -> dict:
        return self.info[i]


def _stem(model: BoTNet) -> tuple[list[tuple[str, nn.Module]], list[nn.Module]]:
    """The stem's modules up to level 0 (stride 2, with their names) and those after it (the max
    pool, or the last stride-2 conv of a tiered stem without a pool)."""
    if not hasattr(model, "stem"):
        return [("conv1", model.conv1), ("bn1", model.bn1), ("act1", model.act1)], [model.maxpool]
    parts = [(f"stem.{n}", m) for n, m in model.stem.named_children()]
    return parts[:-1], [parts[-1][1]]  # the pool, or the stride-2 conv3


def feature_levels(model: BoTNet) -> list[dict]:
    """Every level the model can return: 0 the stem at stride 2, 1..4 c2..c5, the last one after
    the ``final_conv`` of configs with ``num_features`` (as timm's)."""
    before, _ = _stem(model)
    convs = [m for _, part in before for m in part.modules() if isinstance(m, nn.Conv2d)]
    levels = [{"num_chs": convs[-1].out_channels, "reduction": 2, "module": before[-1][0]}]
    for i, key in enumerate(("c2", "c3", "c4", "c5")):
        levels.append({"num_chs": model.feature_channels[key], "reduction": model.feature_reductions[key],
                       "module": f"layer{i + 1}"})
    if model.final_conv is not None:
        levels[-1].update(num_chs=model.num_features, module="final_conv")
    return levels


class FeatureExtractor(nn.Module):
    """The levels ``out_indices`` of a BoTNet's feature maps, as a list (timm: negative indices
    count from the last level). The classifier is dropped; the stages keep their names, so the
    model's weights load into ``extractor.model``."""

    def __init__(self, model: BoTNet, out_indices: Sequence[int] = (0, 1, 2, 3, 4)):
        super().__init__()
        levels = feature_levels(model)
        indices = []
        for i in out_indices:
            if not -len(levels) <= i < len(levels):
                raise ValueError(f"out_indices {tuple(out_indices)}: levels are 0 (stem) to {len(levels) - 1}")
            indices.append(i % len(levels))
        if not indices or sorted(set(indices)) != indices:
            raise ValueError(f"out_indices {tuple(out_indices)}: give distinct levels, shallowest first")
        self.out_indices = tuple(indices)
        model.reset_classifier(0)
        self.model = model
        self.feature_info = FeatureInfo([levels[i] for i in indices])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.model._check_input(x)
        before, after = _stem(self.model)
        for _, module in before:
            x = module(x)
        out = [x] if 0 in self.out_indices else []
        for module in after:
            x = module(x)
        for level, stage in enumerate(self.model.stages, start=1):
            if level > self.out_indices[-1]:
                break
            x = stage(x)
            if level == 4 and self.model.final_conv is not None:
                x = self.model.final_conv(x)
            if level in self.out_indices:
                out.append(x)
        return out
