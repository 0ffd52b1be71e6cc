"""``create_model`` / ``list_models``: every preset by name."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable

from torch import nn

from botnet.errors import UserError
from botnet.models.botnet import BoTNet
from botnet.models.config import ModelConfig
from botnet.models.presets import PRESETS

_REGISTRY: dict[str, ModelConfig] = {}


def register_model(name: str, cfg: ModelConfig) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = cfg


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob pattern (``"botnet_s1_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_model_config(name: str) -> ModelConfig:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    img_size: int | tuple[int, int] | None = None,
    pretrained: str | None = None,
    **overrides: Any,
) -> BoTNet:
    """Build a registered model.

    ``img_size`` sets the default input (and so the native size of the attention tables); any
    field of :class:`ModelConfig` can be overridden by keyword (``drop_path_rate=0.1``,
    ``act="silu"``, ``pos_enc="absolute"``, ``attn_impl="flex"``...). ``norm_layer`` takes e.g.
    ``torchvision.ops.FrozenBatchNorm2d`` for detection.

    ``pretrained``: weights to start from (:mod:`botnet.pretrained`): ``"imagenet"``,
    ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``, ``"timm:botnet26t_256.c1_in1k"`` or a local
    file; what was loaded, skipped and left at init is in ``model.load_report``.
    """
    cfg = get_model_config(name)
    if img_size is not None:
        overrides["input_size"] = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    cfg = cfg.replace(**overrides)
    model = BoTNet(cfg, num_classes=num_classes, in_chans=in_chans, norm_layer=norm_layer, name=name)
    if pretrained:
        from botnet.pretrained import load_pretrained

        model.load_report = load_pretrained(model, pretrained)
    return model


for _name, _cfg in PRESETS.items():
    register_model(_name, _cfg)
