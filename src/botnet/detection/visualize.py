"""Prediction pictures: masks, boxes, class names and scores drawn with torchvision.utils."""
from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from botnet.io import atomic_path


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: torch.Tensor, output: dict, class_names: Sequence[str], score_thresh: float = 0.5,
                    mask_threshold: float = 0.5, min_side: int = 512) -> torch.Tensor:
    """``image`` (3, H, W) uint8 with the detections scoring at least ``score_thresh`` drawn.

    Images whose longer side is under ``min_side`` are enlarged by an integer factor first, so
    that the labels (drawn in a fixed-size font) stay readable on small pictures."""
    keep = output["scores"] >= score_thresh
    labels = output["labels"][keep].tolist()
    scores = output["scores"][keep].tolist()
    canvas = image.as_subclass(torch.Tensor).cpu()
    factor = max(1, -(-min_side // max(canvas.shape[-2:])))
    boxes = output["boxes"][keep].float().cpu() * factor
    if factor > 1:
        canvas = F.interpolate(canvas[None].float(), scale_factor=factor, mode="bilinear", align_corners=False)
        canvas = canvas[0].round().clamp(0, 255).to(torch.uint8)
    colours = [class_colour(label) for label in labels]
    if "masks" in output and keep.any():
        masks = output["masks"] if bool(keep.all()) else output["masks"][keep]
        if factor > 1:  # a small picture: float masks of its enlarged size are small too
            masks = F.interpolate(masks.cpu().float(), scale_factor=factor, mode="bilinear", align_corners=False)
        canvas = paint_masks(canvas, masks[:, 0], colours, mask_threshold)
    if len(boxes):
        names = [f"{class_names[label - 1] if 0 < label <= len(class_names) else label} {s:.2f}"
                 for label, s in zip(labels, scores)]
        canvas = draw_bounding_boxes(canvas, boxes, labels=names, colors=colours, width=2)
    return canvas


def paint_masks(image: torch.Tensor, masks: torch.Tensor, colours: Sequence[tuple[int, int, int]],
                threshold: float = 0.5, alpha: float = 0.45) -> torch.Tensor:
    """``image`` (3, H, W) uint8 with each mask (bool, or probabilities above ``threshold``) blended
    in its colour, one mask at a time: the work and memory follow the masks' pixels, where
    torchvision's ``draw_segmentation_masks`` sums the whole stack as int64 (100 masks of a
    12-megapixel photo: 9.6 GB)."""
    out = image.clone()
    for mask, colour in zip(masks, colours):
        mask = mask.cpu() if mask.dtype == torch.bool else mask.cpu() > threshold
        ys, xs = mask.nonzero(as_tuple=True)
        blended = out[:, ys, xs].float() * (1 - alpha) + torch.tensor(colour, dtype=torch.float32)[:, None] * alpha
        out[:, ys, xs] = blended.round_().clamp_(0, 255).to(torch.uint8)
    return out


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (3, H, W) uint8 tensor as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
    return Path(path)
