"""Image-classification folders: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``
(the validation split may also be named ``validation/`` or ``valid/``, as timm accepts).

The layout is checked in full before training (every problem is listed in one error): a missing
``train/`` or ``val/``, a split without class folders, empty class folders, and class sets that
differ between the splits. Image files are only opened when read; one that cannot be decoded is
not fatal here: the dataset returns an :class:`Unreadable` marker, the collate function moves it
out of the batch, and the task warns, counts it, or stops (``strict``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from botnet.data.images import DECODE_ERRORS, load_rgb
from botnet.errors import DataError, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
#: the folder names of each split, in the order they are looked for
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid")}


class Unreadable(NamedTuple):
    """Stands in for an image that could not be decoded."""

    path: str
    reason: str


def _links_back(link: Path, tree: Path) -> bool:
    """Whether the folder link ``link`` leads to ``tree`` itself, into it or to a folder above it."""
    real = link.resolve()
    return real == tree or tree in real.parents or real in tree.parents


def _class_dirs(split_dir: Path) -> tuple[list[Path], list[Path]]:
    """(class folders, skipped): a class folder may be a link to a folder elsewhere, but not one
    back to the split, into it or above it (its images would be counted twice or endlessly)."""
    tree = split_dir.resolve()
    classes, skipped = [], []
    for p in sorted(split_dir.iterdir()):
        if p.name.startswith(".") or not p.is_dir():
            continue
        (skipped if p.is_symlink() and _links_back(p, tree) else classes).append(p)
    return classes, skipped


def _images_under(folder: Path) -> tuple[list[str], list[str]]:
    """(image files, skipped folder links) under a class folder. Links to image files count;
    links to folders are not followed: one can loop back into the tree (``ln -s .. loop``
    turned 16 images into hundreds) or bring in the images of another class."""
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        skipped += [os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found, skipped


def expand_images(items: list[str]) -> list[str]:
    """Image paths as given, each folder among them replaced by the image files under it (as a
    class folder is read: every level, sorted, hidden files and folders and folder links left
    out); a folder without images is an error."""
    paths: list[str] = []
    for item in items:
        if not os.path.isdir(item):
            paths.append(item)
            continue
        found, links = _images_under(Path(item))
        if links:
            _warn_skipped(Path(item), links)
        if not found:
            raise UserError(f"{item}: a folder without image files ({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
    return paths


def _warn_skipped(split_dir: Path, links: list[str]) -> None:
    n = len(links)
    shown = ", ".join(links[:10]) + (f" and {n - 10} more" if n > 10 else "")
    warnings.warn(f"{split_dir}: {n} directory link{'s' if n > 1 else ''} not followed (a folder link may loop "
                  f"back into the tree or bring in another class's images; link image files instead): {shown}",
                  stacklevel=3)


def scan_split(split_dir: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, class index)]) of one split; raises :class:`DataError`."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such folder (expected {split_dir}/<class>/<image>)")
    classes, links = _class_dirs(split_dir)
    if not classes:
        raise DataError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    empty = []
    for index, folder in enumerate(classes):
        images, skipped = _images_under(folder)
        links += skipped
        if not images:
            empty.append(f"{folder}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, index) for path in images]
    if links:
        _warn_skipped(split_dir, [str(p) for p in links])
    if not samples:
        raise DataError(f"{split_dir}: no images at all in its {len(classes)} class folders")
    if empty:
        raise DataError(f"{split_dir}: {len(empty)} empty class folder(s)", empty)
    return [p.name for p in classes], samples


def split_folder(root: str | os.PathLike, split: str) -> Path | None:
    """The folder of ``split`` under ``root`` (the first of its ``SPLIT_FOLDERS`` names found), or None."""
    for name in SPLIT_FOLDERS.get(split, (split,)):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def scan_image_folder(root: str | os.PathLike, splits: Sequence[str] = ("train", "val")):
    """Scan the folder of each split under ``root`` (:func:`split_folder`); every split must have
    the same class folders. Returns (class names, {split: samples})."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    folders = {s: split_folder(root, s) for s in splits}
    missing = [" or ".join(n + "/" for n in SPLIT_FOLDERS.get(s, (s,))) for s in splits if folders[s] is None]
    if missing:
        raise DataError(
            f"{root}: missing {', '.join(missing)} (expected {root}/"
            f"{{{','.join(splits)}}}/<class>/<image>)"
        )
    scanned = {s: scan_split(folders[s]) for s in splits}
    classes = scanned[splits[0]][0]
    problems = []
    for split in splits[1:]:
        other = scanned[split][0]
        if other != classes:
            only_first = sorted(set(classes) - set(other))
            only_other = sorted(set(other) - set(classes))
            if only_first:
                problems.append(f"only in {folders[splits[0]].name}/: {', '.join(only_first)}")
            if only_other:
                problems.append(f"only in {folders[split].name}/: {', '.join(only_other)}")
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
