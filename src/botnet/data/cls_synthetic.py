"""A small synthetic ImageFolder dataset (tests, the CPU demo): each class is a colour; an image
shows one blob of its class colour (jittered) at a random place and size on a noisy background."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: class name -> RGB
CLASS_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 70, 230),
    "yellow": (230, 210, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
}


def _image(rng: np.random.Generator, colour: tuple[int, int, int], size: int) -> Image.Image:
    base = rng.integers(60, 140)
    pixels = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    r = rng.uniform(0.25, 0.45) * size
    cx, cy = rng.uniform(r, size - r, 2)
    jitter = rng.integers(-25, 26, 3)
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    ImageDraw.Draw(image).ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    return image


def make_image_folder(root: str | os.PathLike, num_classes: int = 4, train_per_class: int = 24,
                      val_per_class: int = 8, size: int = 48, seed: int = 0) -> Path:
    """Write ``root/{train,val}/<colour>/<n>.png``; returns ``root``."""
    if not 2 <= num_classes <= len(CLASS_COLOURS):
        raise ValueError(f"num_classes must be in 2..{len(CLASS_COLOURS)}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, colour in list(CLASS_COLOURS.items())[:num_classes]:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(rng, colour, size).save(folder / f"{i:04d}.png")
    return root
