"""Classification transforms (torchvision.transforms.v2): Inception-style random crops, flips and
RandAugment for training; resize + center crop for evaluation."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.transforms import v2 as T

from botnet.classification.config import ClsDataConfig


def _size(img_size: int | Sequence[int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def train_transform(img_size: int | Sequence[int], cfg: ClsDataConfig) -> T.Compose:
    ops = [
        T.ToImage(),  # uint8 tensor: RandAugment's colour ops expect integer images
        T.RandomResizedCrop(_size(img_size), scale=tuple(cfg.scale), antialias=True),
        T.RandomHorizontalFlip(cfg.hflip),
    ]
    if cfg.randaugment.layers > 0:
        ops.append(T.RandAugment(num_ops=cfg.randaugment.layers, magnitude=cfg.randaugment.magnitude))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(cfg.mean), list(cfg.std))]
    return T.Compose(ops)


def eval_transform(img_size: int | Sequence[int], crop_pct: float = 0.875,
                   mean: Sequence[float] = (0.485, 0.456, 0.406),
                   std: Sequence[float] = (0.229, 0.224, 0.225)) -> T.Compose:
    size = _size(img_size)
    resize = math.floor(max(size) / crop_pct)
    return T.Compose([
        T.ToImage(),
        T.Resize(resize, antialias=True),  # shorter side, keeping the aspect ratio
        T.CenterCrop(size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
    ])
