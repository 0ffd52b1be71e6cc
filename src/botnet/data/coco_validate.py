"""Checking a COCO instances file before any library sees it.

pycocotools trusts its input: a NaN polygon coordinate makes its rasteriser allocate without
bound, and a compressed RLE whose run lengths do not add up to the image is written past the end
of the mask. So every number of every box, polygon and area is checked to be finite, polygons to
stay near their image, and every RLE is decoded here (in Python) and its runs must cover the
image exactly. Problems are collected, not raised one by one: each message names the file and
the image / annotation / category id.

Photos with an EXIF orientation that turns them a quarter (phones' portrait photos) are
annotated either upright, as labelling tools and viewers show them, or as stored, by tools that
ignore the tag. The sizes the file declares tell which (the upright size swaps width and
height); the file's images are then read in that frame, and a file that mixes the two is a
problem. Without such photos (or unchecked), images are read upright.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from botnet.data.images import exif_orientation, upright_size
from botnet.errors import DataError
from botnet.reading import NotARegularFile, regular_file

# A box may poke out of its image by rounding; more than this is an annotation error.
BOX_TOLERANCE = 1.0


def read_coco_json(ann_file: str | os.PathLike) -> dict:
    """Parse an instances JSON file; errors name the file (and the position of a syntax error)."""
    path = Path(ann_file)
    if not path.exists():
        raise DataError(f"annotation file not found: {path}")
    text = regular_file(path, "COCO annotation file").read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"annotation file is empty: {path}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    return data


def is_number(v: Any) -> bool:
    """A finite int or float (JSON's NaN / Infinity literals and booleans are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rle_string_counts(counts: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, or None when it is malformed.

    The format (pycocotools' ``rleToString``): each run length is written in 5-bit groups, low
    group first, as characters ``chr(48 + group)``; bit 0x20 of a group says another group
    follows, bit 0x10 of the last group is the sign. From the third run on, the value stored is
    the difference to the run two places earlier.
    """
    runs: list[int] = []
    value = shift = 0
    pending = False
    for ch in counts:
        group = ord(ch) - 48
        if not 0 <= group < 64:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        pending = bool(group & 0x20)
        if pending:
            if shift > 60:  # more groups than any image size needs
                return None
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    return None if pending else runs


def segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why ``seg`` is not a usable polygon list or RLE for an image of this size (None if fine)."""
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "a polygon must be a list of at least 3 x,y pairs"
            if not all(is_number(v) for v in poly):
                bad = next(v for v in poly if not is_number(v))
                return f"polygon coordinate {bad!r} is not a finite number"
            # the rasteriser walks every edge pixel by pixel: far-away points cost without bound
            xs, ys = poly[0::2], poly[1::2]
            if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
                return f"polygon points lie far outside the {width}x{height} image"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2):
            return "RLE needs 'size': [height, width]"
        if list(size) != [height, width]:
            return f"RLE size {size} differs from the image's [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) \
                    or sum(counts) != height * width:
                return "uncompressed RLE counts must be non-negative integers summing to height*width"
            return None
        if isinstance(counts, str):
            runs = rle_string_counts(counts)
            if runs is None:
                return "compressed RLE counts do not decode (not a COCO RLE string)"
            if any(r < 0 for r in runs) or sum(runs) != height * width:
                return (f"compressed RLE counts decode to runs covering {sum(runs)} pixels "
                        f"(some negative: {any(r < 0 for r in runs)}), not the image's {height * width}")
            return None
        return "RLE 'counts' must be a string or a list of integers"
    return f"segmentation must be a polygon list or an RLE object, not {type(seg).__name__}"


def outside_folder(name: str) -> bool:
    """Whether a ``file_name`` is absolute or climbs out of the image folder (``..``)."""
    if os.path.isabs(name) or name.startswith(("/", "\\")) or PurePosixPath(name.replace("\\", "/")).is_absolute():
        return True
    if len(name) > 1 and name[1] == ":":  # a Windows drive
        return True
    parts = os.path.normpath(name.replace("\\", "/")).split(os.sep)
    return parts[0] == ".."


def _check_categories(data: dict, where: str, problems: list[str]) -> set[int]:
    cat_ids: set[int] = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool):
            problems.append(f"{where}: category without an integer 'id': {c!r:.80}")
        elif c["id"] in cat_ids:
            # two names for one id: labels would decode to whichever name came last
            problems.append(f"{where}: category id {c['id']} appears twice")
        else:
            cat_ids.add(c["id"])
    if not cat_ids:
        problems.append(f"{where}: no categories declared")
    return cat_ids


def _check_images(data: dict, where: str, image_dir, check_images: bool, problems: list[str],
                  frames: dict[str, list[int]]) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for img in data["images"]:
        iid = img.get("id") if isinstance(img, dict) else None
        if not isinstance(iid, int) or isinstance(iid, bool):
            problems.append(f"{where}: image without an integer 'id': {img!r:.80}")
            continue
        if iid in images:
            problems.append(f"{where}: image id {iid} appears twice")
            continue
        for key in ("width", "height"):  # 640.0, as some exporters write it, is 640
            if isinstance(img.get(key), float) and img[key].is_integer():
                img[key] = int(img[key])
        w, h, name = img.get("width"), img.get("height"), img.get("file_name")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            problems.append(f"{where}: image id {iid}: 'width' and 'height' must be positive integers")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: image id {iid}: missing 'file_name'")
            continue
        if outside_folder(name):
            problems.append(f"{where}: image id {iid}: file_name {name!r} points outside the image folder "
                            "(absolute or '..'); file names are relative to the image folder")
            continue
        images[iid] = img
        if image_dir is not None and check_images:
            path = Path(image_dir) / name
            try:
                with Image.open(regular_file(path, "image")) as im:
                    size, orientation = im.size, exif_orientation(im)
            except FileNotFoundError:
                problems.append(f"{path}: image file missing (image id {iid})")
                continue
            except (NotARegularFile, Image.DecompressionBombError) as e:
                # a FIFO would block the loader; a bomb would be skipped at every epoch
                problems.append(f"{path}: {e} (image id {iid})".replace(f"{path}: {path}: ", f"{path}: "))
                continue
            except (OSError, ValueError, SyntaxError):
                continue  # unreadable: skipped with a warning at load time
            turned = upright_size(size, orientation)
            if turned != size and (w, h) in (size, turned):
                frames["upright" if (w, h) == turned else "stored"].append(iid)
            elif size != (w, h):
                upright = f" ({turned[0]}x{turned[1]} upright by its EXIF orientation)" if turned != size else ""
                problems.append(f"{path}: image is {size[0]}x{size[1]}{upright} but {where} says {w}x{h} "
                                f"(image id {iid})")
    return images


def _read_upright(frames: dict[str, list[int]], where: str, problems: list[str]) -> bool:
    """Whether the file's photos are read upright: unless some declare their stored size."""
    upright, stored = frames["upright"], frames["stored"]
    if upright and stored:
        problems.append(f"{where}: image id {upright[0]} declares its size upright (turned by its EXIF "
                        f"orientation) but image id {stored[0]} as stored: annotations must all see the "
                        f"photos one way ({len(upright)} upright, {len(stored)} as stored)")
    return not stored


def _annotation_problems(ann: dict, img: dict) -> list[str]:
    found = []
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        found.append("bbox must be [x, y, width, height]")
    elif not all(is_number(v) for v in box):
        found.append(f"bbox {box} holds a value that is not a finite number")
    else:
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            found.append(f"bbox {box} has zero area")
        elif (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + bw > img["width"] + BOX_TOLERANCE
              or y + bh > img["height"] + BOX_TOLERANCE):
            found.append(f"bbox {box} lies outside image id {img['id']} ({img['width']}x{img['height']})")
    crowd = ann.get("iscrowd", 0)
    if not (isinstance(crowd, int) and not isinstance(crowd, bool) and crowd in (0, 1)):
        # pycocotools reads any truthy value as crowd ("0" too) and COCOeval fails on the rest
        found.append(f"iscrowd {crowd!r} must be 0 or 1")
    if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
        found.append(f"area {ann['area']!r} is not a finite non-negative number")
    if "segmentation" in ann:
        why = segmentation_problem(ann["segmentation"], img["height"], img["width"])
        if why:
            found.append(f"segmentation does not parse: {why}")
    return found


def polygon_area(polygons: list[list[float]]) -> float:
    """The area the polygons enclose (the shoelace formula, summed over the parts)."""
    total = 0.0
    for p in polygons:
        xs, ys = np.asarray(p[0::2], dtype=np.float64), np.asarray(p[1::2], dtype=np.float64)
        total += abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))) / 2
    return total


def degenerate_polygon_ids(data: dict) -> list[int]:
    """Ids of the (validated) non-crowd annotations whose polygons enclose no area."""
    return [a["id"] for a in data["annotations"] if isinstance(a.get("segmentation"), list)
            and not a.get("iscrowd", 0) and polygon_area(a["segmentation"]) == 0]


def validate_coco(data: dict, ann_file: str | os.PathLike, image_dir: str | os.PathLike | None,
                  check_images: bool = True) -> list[str]:
    """Every problem in a parsed instances file, as messages naming the file and the id.

    With ``image_dir`` and ``check_images`` each image file must exist and its header must
    report the size the JSON declares, as stored or upright (only the header is read; see the
    module docstring). Unreadable files are not problems here: the dataset skips them with a
    warning when it meets them.
    """
    return check_coco(data, ann_file, image_dir, check_images)[0]


def check_coco(data: dict, ann_file: str | os.PathLike, image_dir: str | os.PathLike | None,
               check_images: bool = True) -> tuple[list[str], bool]:
    """:func:`validate_coco`'s problems, and whether the images are to be read upright."""
    where = str(ann_file)
    problems: list[str] = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problems.append(f"{where}: missing or non-list '{key}'")
    if problems:
        return problems, True
    cat_ids = _check_categories(data, where, problems)
    frames: dict[str, list[int]] = {"upright": [], "stored": []}
    images = _check_images(data, where, image_dir, check_images, problems, frames)
    upright = _read_upright(frames, where, problems)
    seen_ann: set[int] = set()
    for ann in data["annotations"]:
        aid = ann.get("id") if isinstance(ann, dict) else None
        if not isinstance(aid, int) or isinstance(aid, bool):
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
        problems += [f"{tag}: {why}" for why in _annotation_problems(ann, img)]
    return problems, upright
