"""``botnet.create_model(name, pretrained=SOURCE)``: a registered model built, then given weights;
and ``botnet convert``: the same, written to our safetensors with its metadata.

The model registry (:mod:`botnet.models`) builds an initialised model; this layer fills it from a
weights source (:mod:`botnet.weights.pretrained`), so that the models know nothing of files,
caches or other libraries' names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from botnet.errors import UserError
from botnet.io import Outputs
from botnet.models import BoTNet
from botnet.models.features import FeatureExtractor
from botnet.models import create_model as build_model
from botnet.tasks import CLASSIFICATION
from botnet.weights.convert import classifier_size
from botnet.weights.files import LoadReport, save_weights
from botnet.weights.pretrained import fetch, imagenet_source, load_fetched, load_pretrained


def create_model(name: str, *args: Any, pretrained: str | os.PathLike | None = None, features_only: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3, 4), **kwargs: Any) -> BoTNet | FeatureExtractor:
    """Build the registered model ``name`` (arguments as :func:`botnet.models.create_model`) and,
    with ``pretrained``, fill it from that source: ``"imagenet"``,
    ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``, ``"timm:botnet26t_256.c1_in1k"`` or a local
    file. What was loaded, skipped and left at init is in ``model.load_report``. With
    ``features_only`` the filled model's feature maps (timm's convention, see
    :class:`~botnet.models.features.FeatureExtractor`)."""
    model = build_model(name, *args, **kwargs)
    if pretrained:
        model.load_report = load_pretrained(model, pretrained)
    return FeatureExtractor(model, out_indices) if features_only else model


def convert_weights(
    src: str | os.PathLike,
    out: str | os.PathLike,
    model: str,
    *,
    source: str = "auto",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    img_size: int | Sequence[int] | None = None,
    scale_pos_embed: bool = False,
    strict: bool = False,
    **overrides: Any,
) -> LoadReport:
    """Fill the registered ``model`` from ``src`` and write it with its metadata to ``out``.

    ``src``: a ``.pth`` / ``.pt`` / ``.safetensors`` file in torchvision's, timm's or our layout,
    or a named source (``timm:botnet26t_256.c1_in1k``, ``torchvision:ResNet50_Weights.IMAGENET1K_V2``;
    see :mod:`botnet.weights.pretrained`). ``source`` forces the layout. ``num_classes`` defaults
    to the checkpoint's classifier (0: none); a classifier of another size is re-initialised. With
    ``strict`` every tensor of the model must come from the checkpoint. ``class_names`` default
    to the ImageNet names for 1000 classes. ``overrides`` are ModelConfig fields. Nothing is
    written unless the weights fit, and never over ``src``.
    """
    out = Outputs([src]).claim(out)  # before any work
    if str(src) == "imagenet":  # resolved for the model: its architecture decides
        with torch.device("meta"):
            src = imagenet_source(build_model(model, img_size=img_size, **overrides))
    fetched = fetch(str(src))
    if num_classes is None:
        num_classes = classifier_size(fetched.state)
    net = build_model(model, num_classes=num_classes, img_size=img_size, **overrides)
    report = load_fetched(net, fetched, include_classifier=True, strict=strict, layout=source,
                          scale_pos_embed=scale_pos_embed)
    if class_names is None and num_classes == 1000:
        class_names = imagenet_class_names()
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names for a classifier of {num_classes} classes")
    meta: dict[str, Any] = {
        "task": CLASSIFICATION, "img_size": list(net.cfg.img_size), "crop_pct": 0.875,
        "mean": list(net.default_cfg["mean"]), "std": list(net.default_cfg["std"]),
        "converted_from": {"file": Path(str(src)).name, "source": fetched.origin, "layout": source,
                           "loaded": len(report.loaded), "left_at_init": report.missing[:50],
                           "skipped": report.skipped[:50]},
    }
    if class_names is not None:
        meta["class_names"] = list(class_names)
    save_weights(net, out, meta)
    return report


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped with torchvision, no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)
