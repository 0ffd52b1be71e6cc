"""COCO-format instance data: loading (validated by :mod:`botnet.data.coco_validate`), the
category <-> label mapping, and the dataset.

Labels are contiguous, ``1..K`` in the order of increasing category id (0 is the background
class of torchvision's detectors); :attr:`CocoDetection.label_to_cat` maps them back for
evaluation and prediction files.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from botnet.data.coco_validate import (
    BOX_TOLERANCE, check_coco, degenerate_polygon_ids, read_coco_json, rle_string_counts, validate_coco)
from botnet.data.imagefolder import Unreadable
from botnet.data.images import DECODE_ERRORS, read_rgb
from botnet.errors import DataError

__all__ = ["BOX_TOLERANCE", "CocoDetection", "collate_detection", "decode_masks", "decode_rle", "load_coco",
           "read_coco_json", "validate_coco"]


def load_coco(ann_file: str | os.PathLike, image_dir: str | os.PathLike | None = None,
              check_images: bool = True) -> COCO:
    """A validated pycocotools ``COCO`` index; raises :class:`DataError` listing every problem.
    Annotations without a ``segmentation`` (box-only) get their box as mask, and those without an
    ``area`` the one COCO tools compute: COCO evaluation reads both."""
    return _load_coco(ann_file, image_dir, check_images)[0]


def _load_coco(ann_file, image_dir, check_images: bool) -> tuple[COCO, bool]:
    """:func:`load_coco`, and whether the images are read upright (``coco_validate``'s module docstring)."""
    data = read_coco_json(ann_file)
    problems, upright = check_coco(data, ann_file, image_dir, check_images)
    if problems:
        raise DataError(f"{ann_file}: {len(problems)} problem(s) in the dataset", problems)
    complete_annotations(data)
    _warn_degenerate_polygons(data, ann_file)
    data.setdefault("info", {})
    coco = COCO()
    coco.dataset = data
    _build_index_quietly(coco)
    return coco, upright


def box_pixels(box: list[float], sx: float = 1.0, sy: float = 1.0) -> tuple[slice, slice]:
    """(rows, columns) of the pixels a box-only annotation's mask covers: its [x, y, w, h] box,
    scaled by ``sx``, ``sy`` (an image read smaller)."""
    x, y, w, h = box
    return slice(int(y * sy), int(np.ceil((y + h) * sy))), slice(int(x * sx), int(np.ceil((x + w) * sx)))


def box_mask_rle(box: list[float], height: int, width: int) -> dict:
    """The compressed RLE of a box-only annotation's mask (:func:`box_pixels`, as
    :func:`decode_masks` gives it)."""
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[box_pixels(box)] = 1
    rle = mask_utils.encode(mask)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def complete_annotations(data: dict) -> int:
    """Fill what COCO evaluation reads but a valid file may leave out; call on validated data.

    An annotation without a ``segmentation`` gets its box as its mask (an RLE), and one without
    an ``area`` the area COCO tools compute: the pixel count of its mask. Returns how many
    annotations were completed."""
    images = {img["id"]: img for img in data["images"]}
    completed = 0
    for ann in data["annotations"]:
        if "area" in ann and "segmentation" in ann:
            continue
        img = images[ann["image_id"]]
        if ann.get("segmentation") is None:
            ann["segmentation"] = box_mask_rle(ann["bbox"], img["height"], img["width"])
        if "area" not in ann:
            seg = ann["segmentation"]
            if isinstance(seg, dict) and isinstance(seg["counts"], list):
                ann["area"] = float(sum(seg["counts"][1::2]))
            elif isinstance(seg, dict):
                ann["area"] = float(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()}))
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, img["height"], img["width"]))
                ann["area"] = float(mask_utils.area(rle))
        completed += 1
    return completed


def _build_index_quietly(coco: COCO) -> None:
    """Build the COCO index without pycocotools' prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()


def decode_rle(rle: dict) -> np.ndarray:
    """pycocotools' decode, without the numpy-2 deprecation warning it trips on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return mask_utils.decode(rle)


def polygon_window(polygons: list[list[float]], height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right): the part of an image that polygons can touch, a pixel of margin
    on each side (pycocotools rounds the outline to a fifth of a pixel), clipped to the image."""
    xs = np.concatenate([np.asarray(p[0::2], dtype=np.float64) for p in polygons])
    ys = np.concatenate([np.asarray(p[1::2], dtype=np.float64) for p in polygons])
    left, top = (int(np.clip(np.floor(v.min()) - 1, 0, size)) for v, size in ((xs, width), (ys, height)))
    right, bottom = (int(np.clip(np.ceil(v.max()) + 2, 0, size)) for v, size in ((xs, width), (ys, height)))
    return top, left, bottom, right


def _polygon_mask(polygons: list[list[float]], height: int, width: int) -> tuple[tuple[int, ...], np.ndarray] | None:
    """``(window, pixels)``: pycocotools' mask of polygons on the whole image, decoded in their
    :func:`polygon_window` only; None when the window is empty or the mask leaves it."""
    top, left, bottom, right = window = polygon_window(polygons, height, width)
    if bottom <= top or right <= left:
        return None
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    ends = np.cumsum(np.asarray(rle_string_counts(rle["counts"].decode("ascii")), dtype=np.int64))
    first, last = ends[0:-1:2], ends[1::2] - 1  # runs of ones, column-major over the image
    keep = last >= first
    rows, cols = bottom - top, right - left
    # a run stays in one column of the window (one that wraps a column touches the top and bottom
    # rows, and then the window holds every row)
    spots = [(p // height - left) * rows + p % height - top for p in (first[keep], last[keep])]
    if any(((s < 0) | (s >= rows * cols)).any() for s in spots):
        return None
    flat = np.zeros(rows * cols + 1, dtype=np.int32)
    np.add.at(flat, spots[0], 1)
    np.add.at(flat, spots[1] + 1, -1)
    return window, np.cumsum(flat[:-1]).astype(np.uint8).reshape(cols, rows).T


def decode_masks(anns: list[dict], height: int, width: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, H, W) uint8 masks from polygon or RLE segmentations; with ``size`` (height, width) the
    masks of the image resized to it (polygons and boxes scaled, then rasterised; a run-length
    code decoded whole, then resized, nearest).

    A polygon's mask is pycocotools' over the whole image (its run-length code), decoded in the
    window of the image the polygon can touch (:func:`polygon_window`): the work follows the
    object's size rather than the photo's (``benchmarks/data_loading.py`` measures both; BENCHMARKS.md,
    "Reading real photos")."""
    out_h, out_w = size or (height, width)
    sx, sy = out_w / width, out_h / height
    masks = np.zeros((len(anns), out_h, out_w), dtype=np.uint8)
    for i, ann in enumerate(anns):
        seg = ann.get("segmentation")
        if seg is None:  # a box-only annotation: its mask is the box
            masks[i][box_pixels(ann["bbox"], sx, sy)] = 1
            continue
        if isinstance(seg, list) and (sx, sy) != (1, 1):
            seg = [[v * (sx if j % 2 == 0 else sy) for j, v in enumerate(p)] for p in seg]
        if isinstance(seg, list):
            windowed = _polygon_mask(seg, out_h, out_w)
            if windowed is not None:
                (top, left, bottom, right), pixels = windowed
                masks[i, top:bottom, left:right] = pixels
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, out_h, out_w))
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str)
                   else seg["counts"]}
        whole = decode_rle(rle)
        if whole.shape != (out_h, out_w):
            whole = F.interpolate(torch.from_numpy(whole)[None, None], size=(out_h, out_w), mode="nearest")[0, 0].numpy()
        masks[i] = whole
    return masks


def _warn_degenerate_polygons(data: dict, ann_file) -> None:
    flat = degenerate_polygon_ids(data)
    if flat:
        shown = ", ".join(map(str, flat[:10])) + (", ..." if len(flat) > 10 else "")
        warnings.warn(f"{ann_file}: {len(flat)} annotation(s) whose polygons enclose no area (collinear or "
                      f"repeated points; annotation id {shown}): kept, with their boxes as their masks", stacklevel=3)


class CocoDetection(Dataset):
    """Images and instance targets from a COCO instances file.

    Each item is ``(image, target)``: ``image`` a uint8 ``tv_tensors.Image`` (3, H, W); ``target``
    holds ``boxes`` (XYXY ``tv_tensors.BoundingBoxes``), ``labels`` (int64, 1..K), ``masks``
    (uint8 ``tv_tensors.Mask``, when ``with_masks``), ``image_id`` and ``orig_size`` (H, W).
    Crowd regions are left out of the targets (evaluation reads them from the JSON). Photos are
    read upright by their EXIF orientation unless the file declares their stored sizes
    (``upright``; see :mod:`botnet.data.coco_validate`). An image
    that cannot be read gives an :class:`Unreadable` naming the file (the collate function sets
    it aside for the task to report), or raises with ``strict``.

    ``keep_empty``: keep images without (non-crowd) annotations; training may leave them out,
    evaluation keeps them (false positives on them count).

    ``max_side``: an image whose longer side is larger comes resized to it, with its boxes and
    masks (for training, whose transform never scales past it: a phone photo is then read at a
    fraction of the work and memory; ``orig_size`` stays the file's size).
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, transforms=None,
                 with_masks: bool = True, keep_empty: bool = True, strict: bool = False,
                 check_images: bool = True, max_side: int | None = None):
        self.max_side = max_side
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.coco, self.upright = _load_coco(ann_file, image_dir, check_images)
        self.transforms = transforms
        self.with_masks = with_masks
        self.strict = strict
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self.cat_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat = {i + 1: cid for i, cid in enumerate(self.cat_ids)}
        ids = sorted(self.coco.imgs)
        if not keep_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.ids = ids

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def _read_image(self, info: dict) -> torch.Tensor | Unreadable:
        path = self.image_dir / info["file_name"]
        try:
            image, full = read_rgb(str(path), self.upright, self.max_side)
            arr = np.asarray(image)
        except DECODE_ERRORS as e:
            if self.strict:
                raise DataError(f"{path}: unreadable image (image id {info['id']}): {e}; "
                                "stopped because of --strict") from None
            return Unreadable(str(path), f"image id {info['id']}: {type(e).__name__}: {e}")
        if full != (info["width"], info["height"]):
            # validation checked headers; a file replaced since then still must not misalign masks
            frame = "upright by its EXIF orientation" if self.upright else "as stored, EXIF orientation ignored"
            raise DataError(f"{path}: image is {full[0]}x{full[1]} ({frame}) but {self.ann_file} says "
                            f"{info['width']}x{info['height']} (image id {info['id']})")
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._read_image(info)
        if isinstance(image, Unreadable):
            return image
        h, w = info["height"], info["width"]
        size = tuple(image.shape[-2:])  # smaller than (h, w) with max_side
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(0, w).mul_(size[1] / w)
        boxes[:, 1::2].clamp_(0, h).mul_(size[0] / h)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
            "labels": torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "orig_size": (h, w),
        }
        if self.with_masks:
            masks = decode_masks(anns, h, w, size)
            for i in np.flatnonzero(~masks.any(axis=(1, 2))):
                # a polygon that covers no pixel (collinear points, a sliver): the object stays, its
                # box as its mask, as for a box-only annotation (_load_coco warns about them)
                masks[i][box_pixels(anns[i]["bbox"], size[1] / w, size[0] / h)] = 1
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        image = tv_tensors.Image(image)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate_detection(batch: list):
    """``(images, targets, unreadable)``: lists, since image sizes differ; unreadable samples are
    set aside."""
    good = [b for b in batch if not isinstance(b, Unreadable)]
    bad = [b for b in batch if isinstance(b, Unreadable)]
    return [b[0] for b in good], [b[1] for b in good], bad
