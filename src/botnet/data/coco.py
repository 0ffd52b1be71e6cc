"""COCO-format instance data: validation, the category <-> label mapping, and the dataset.

Labels are contiguous, ``1..K`` in the order of increasing category id (0 is the background
class of torchvision's detectors); :attr:`CocoDetection.label_to_cat` maps them back for
evaluation and prediction files.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from botnet.data.imagefolder import Unreadable
from botnet.errors import DataError

# A box may poke out of its image by rounding; more than this is an annotation error.
BOX_TOLERANCE = 1.0


def read_coco_json(ann_file: str | os.PathLike) -> dict:
    """Parse an instances JSON file; errors name the file (and the position of a syntax error)."""
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"annotation file is empty: {path}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    return data


def _segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why ``seg`` is not a usable polygon list or RLE for an image of this size (None if fine)."""
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "a polygon must be a list of at least 3 x,y pairs"
            if not all(isinstance(v, (int, float)) for v in poly):
                return "polygon coordinates must be numbers"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2):
            return "RLE needs 'size': [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {size} differs from the image's [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                return "uncompressed RLE counts must be non-negative integers summing to height*width"
            return None
        if isinstance(counts, str):
            try:
                mask_utils.area({"size": size, "counts": counts.encode()})
            except Exception:  # pycocotools raises bare exceptions on garbage
                return "compressed RLE counts do not decode"
            return None
        return "RLE 'counts' must be a string or a list of integers"
    return f"segmentation must be a polygon list or an RLE object, not {type(seg).__name__}"


def validate_coco(data: dict, ann_file: str | os.PathLike, image_dir: str | os.PathLike | None,
                  check_images: bool = True) -> list[str]:
    """Every problem in a parsed instances file, as messages naming the file and the id.

    With ``image_dir`` and ``check_images`` each image file must exist and its header must
    report the size the JSON declares (only the header is read). Unreadable files are not
    problems here: the dataset skips them with a warning when it meets them.
    """
    where = str(ann_file)
    problems: list[str] = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problems.append(f"{where}: missing or non-list '{key}'")
    if problems:
        return problems

    cat_ids = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            problems.append(f"{where}: category without an integer 'id': {c!r:.80}")
        else:
            cat_ids.add(c["id"])
    if not cat_ids:
        problems.append(f"{where}: no categories declared")

    images: dict[int, dict] = {}
    for img in data["images"]:
        iid = img.get("id") if isinstance(img, dict) else None
        if not isinstance(iid, int):
            problems.append(f"{where}: image without an integer 'id': {img!r:.80}")
            continue
        if iid in images:
            problems.append(f"{where}: image id {iid} appears twice")
            continue
        w, h, name = img.get("width"), img.get("height"), img.get("file_name")
        if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            problems.append(f"{where}: image id {iid}: 'width' and 'height' must be positive integers")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: image id {iid}: missing 'file_name'")
            continue
        images[iid] = img
        if image_dir is not None and check_images:
            path = Path(image_dir) / name
            if not path.is_file():
                problems.append(f"{path}: image file missing (image id {iid})")
                continue
            try:
                with Image.open(path) as im:
                    size = im.size
            except (OSError, ValueError):
                continue  # unreadable: skipped with a warning at load time
            if size != (w, h):
                problems.append(f"{path}: image is {size[0]}x{size[1]} but {where} says {w}x{h} (image id {iid})")

    seen_ann: set[int] = set()
    for ann in data["annotations"]:
        aid = ann.get("id") if isinstance(ann, dict) else None
        if not isinstance(aid, int):
            problems.append(f"{where}: annotation without an integer 'id': {ann!r:.80}")
            continue
        tag = f"{where}: annotation id {aid}"
        if aid in seen_ann:
            problems.append(f"{tag}: id appears twice")
        seen_ann.add(aid)
        img = images.get(ann.get("image_id"))
        if img is None:
            problems.append(f"{tag}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        if ann.get("category_id") not in cat_ids:
            problems.append(f"{tag}: category_id {ann.get('category_id')!r} is not declared in 'categories'")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            problems.append(f"{tag}: bbox must be [x, y, width, height]")
        else:
            x, y, bw, bh = box
            if bw <= 0 or bh <= 0:
                problems.append(f"{tag}: bbox {box} has zero area")
            elif (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + bw > img["width"] + BOX_TOLERANCE
                  or y + bh > img["height"] + BOX_TOLERANCE):
                problems.append(f"{tag}: bbox {box} lies outside image id {img['id']} "
                                f"({img['width']}x{img['height']})")
        if "segmentation" in ann:
            why = _segmentation_problem(ann["segmentation"], img["height"], img["width"])
            if why:
                problems.append(f"{tag}: segmentation does not parse: {why}")
    return problems


def load_coco(ann_file: str | os.PathLike, image_dir: str | os.PathLike | None = None,
              check_images: bool = True) -> COCO:
    """A validated pycocotools ``COCO`` index; raises :class:`DataError` listing every problem."""
    data = read_coco_json(ann_file)
    problems = validate_coco(data, ann_file, image_dir, check_images)
    if problems:
        raise DataError(f"{ann_file}: {len(problems)} problem(s) in the dataset", problems)
    data.setdefault("info", {})
    coco = COCO()
    coco.dataset = data
    _build_index_quietly(coco)
    return coco


def _build_index_quietly(coco: COCO) -> None:
    """Build the COCO index without pycocotools' prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()


def decode_rle(rle: dict) -> np.ndarray:
    """pycocotools' decode, without the numpy-2 deprecation warning it trips on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return mask_utils.decode(rle)


def decode_masks(anns: list[dict], height: int, width: int) -> np.ndarray:
    """(N, H, W) uint8 masks from polygon or RLE segmentations."""
    masks = np.zeros((len(anns), height, width), dtype=np.uint8)
    for i, ann in enumerate(anns):
        seg = ann.get("segmentation")
        if seg is None:
            x, y, w, h = ann["bbox"]  # a box-only annotation: its mask is the box
            masks[i, int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = 1
            continue
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str)
                   else seg["counts"]}
        masks[i] = decode_rle(rle)
    return masks


class CocoDetection(Dataset):
    """Images and instance targets from a COCO instances file.

    Each item is ``(image, target)``: ``image`` a uint8 ``tv_tensors.Image`` (3, H, W); ``target``
    holds ``boxes`` (XYXY ``tv_tensors.BoundingBoxes``), ``labels`` (int64, 1..K), ``masks``
    (uint8 ``tv_tensors.Mask``, when ``with_masks``), ``image_id`` and ``orig_size`` (H, W).
    Crowd regions are left out of the targets (evaluation reads them from the JSON). An image
    that cannot be read gives an :class:`Unreadable` naming the file (the collate function sets
    it aside for the task to report), or raises with ``strict``.

    ``keep_empty``: keep images without (non-crowd) annotations; training may leave them out,
    evaluation keeps them (false positives on them count).
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, transforms=None,
                 with_masks: bool = True, keep_empty: bool = True, strict: bool = False,
                 check_images: bool = True):
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.coco = load_coco(ann_file, image_dir, check_images)
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
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:
            if self.strict:
                raise DataError(f"{path}: unreadable image (image id {info['id']}): {e}; "
                                "stopped because of --strict") from None
            return Unreadable(str(path), f"image id {info['id']}: {type(e).__name__}: {e}")
        if arr.shape[:2] != (info["height"], info["width"]):
            # validation checked headers; a file replaced since then still must not misalign masks
            raise DataError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} but {self.ann_file} says "
                            f"{info['width']}x{info['height']} (image id {info['id']})")
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._read_image(info)
        if isinstance(image, Unreadable):
            return image
        h, w = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(0, w)
        boxes[:, 1::2].clamp_(0, h)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "orig_size": (h, w),
        }
        if self.with_masks:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(decode_masks(anns, h, w)))
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
