"""``botnet.create_model(name, pretrained=SOURCE)``: a registered model built, then given weights.

The model registry (:mod:`botnet.models`) builds an initialised model; this layer fills it from a
weights source (:mod:`botnet.weights.pretrained`), so that the models know nothing of files,
caches or other libraries' names.
"""
from __future__ import annotations

import os
from typing import Any

from botnet.models import BoTNet
from botnet.models import create_model as build_model
from botnet.weights.pretrained import load_pretrained


def create_model(name: str, *args: Any, pretrained: str | os.PathLike | None = None, **kwargs: Any) -> BoTNet:
    """Build the registered model ``name`` (arguments as :func:`botnet.models.create_model`) and,
    with ``pretrained``, fill it from that source: ``"imagenet"``,
    ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``, ``"timm:botnet26t_256.c1_in1k"`` or a local
    file. What was loaded, skipped and left at init is in ``model.load_report``."""
    model = build_model(name, *args, **kwargs)
    if pretrained:
        model.load_report = load_pretrained(model, pretrained)
    return model
