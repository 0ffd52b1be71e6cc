"""Image-classification folders: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``.

The layout is checked in full before training (every problem is listed in one error): a missing
``train/`` or ``val/``, a split without class folders, empty class folders, and class sets that
differ between the splits. Image files are only opened when read; one that cannot be decoded is
not fatal here: the dataset returns an :class:`Unreadable` marker, the collate function moves it
out of the batch, and the task warns, counts it, or stops (``strict``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from botnet.data.images import DECODE_ERRORS, load_rgb
from botnet.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


class Unreadable(NamedTuple):
    """Stands in for an image that could not be decoded."""

    path: str
    reason: str


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found


def scan_split(split_dir: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, class index)]) of one split; raises :class:`DataError`."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such folder (expected {split_dir}/<class>/<image>)")
    classes = _class_dirs(split_dir)
    if not classes:
        raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    empty = []
    for index, folder in enumerate(classes):
        images = _images_under(folder)
        if not images:
            empty.append(f"{folder}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, index) for path in images]
    if not samples:
        raise DataError(f"{split_dir}: no images at all in its {len(classes)} class folders")
    if empty:
        raise DataError(f"{split_dir}: {len(empty)} empty class folder(s)", empty)
    return [p.name for p in classes], samples


def scan_image_folder(root: str | os.PathLike, splits: Sequence[str] = ("train", "val")):
    """Scan ``root/<split>`` for each split; every split must have the same class folders.
    Returns (class names, {split: samples})."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    missing = [s for s in splits if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root}: missing {', '.join(s + '/' for s in missing)} (expected {root}/"
            f"{{{','.join(splits)}}}/<class>/<image>)"
        )
    scanned = {s: scan_split(root / s) for s in splits}
    classes = scanned[splits[0]][0]
    problems = []
    for split in splits[1:]:
        other = scanned[split][0]
        if other != classes:
            only_first = sorted(set(classes) - set(other))
            only_other = sorted(set(other) - set(classes))
            if only_first:
                problems.append(f"only in {splits[0]}/: {', '.join(only_first)}")
            if only_other:
                problems.append(f"only in {split}/: {', '.join(only_other)}")
    if problems:
        raise DataError(f"{root}: the splits have different class folders", problems)
    return classes, {s: scanned[s][1] for s in splits}


class ImageFolderDataset(Dataset):
    """``(transform(image), label)`` pairs, or an :class:`Unreadable` for a file that fails."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: Callable | None = None):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except DECODE_ERRORS as e:
            return Unreadable(path, f"{type(e).__name__}: {e}")
        return (self.transform(image) if self.transform is not None else image), label


def collate_skipping(batch: list[Any]) -> tuple[torch.Tensor | None, torch.Tensor, list[Unreadable]]:
    """``(images, labels, unreadable)``: the readable samples stacked, the others listed."""
    good = [b for b in batch if not isinstance(b, Unreadable)]
    bad = [b for b in batch if isinstance(b, Unreadable)]
    if not good:
        return None, torch.zeros(0, dtype=torch.long), bad
    images, labels = default_collate(good)
    return images, labels, bad
