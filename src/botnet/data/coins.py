"""A small real-photograph instance-segmentation set: the coins of scikit-image's ``coins.png``.

scikit-image ships ``coins.png`` inside its package (303 x 384 pixels, grayscale: 24 coins of
several kinds on a plain background, lit unevenly). It is read from the package folder; nothing
is downloaded, and no scikit-image fetcher is called.

How the labels are made (no person drew them): a watershed of the Sobel gradient grows two kinds
of markers, background where the photograph is darker than ``dark`` and coin where it is brighter
than ``bright``, until they meet on the coins' edges; holes are filled, each connected component
of the coin pixels is one coin, and components under ``min_area`` pixels are dropped
(scikit-image's ``filters.sobel``, ``segmentation.watershed``, ``measure.label``). Each coin's
mask is exact to the pixel at the edge the gradient finds; its box is the mask's bounds.

Held out by place: the photograph is cut along the coin-free row nearest ``split`` of its
height (its coins lie in four rows); training tiles come from the upper part and validation tiles
from the lower part, so no coin is in both (with the defaults: 12 coins each). A tile is a square
crop at a random place, rotated by a random multiple of 90 degrees and mirrored at random,
optionally after resizing the photograph by ``scale``. A coin at least ``min_visible`` inside a
tile is an annotation (its visible part, compressed RLE); a coin cut more than that is a crowd
region (``iscrowd: 1``): COCO evaluation ignores detections on it and training leaves it out of
the targets (its pixels count as background there).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from botnet.errors import UserError
from botnet.io import atomic_path, write_json

CATEGORY = {"id": 1, "name": "coin", "supercategory": "object"}


def coins_photo() -> np.ndarray:
    """The photograph as (H, W) uint8, read from scikit-image's package folder."""
    try:
        import skimage.data
    except ImportError:
        raise UserError("the coins dataset reads its photograph from scikit-image: pip install scikit-image") from None
    path = Path(skimage.data.__file__).parent / "coins.png"
    if not path.is_file():
        raise UserError(f"{path}: not found; this scikit-image does not ship coins.png")
    return np.asarray(Image.open(path).convert("L"))


def label_coins(gray: np.ndarray, dark: int = 30, bright: int = 150, min_area: int = 100) -> np.ndarray:
    """(H, W) int labels: 0 background, 1..N one per coin (the rule in the module docstring)."""
    from scipy import ndimage
    from skimage.filters import sobel
    from skimage.measure import label
    from skimage.segmentation import watershed

    markers = np.zeros(gray.shape, np.int32)
    markers[gray < dark] = 1
    markers[gray > bright] = 2
    coins = ndimage.binary_fill_holes(watershed(sobel(gray), markers) == 2)
    labels = label(coins)
    areas = np.bincount(labels.ravel())
    small = np.flatnonzero(areas < min_area)
    labels[np.isin(labels, small[small > 0])] = 0
    return label(labels > 0)


def cut_row(labels: np.ndarray, split: float) -> int:
    """The row nearest ``split`` of the height that crosses no coin."""
    free = np.flatnonzero(~(labels > 0).any(axis=1))
    free = free[(free > 0) & (free < labels.shape[0] - 1)]
    if not len(free):
        raise ValueError("every row of the photograph crosses a coin: no place to cut it")
    return int(free[np.argmin(np.abs(free - split * labels.shape[0]))])


def _resize(photo: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if scale == 1.0:
        return photo, labels
    size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    photo = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST)).astype(labels.dtype)
    return photo, labels


def _annotation(ann_id: int, image_id: int, mask: np.ndarray, crowd: bool, category_id: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)], "area": int(mask.sum()), "iscrowd": int(crowd),
            "segmentation": {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode()}}


def write_tiles(out_dir: Path, split: str, photo: np.ndarray, labels: np.ndarray, count: int, tile: int,
                min_visible: float, rng: np.random.Generator, category: dict = CATEGORY,
                description: str = "tiles of scikit-image's coins.png; labels by watershed (botnet.data.coins)") -> Path:
    """``count`` random tiles of one part of a labelled photograph (``labels``: 0 background, one
    id per object): ``out_dir/split/*.png`` and ``out_dir/annotations/instances_<split>.json``
    (written last: a present JSON means a complete split)."""
    height, width = photo.shape
    if tile > min(height, width):
        raise ValueError(f"{split}: tiles of {tile} px do not fit its part of the photograph ({width} x {height}); "
                         "use smaller tiles, another split or a larger scale")
    full = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        y, x = int(rng.integers(0, height - tile + 1)), int(rng.integers(0, width - tile + 1))
        turns, mirror = int(rng.integers(4)), bool(rng.random() < 0.5)
        pixels, part = (np.rot90(a[y:y + tile, x:x + tile], turns) for a in (photo, labels))
        if mirror:
            pixels, part = pixels[:, ::-1], part[:, ::-1]
        name = f"{split}_{image_id:04d}.png"
        with atomic_path(out_dir / split / name) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB").save(tmp, format="PNG")
        images.append({"id": image_id, "file_name": name, "width": tile, "height": tile})
        for coin in np.unique(part[part > 0]):
            mask = part == coin
            crowd = mask.sum() < min_visible * full[coin]
            annotations.append(_annotation(len(annotations) + 1, image_id, mask, crowd, category["id"]))
    ann_file = out_dir / "annotations" / f"instances_{split}.json"
    info = {"description": description, "objects": int(len(np.unique(labels[labels > 0])))}
    write_json(ann_file, {"info": info, "images": images, "annotations": annotations, "categories": [category]},
               indent=None)
    return ann_file


def make_coins_dataset(out_dir: str | os.PathLike, train: int = 64, val: int = 16, tile: int = 128,
                       scale: float = 1.0, split: float = 0.5, min_visible: float = 0.5,
                       seed: int = 0) -> dict[str, Path]:
    """Write ``train`` training and ``val`` validation tiles of ``tile`` x ``tile`` pixels (the
    module docstring says how); returns the paths a detection run needs, as
    :func:`botnet.data.shapes.make_shapes_dataset` does."""
    if train < 1 or val < 1:
        raise ValueError(f"train and val need at least one tile each, got {train} and {val}")
    if not 0 < split < 1 or not 0 < min_visible <= 1 or scale <= 0:
        raise ValueError(f"split must be in (0, 1), min_visible in (0, 1] and scale above 0; got {split}, "
                         f"{min_visible}, {scale}")
    out_dir = Path(out_dir)
    photo = coins_photo()
    photo, labels = _resize(photo, label_coins(photo), scale)  # labelled at the photograph's own size
    cut = cut_row(labels, split)
    rng = np.random.default_rng(seed)
    paths = {}
    for name, n, part in (("train", train, np.s_[:cut]), ("val", val, np.s_[cut:])):
        paths[f"{name}_ann"] = write_tiles(out_dir, name, photo[part], labels[part], n, tile, min_visible, rng)
        paths[f"{name}_images"] = out_dir / name
    return paths
