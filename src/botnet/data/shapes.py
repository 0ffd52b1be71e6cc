"""A synthetic COCO-format instance dataset: coloured shapes on textured backgrounds.

Each image holds 0..``max_objects`` shapes of several classes at varied sizes, rotations and
colours; shapes may overlap, and a later shape hides what lies under it. Masks are exact: a pixel
belongs to the visible part of the shape painted there, and the image is painted from the masks.
Placements that would hide more than half of an earlier shape are retried, so every annotated
object stays recognisable. Segmentations are written as compressed RLE (exact, unlike polygons).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from botnet.errors import old_argument
from botnet.io import atomic_path, write_json

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")

# Object size (the side of its bounding square) as a fraction of the image side, drawn log-uniform.
SIZE_RANGE = (0.1, 0.45)
# A new shape may hide at most this fraction of an earlier shape's full area.
MAX_HIDDEN = 0.5


def _regular_polygon(cx: float, cy: float, r: float, n: int, angle: float, inner: float | None = None):
    """Vertices of a regular n-gon (or an n-pointed star when ``inner`` is the inner radius ratio)."""
    pts = []
    steps = 2 * n if inner else n
    for k in range(steps):
        rad = r * (inner if inner and k % 2 else 1.0)
        a = angle + 2 * math.pi * k / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _cross(cx: float, cy: float, r: float, angle: float):
    """A plus sign whose arm tips touch the circle of radius r; arms 2/3 of their length wide."""
    r = r * 3 / math.sqrt(10)  # the tip corners (r, r/3) then lie on the circle
    t = r / 3
    base = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t),
            (-t, -t)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """A boolean (size, size) mask of one shape centred at (cx, cy) with circumradius r."""
    canvas = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == "square":
        draw.polygon(_regular_polygon(cx, cy, r, 4, angle), fill=1)
    elif kind == "triangle":
        draw.polygon(_regular_polygon(cx, cy, r, 3, angle), fill=1)
    elif kind == "star":
        draw.polygon(_regular_polygon(cx, cy, r, 5, angle, inner=0.45), fill=1)
    elif kind == "cross":
        draw.polygon(_cross(cx, cy, r, angle), fill=1)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return np.asarray(canvas, dtype=bool)


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float background: a base colour, smooth blotches, stripes and pixel noise."""
    base = rng.uniform(0.15, 0.85, size=3)
    coarse = rng.normal(0, 1, size=(5, 5, 3))
    blotches = np.asarray(Image.fromarray(((coarse + 3) * 40).clip(0, 255).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), dtype=np.float32) / 255.0 - 0.5
    yy, xx = np.mgrid[0:size, 0:size]
    theta, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
    stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)[..., None]
    img = (base + rng.uniform(0.1, 0.35) * blotches + rng.uniform(0.0, 0.08) * stripes
           + rng.normal(0, 0.03, size=(size, size, 3)))
    return img.clip(0, 1)


def _shape_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour that stands out from the mean background colour."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.uniform(0, 1, size=3)
        if np.abs(colour - mean).sum() > 0.6:
            return colour
    return 1.0 - mean


def generate_image(rng: np.random.Generator, size: int, max_objects: int = 6):
    """One image and its objects: (uint8 HxWx3 array, [(class index, visible bool mask), ...])."""
    image = textured_background(rng, size)
    # a few images hold nothing: detectors must learn to stay quiet too
    n = 0 if rng.random() < 0.05 else int(rng.integers(1, max_objects + 1))
    objects: list[list] = []  # [class, full mask, visible mask]
    for _ in range(n):
        for _attempt in range(20):
            kind = int(rng.integers(len(SHAPE_CLASSES)))
            side = size * math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])))
            r = side / 2
            cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)  # may be cut by the border a little
            m = shape_mask(SHAPE_CLASSES[kind], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            if m.sum() < 16:
                continue
            if all((vis & ~m).sum() >= (1 - MAX_HIDDEN) * full.sum() for _, full, vis in objects):
                break
        else:
            continue
        for obj in objects:
            obj[2] = obj[2] & ~m
        objects.append([kind, m, m.copy()])
        colour = _shape_colour(rng, image)
        shade = 1 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, size)[None, :, None]  # a soft gradient
        image = np.where(m[..., None], (colour * shade).clip(0, 1), image)
    pixels = (image * 255).round().astype(np.uint8)
    return pixels, [(k, vis) for k, _, vis in objects]


def _annotation(ann_id: int, image_id: int, kind: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id, "image_id": image_id, "category_id": kind + 1,
        "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)], "area": int(mask.sum()), "iscrowd": 0,
        "segmentation": {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()},
    }


def write_split(out_dir: str | os.PathLike, split: str, num_images: int, size: int = 128, seed: int = 0,
                max_objects: int = 6, progress=None) -> Path:
    """Write ``out_dir/split/*.png`` and ``out_dir/annotations/instances_<split>.json``.

    Files are written atomically and the JSON last, so a present JSON means a complete split.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        pixels, objects = generate_image(rng, size, max_objects)
        image_id = i + 1
        name = f"{split}_{image_id:06d}.png"
        with atomic_path(out_dir / split / name) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for kind, mask in objects:
            if mask.any():
                annotations.append(_annotation(len(annotations) + 1, image_id, kind, mask))
        if progress is not None:
            progress(1)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPE_CLASSES)]
    ann_file = out_dir / "annotations" / f"instances_{split}.json"
    write_json(ann_file, {"info": {"description": "botnet synthetic shapes", "seed": seed},
                          "images": images, "annotations": annotations, "categories": categories}, indent=None)
    return ann_file


def make_shapes_dataset(out_dir: str | os.PathLike, train: int = 1000, val: int = 200, img_size: int = 128,
                        seed: int = 0, progress=None, size: int | None = None) -> dict[str, Path]:
    """Write the train and val splits of ``img_size`` x ``img_size`` images (``size=`` is its old
    name); returns the paths a detection run needs."""
    size = old_argument("make_shapes_dataset", "size", size, "img_size", img_size)
    out_dir = Path(out_dir)
    paths = {}
    for split, n, split_seed in (("train", train, seed), ("val", val, seed + 1_000_003)):
        if n > 0:
            paths[f"{split}_ann"] = write_split(out_dir, split, n, size, split_seed, progress=progress)
            paths[f"{split}_images"] = out_dir / split
    return paths


def shapes_dataset_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`make_shapes_dataset` puts each split."""
    out_dir = Path(out_dir)
    return {"train_images": out_dir / "train", "train_ann": out_dir / "annotations" / "instances_train.json",
            "val_images": out_dir / "val", "val_ann": out_dir / "annotations" / "instances_val.json"}
