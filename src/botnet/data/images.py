"""Reading images: the one place where image files are opened and decoded.

``load_rgb`` decodes a file to an 8-bit RGB PIL image and raises the decoder's own errors (the
datasets catch them to skip and count a bad file); ``read_image`` takes anything a user may hand
to prediction (a path, a PIL image, a tensor) and returns a (3, H, W) tensor, with a
:class:`~botnet.errors.UserError` naming the file when it cannot.

High bit depths are scaled, not clipped: a 16-bit PNG (PIL modes ``I;16*`` and ``I``) keeps its
top 8 bits, so that 0..65535 maps onto 0..255 as a viewer shows it.

Photos are turned upright by their EXIF orientation tag, as viewers, browsers, labelling tools and
detectron2's ``read_image`` show them: phones store a portrait photo as a landscape bitmap plus a
tag saying how to turn it. A COCO file may instead hold annotations in the stored frame (tools
that ignore the tag): :mod:`botnet.data.coco_validate` tells the two apart by the image sizes the
file declares, and the dataset then reads its images as stored (``load_rgb(upright=False)``).
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from botnet.errors import UserError
from botnet.reading import NotARegularFile, regular_file

#: what a decoder may raise for a bad file (truncated, not an image, a decompression bomb)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: the EXIF tag of the orientation in which a photo is meant to be seen (1: as stored; 5-8 turn it
#: a quarter, swapping width and height)
EXIF_ORIENTATION = 0x0112

ImageLike = Any  # PIL.Image.Image | str | os.PathLike | numpy.ndarray | torch.Tensor
def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:
        # 16-bit (or 32-bit integer) grey: PIL's convert() would clip at 255
        bits = 16 if im.mode.startswith("I;16") else max(16, int(np.asarray(im).max()).bit_length())
        arr = np.asarray(im).astype(np.int64) >> (bits - 8)
        im = Image.fromarray(arr.clip(0, 255).astype(np.uint8), mode="L")
    if im.mode == "RGB":
        im.load()  # decodes the whole file, so truncation shows here; no converted copy needed
        return im
    return im.convert("RGB")  # convert() decodes the whole file too


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation of an open image, 1..8; 1 (as stored) without a tag or with one that
    does not parse. Reads the header only."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The (width, height) of an image of stored ``size`` once turned by its EXIF ``orientation``."""
    return (size[1], size[0]) if orientation >= 5 else tuple(size)


def _turned(im: Image.Image, orientation: int) -> Image.Image:
    return ImageOps.exif_transpose(im) if orientation != 1 else im


def load_rgb(path: str | os.PathLike, upright: bool = True) -> Image.Image:
    """The file decoded as an 8-bit RGB image, turned upright by its EXIF orientation (``upright``;
    else as stored); the decoder's errors (``DECODE_ERRORS``) propagate."""
    return read_rgb(path, upright)[0]


def fit_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` (width, height) scaled so that its longer side is at most ``max_side``."""
    if not max_side or max(size) <= max_side:
        return tuple(size)
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """The stored (width, height) of an image file, from its header alone (nothing is decoded);
    the decoder's errors (``DECODE_ERRORS``) propagate."""
    with Image.open(regular_file(path, "image")) as im:
        return im.size


def read_rgb(path: str | os.PathLike, upright: bool = True,
             max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_rgb`, and the image's full (width, height) in the frame returned. With
    ``max_side`` a larger image comes at :func:`fit_size` of it: a JPEG decoded at a half, a
    quarter or an eighth of its size while that is still larger (PIL's ``draft``: much less work),
    then resized (bilinear, antialiased)."""
    with Image.open(regular_file(path, "image")) as im:
        turn = exif_orientation(im) if upright else 1
        full = upright_size(im.size, turn)
        target = fit_size(full, max_side)
        if target != full:
            im.draft(None, upright_size(target, turn))  # the stored frame's size; JPEG only
        image = _to_rgb(_turned(im, turn))
    if image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return image, full


def read_image(item: ImageLike) -> torch.Tensor:
    """:func:`_read_image`, refusing an image without a pixel (0 x 0, H x 0): there is nothing to
    resize or to predict on."""
    image = _read_image(item)
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        name = f"{item}: " if isinstance(item, (str, os.PathLike)) else ""
        raise UserError(f"{name}an image needs at least one pixel, got {image.shape[-2]} x {image.shape[-1]} (H x W)")
    return image


def _read_image(item: ImageLike) -> torch.Tensor:
    """One image as a (3, H, W) tensor: uint8 from files, PIL images and uint8 tensors, float32 in
    [0, 1] from floating-point tensors.

    Paths and PIL images are decoded as RGB and turned upright by their EXIF orientation (as
    viewers show them). Numpy arrays are (H, W, C) or (H, W), as PIL and OpenCV give them (OpenCV's
    BGR order is the caller's to turn). Tensors are (C, H, W) with C = 1 or 3, either uint8
    (0..255) or floating point with finite values in [0, 1] (not normalised); any other dtype or
    range is refused rather than guessed at."""
    from torchvision.transforms.v2 import functional as TF

    if isinstance(item, (str, os.PathLike)):
        try:
            return TF.pil_to_tensor(load_rgb(item))
        except FileNotFoundError:
            raise UserError(f"{item}: no such image") from None
        except NotARegularFile:
            raise
        except DECODE_ERRORS as e:
            raise UserError(f"{item}: unreadable image ({type(e).__name__}: {e})") from None
    if isinstance(item, Image.Image):
        return TF.pil_to_tensor(_to_rgb(_turned(item, exif_orientation(item))))
    if isinstance(item, np.ndarray):
        item = _from_array(item)
    if isinstance(item, torch.Tensor):
        if item.is_meta:
            raise UserError("a meta tensor holds no pixels (only a shape); pass a tensor with data")
        if item.dim() != 3 or item.shape[0] not in (1, 3):
            raise UserError(f"an image tensor must be (C, H, W) with 1 or 3 channels, got shape {tuple(item.shape)}")
        image = item.detach().cpu()
        if image.is_floating_point():
            if not bool(torch.isfinite(image).all()) or image.numel() and (image.min() < 0 or image.max() > 1):
                lo, hi = (float(image.nan_to_num().min()), float(image.nan_to_num().max())) if image.numel() else (0, 0)
                raise UserError(f"a floating-point image tensor must hold finite values in [0, 1], got {lo:g}..{hi:g}"
                                + ("" if bool(torch.isfinite(image).all()) else " and NaN / inf")
                                + " (pass uint8 for 0..255)")
            image = image.float()  # kept as it is: quantising to 8 bits would change the input
        elif image.dtype != torch.uint8:
            raise UserError(f"an image tensor must be uint8 (0..255) or floating point (0..1), got {image.dtype}")
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image
    raise UserError(f"cannot read an image from a {type(item).__name__} (use a path, a PIL image, a numpy array "
                    "or a tensor)")


def _from_array(array: np.ndarray) -> torch.Tensor:
    # numpy images are (H, W, C) or (H, W), as PIL (np.asarray) and OpenCV hand them out
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise UserError(f"a numpy image must be (H, W) or (H, W, C) with 1 or 3 channels, got shape {array.shape}")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.floating) or array.dtype == np.uint8):
        raise UserError(f"a numpy image must be uint8 (0..255) or floating point (0..1), got {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def read_image_or_skip(item: ImageLike, skipped: dict[str, str] | None) -> torch.Tensor | None:
    """:func:`read_image`; with ``skipped`` (a dict), a file that cannot be read is recorded there
    (path: why) with a warning and None is returned, so that one bad file of many costs only itself."""
    try:
        return read_image(item)
    except UserError as e:
        if skipped is None or not isinstance(item, (str, os.PathLike)):
            raise
        skipped[str(item)] = str(e)
        warnings.warn(f"{e}; skipped", stacklevel=2)
        return None
