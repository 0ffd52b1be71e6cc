"""``create_model`` / ``list_models``: every preset by name, with the weights sources published for it.

These build models with initialised weights only; ``botnet.create_model(name, pretrained=...)``
(:mod:`botnet.weights.builder`) builds through here and then loads weights."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Sequence

from torch import nn

from botnet.errors import UserError
from botnet.models.botnet import BoTNet
from botnet.models.config import ModelConfig
from botnet.models.features import FeatureExtractor
from botnet.models.presets import PRESETS

_REGISTRY: dict[str, ModelConfig] = {}
_PRETRAINED: dict[str, tuple[str, ...]] = {}


def register_model(name: str, cfg: ModelConfig, pretrained: tuple[str, ...] = ()) -> None:
    """Register ``cfg`` as ``name``; ``pretrained``: weights sources published for it, the first
    being what ``pretrained="imagenet"`` means (:mod:`botnet.weights.pretrained`)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = cfg
    _PRETRAINED[name] = tuple(pretrained)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob pattern (``"botnet_s1_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_model_config(name: str) -> ModelConfig:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def pretrained_sources(name: str) -> tuple[str, ...]:
    """The weights sources registered with model ``name`` (empty: none, or no such model)."""
    return _PRETRAINED.get(name, ())


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    img_size: int | tuple[int, int] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] = (0, 1, 2, 3, 4),
    **overrides: Any,
) -> BoTNet | FeatureExtractor:
    """Build a registered model, its weights initialised.

    ``img_size`` sets the default input (and so the native size of the attention tables); any
    field of :class:`ModelConfig` can be overridden by keyword (``drop_path_rate=0.1``,
    ``act="silu"``, ``pos_enc="absolute"``, ``attn_impl="flex"``...). ``norm_layer`` takes e.g.
    ``torchvision.ops.FrozenBatchNorm2d`` for detection.

    ``features_only=True`` (timm's convention): a :class:`~botnet.models.features.FeatureExtractor`
    returning the feature maps of levels ``out_indices`` (0: stem, 1..4: c2..c5) as a list,
    described by its ``feature_info`` (channels, reduction, module per level).
    """
    cfg = get_model_config(name)
    if img_size is not None:
        overrides["img_size"] = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    cfg = cfg.replace(**overrides)
    model = BoTNet(cfg, num_classes=num_classes, in_chans=in_chans, norm_layer=norm_layer, name=name)
    return FeatureExtractor(model, out_indices) if features_only else model


for _name, (_cfg, _sources) in PRESETS.items():
    register_model(_name, _cfg, _sources)
