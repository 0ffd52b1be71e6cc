"""Detection augmentation: the paper's scale jitter on a fixed square canvas, and flips.

The functional ops of ``torchvision.transforms.v2`` dispatch on ``tv_tensors``: one call moves an
image (bilinear), its ``BoundingBoxes`` and its ``Mask`` (nearest) together, so boxes and masks
stay consistent by construction. Randomness comes from ``torch`` so that DataLoader workers,
which torch seeds differently, draw different jitters.
"""
from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

# The jitter ranges of the paper: canonical, and the two large-scale ones.
SCALE_RANGES = {"standard": (0.8, 1.25), "large": (0.5, 2.0), "xlarge": (0.1, 2.0)}

_SPATIAL = ("boxes", "masks")


def _apply(fn, image, target: dict, **kwargs):
    """Apply a v2 functional op to the image and to the spatial entries of the target."""
    image = fn(image, **kwargs)
    target = dict(target)
    for key in _SPATIAL:
        if key in target:
            target[key] = fn(target[key], **kwargs)
    return image, target


def drop_empty_instances(target: dict) -> dict:
    """Remove objects whose box (or mask) was cut to nothing by a crop."""
    boxes = target["boxes"].as_subclass(torch.Tensor)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    if "masks" in target and len(keep):
        keep &= target["masks"].as_subclass(torch.Tensor).flatten(1).amax(1) > 0
    target = dict(target)
    for key in ("boxes", "labels", "masks"):
        if key in target:
            value = target[key][keep]
            target[key] = tv_tensors.wrap(value, like=target[key]) if isinstance(
                target[key], tv_tensors.TVTensor) else value
    return target


class ScaleJitterCanvas:
    """Resize so the longer side fits ``canvas`` times a random factor in ``scale_range``, then
    take a random ``canvas`` x ``canvas`` crop, padding bottom/right with zeros where the image is
    smaller. Objects cut to nothing are dropped."""

    def __init__(self, canvas: int = 1024, scale_range: tuple[float, float] = (0.8, 1.25)):
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.canvas = int(canvas)
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image, target: dict):
        h, w = image.shape[-2:]
        lo, hi = self.scale_range
        scale = self.canvas / max(h, w) * (lo + (hi - lo) * torch.rand(()).item())
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image, target = _apply(F.resize, image, target, size=size, antialias=True)
        top = int(torch.randint(0, max(size[0] - self.canvas, 0) + 1, ()).item())
        left = int(torch.randint(0, max(size[1] - self.canvas, 0) + 1, ()).item())
        # crop() pads with zeros where the window passes the image's bottom/right edge
        image, target = _apply(F.crop, image, target, top=top, left=left, height=self.canvas, width=self.canvas)
        if "boxes" in target:
            target["boxes"] = F.clamp_bounding_boxes(target["boxes"])
            target = drop_empty_instances(target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(canvas={self.canvas}, scale_range={self.scale_range})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target: dict):
        if torch.rand(()).item() < self.p:
            image, target = _apply(F.horizontal_flip, image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image, target: dict):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def parse_scale_range(value: Any) -> tuple[float, float]:
    """``"standard"``/``"large"``/``"xlarge"``, ``"0.8,1.25"`` or a pair of numbers."""
    if isinstance(value, str):
        if value in SCALE_RANGES:
            return SCALE_RANGES[value]
        parts = value.replace(":", ",").split(",")
        if len(parts) == 2:
            try:
                return float(parts[0]), float(parts[1])
            except ValueError:
                pass
        raise ValueError(f"scale jitter must be one of {sorted(SCALE_RANGES)} or 'MIN,MAX', got {value!r}")
    lo, hi = value
    return float(lo), float(hi)


def detection_train_transforms(canvas: int = 1024, scale_range=(0.8, 1.25), hflip: float = 0.5) -> Compose:
    """The paper's training augmentation: scale jitter + crop/pad to the canvas, horizontal flip."""
    steps: list = [ScaleJitterCanvas(canvas, parse_scale_range(scale_range))]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip))
    return Compose(steps)
