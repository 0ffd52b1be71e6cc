"""Inference in two lines: ``botnet.load(weights)`` rebuilds a model from a weights file and returns
a :class:`Predictor` that runs it on PIL images, image paths or tensors with the preprocessing the
model was trained with.

This module is a facade for users and the command line: nothing inside the package imports it.
Rebuilding lives in :mod:`botnet.weights.rebuild` (the metadata convention is documented there),
what differs between tasks in their task objects (:mod:`botnet.tasks`), the prediction paths in
:mod:`botnet.classification.predict` and :mod:`botnet.detection.predict`.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from botnet.classification.predict import Classification
from botnet.data.images import ImageLike, read_image
from botnet.detection.predict import Detections, letterbox
from botnet.engine.distributed import select_device
from botnet.models.botnet import IMAGENET_MEAN, IMAGENET_STD
from botnet.tasks import get_task
from botnet.weights.rebuild import LoadedModel, config_differences, load_model

__all__ = ["load", "Predictor", "Classification", "Detections", "letterbox", "config_differences", "read_image"]


def load(weights: str | os.PathLike, model: str | None = None, *, img_size: int | Sequence[int] | None = None,
         device: str | torch.device = "auto", **overrides: Any) -> "Predictor":
    """Rebuild the model stored in ``weights`` and return a :class:`Predictor` for it.

    ``model`` names the architecture of a file without a description (a converted or foreign
    checkpoint); for a file with one it is checked against it and a difference names the field.
    ``img_size`` changes the classification input size (position tables are resized), or a
    detector's canvas; ``overrides`` are :class:`~botnet.models.ModelConfig` fields for files
    without a config. ``device``: ``"auto"`` (a GPU where there is one, as ``botnet predict``),
    ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    """
    if device == "auto":
        device = select_device("auto")
    return Predictor.from_loaded(load_model(weights, model, img_size=img_size, device=device, **overrides))


def _as_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, torch.Tensor):
        return list(images.unbind(0)) if images.dim() == 4 else [images]
    if isinstance(images, np.ndarray):  # (H, W, C) or (H, W); (B, H, W, C) a batch
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Iterable):
        return [images]
    return list(images)


class Predictor:
    """A model with what it needs to run on raw images: its task, class names, metadata and
    preprocessing. ``predict`` returns one :class:`Classification` or :class:`Detections` per
    image, in order.

    Image tensors are (C, H, W) or (B, C, H, W), numpy arrays (H, W, C) or (B, H, W, C) as PIL and
    OpenCV give them; uint8 in 0..255 or floating point in [0, 1]. Any other dtype or range is
    refused with a message (see :func:`botnet.data.images.read_image`)."""

    def __init__(self, model: nn.Module, task: str, class_names: Sequence[str], metadata: Mapping[str, Any], *,
                 img_size: tuple[int, int] | None = None, crop_pct: float = 0.875,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 canvas: int | None = None, device: str | torch.device = "cpu"):
        self.kind = get_task(task)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.class_names = list(class_names)
        self.metadata = dict(metadata)
        self.img_size, self.crop_pct, self.mean, self.std = img_size, crop_pct, tuple(mean), tuple(std)
        self.canvas = canvas
        self._transform = self.kind.input_transform(self)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> "Predictor":
        device = next(loaded.model.parameters()).device
        return cls(loaded.model, loaded.task, loaded.class_names, loaded.metadata, img_size=loaded.img_size,
                   crop_pct=loaded.crop_pct, mean=loaded.mean, std=loaded.std, canvas=loaded.canvas, device=device)

    @property
    def config(self):
        """The model's :class:`~botnet.models.ModelConfig` (the backbone's, for a detector)."""
        return getattr(self.model, "cfg", None) or getattr(getattr(self.model.backbone, "body", None), "cfg", None)

    def __repr__(self) -> str:
        name = self.metadata.get("model") or self.metadata.get("backbone") or type(self.model).__name__
        return f"Predictor(task={self.task!r}, model={name!r}, classes={len(self.class_names)})"

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """The model input for one image: (3, H, W), resized, cropped and normalised for a
        classifier; RGB in [0, 1] for a detector, which resizes and normalises itself."""
        return self._transform(read_image(image))

    @torch.no_grad()
    def predict(self, images: ImageLike | Iterable[ImageLike], *, topk: int = 5, score_thresh: float = 0.5,
                batch_size: int = 8, skipped: dict[str, str] | None = None) -> list[Classification] | list[Detections]:
        """Run the model on ``images`` (one image, a list, or a (B, C, H, W) tensor).

        Classification: the ``topk`` classes with softmax probabilities. Detection: boxes, labels,
        scores and masks (thresholded at 0.5) of objects scoring at least ``score_thresh``. With
        ``skipped`` (a dict), files that cannot be read are left out (with a warning) and recorded
        there; without, the first one is an error."""
        return self.kind.predict(self, _as_list(images), self._transform, topk=topk, score_thresh=score_thresh,
                                 batch_size=batch_size, device=self.device, skipped=skipped)

    __call__ = predict
