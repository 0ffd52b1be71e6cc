"""Detection augmentation: the paper's scale jitter on a fixed square canvas, and flips.

The functional ops of ``torchvision.transforms.v2`` dispatch on ``tv_tensors``: one call moves an
image (bilinear), its ``BoundingBoxes`` and its ``Mask`` (nearest) together, so boxes and masks
stay consistent by construction. Randomness comes from ``torch`` so that DataLoader workers,
which torch seeds differently, draw different jitters.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torchvision
from torchvision import tv_tensors
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.transforms.v2 import functional as F

# The jitter ranges of the paper: canonical, and the two large-scale ones.
SCALE_RANGES = {"standard": (0.8, 1.25), "large": (0.5, 2.0), "xlarge": (0.1, 2.0)}

_SPATIAL = ("boxes", "masks")
#: the detector output key of the image's (height, width) when its masks are left small
IMAGE_SIZE = "image_size"


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


class AnyAspectRCNNTransform(GeneralizedRCNNTransform):
    """torchvision's detector transform (resize so that the longer side fits the canvas, normalise,
    batch), except that the shorter side keeps at least one pixel: a 4000 x 20 image on a
    1024 canvas would otherwise be resized to 0 pixels and fail inside the detector. Images that
    keep a pixel anyway go through torchvision's own resize, unchanged.

    With ``paste_masks`` False (:func:`botnet.detection.masks.unpasted_masks`) the output keeps
    each detection's small mask and the image's (height, width) instead of image-sized masks.

    With ``pad_square`` (the canvas) every image is padded to that square, as the training crops
    are, not to the largest image of its batch as torchvision pads: the attention of a BoT block
    is global, so the padding is part of what it sees, and an image's detections would change
    with the images that share its batch (``eval det --batch-size 8`` against a run's evaluation
    at 16 gave another AP on photos of mixed shapes)."""

    paste_masks: bool = True
    pad_square: int | None = None

    def batch_images(self, images: list[torch.Tensor], size_divisible: int = 32) -> torch.Tensor:
        if self.pad_square is None or torch.jit.is_scripting() or torchvision._is_tracing():
            return super().batch_images(images, size_divisible)
        largest = max(self.pad_square, *(max(image.shape[-2:]) for image in images))
        side = math.ceil(largest / size_divisible) * size_divisible
        batch = images[0].new_zeros(len(images), images[0].shape[0], side, side)
        for image, padded in zip(images, batch):
            padded[:, :image.shape[1], :image.shape[2]].copy_(image)
        return batch

    def postprocess(self, result, image_shapes, original_image_sizes):
        if torch.jit.is_scripting() or torchvision._is_tracing() or self.training or self.paste_masks:
            return super().postprocess(result, image_shapes, original_image_sizes)
        small = [pred.pop("masks", None) for pred in result]
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for pred, masks, size in zip(result, small, original_image_sizes):
            if masks is not None:
                pred["masks"], pred[IMAGE_SIZE] = masks, size
        return result

    def resize(self, image: torch.Tensor, target: dict | None = None):
        if torch.jit.is_scripting() or torchvision._is_tracing() or self.fixed_size is not None:
            return super().resize(image, target)
        h, w = image.shape[-2:]
        smallest = min(min(self.min_size) / min(h, w), self.max_size / max(h, w))
        if math.floor(min(h, w) * smallest) >= 1:
            return super().resize(image, target)
        # the same size choice as torchvision's (and the same random draw while training)
        size = self.torch_choice(self.min_size) if self.training and not self._skip_resize else self.min_size[-1]
        scale = min(size / min(h, w), self.max_size / max(h, w))
        out = [max(1, math.floor(h * scale)), max(1, math.floor(w * scale))]
        image = torch.nn.functional.interpolate(image[None], size=out, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        if "masks" in target:
            target["masks"] = torch.nn.functional.interpolate(target["masks"][:, None].float(), size=out)[:, 0].byte()
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


def keep_every_side(transform: GeneralizedRCNNTransform) -> AnyAspectRCNNTransform:
    """``transform`` with the same settings, as an :class:`AnyAspectRCNNTransform`."""
    return AnyAspectRCNNTransform(transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
                                  size_divisible=transform.size_divisible, fixed_size=transform.fixed_size,
                                  _skip_resize=transform._skip_resize)
