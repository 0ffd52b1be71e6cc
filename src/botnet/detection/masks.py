"""Instance masks at the image's size, one detection at a time.

torchvision's Mask R-CNN pastes every detection's 28 x 28 mask into a float32 image of the input's
full size before it returns: 100 detections on a 12-megapixel photo are 4.9 GB, and a batch of
them runs out of memory (two such photos peaked at 13.9 GB: ``benchmarks/mask_paste.py``). Evaluation and
prediction therefore ask the detector for the small masks (:func:`unpasted_masks`) and paste them
here one by one, with torchvision's own pasting (``paste_mask_in_image``: the box grown by the
mask's padding, bilinear resizing), into a strip of the image as wide as the box: the same pixels
as the full paste, since the box moves by whole pixels. Evaluation keeps each mask only as its
COCO run-length code (:func:`mask_rles`), prediction the masks of the detections it keeps
(:func:`paste_masks`). Masks that fit ``PASTE_BUDGET`` together are pasted at once, as
torchvision does (faster for many small images: the demo's evaluation).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks, paste_mask_in_image, paste_masks_in_image

from botnet.data.det_transforms import IMAGE_SIZE

__all__ = ["IMAGE_SIZE", "PASTE_BUDGET", "encode_masks", "mask_rles", "paste_masks", "unpasted_masks"]

#: bytes of image-sized float32 masks that may be pasted at once; more go one at a time
PASTE_BUDGET = 64 * 2**20


@contextlib.contextmanager
def unpasted_masks(model: nn.Module) -> Iterator[None]:
    """Within: ``model`` returns its masks as (N, 1, 28, 28) probabilities, each output holding
    the image's (height, width) as ``IMAGE_SIZE``, instead of pasting them (a no-op for a model
    without that transform, e.g. an exported one)."""
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "paste_masks"):
        yield
        return
    before = transform.paste_masks
    transform.paste_masks = False
    try:
        yield
    finally:
        transform.paste_masks = before


def _at_once(count: int, size: tuple[int, int]) -> bool:
    return count * size[0] * size[1] * 4 <= PASTE_BUDGET


def _strips(masks: torch.Tensor, boxes: torch.Tensor, width: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """Per detection: its padded mask, its box in a strip of the image, and the strip's columns."""
    padded, scale = expand_masks(masks.float(), padding=1)  # as paste_masks_in_image does
    grown = expand_boxes(boxes.float(), scale).to(torch.int64)
    for mask, box in zip(padded, grown):
        left = min(max(int(box[0]), 0), width)
        right = max(min(int(box[2]) + 1, width), left)
        yield mask[0], box - torch.tensor([left, 0, left, 0], device=box.device), left, right


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> torch.Tensor:
    """(N, 1, M, M) mask probabilities and their (N, 4) boxes in image pixels -> (N, H, W) bool
    masks, ``> threshold`` of torchvision's paste."""
    height, width = size
    if _at_once(len(masks), size):
        return (paste_masks_in_image(masks.float(), boxes.float(), size)[:, 0] > threshold).cpu()
    out = torch.zeros(len(masks), height, width, dtype=torch.bool)
    for i, (mask, box, left, right) in enumerate(_strips(masks, boxes, width)):
        if right > left:
            out[i, :, left:right] = (paste_mask_in_image(mask, box, height, right - left) > threshold).cpu()
    return out


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """(N, H, W) bool masks -> their COCO run-length codes (``counts`` as text)."""
    height, width = masks.shape[-2:]
    rles = []
    for mask in masks.cpu():  # one at a time: a uint8 copy of every mask at once is as large as them all
        rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8))[:, :, None])[0]
        rles.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    return rles


def mask_rles(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], threshold: float = 0.5) -> list[dict]:
    """The COCO run-length codes (``counts`` as text) of :func:`paste_masks`, made a strip at a
    time: the image-sized masks never exist."""
    height, width = size
    if _at_once(len(masks), size):
        return encode_masks(paste_masks(masks, boxes, size, threshold))
    rles = []
    for mask, box, left, right in _strips(masks, boxes, width):
        column_major = np.zeros(0, dtype=bool)
        if right > left:
            strip = paste_mask_in_image(mask, box, height, right - left) > threshold
            column_major = strip.t().reshape(-1).cpu().numpy()
        # runs of the strip, zeros first (COCO's convention), then the columns before and after it
        changes = np.flatnonzero(column_major[1:] != column_major[:-1]) + 1
        runs = np.diff(np.concatenate([[0], changes, [column_major.size]])).tolist() if column_major.size else [0]
        if column_major.size and column_major[0]:
            runs.insert(0, 0)
        runs[0] += left * height
        after = (width - right) * height
        if len(runs) % 2:  # ends with zeros
            runs[-1] += after
        elif after:
            runs.append(after)
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        rles.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    return rles
