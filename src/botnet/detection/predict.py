"""Detection prediction: the one path from raw images to boxes, labels, scores and masks, and the
pictures and COCO-format file that ``botnet predict det`` writes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from botnet.data.images import ImageLike, read_image, read_image_or_skip
from botnet.detection.evaluator import detections_to_coco, to_float_image
from botnet.detection.masks import IMAGE_SIZE, paste_masks, unpasted_masks
from botnet.detection.visualize import draw_detections, save_png
from botnet.engine.evaluate import autocast
from botnet.engine.progress import Progress
from botnet.io import Outputs, write_json


@dataclass
class Detections:
    """Objects found in one image, in its own pixel coordinates, best score first.

    ``boxes`` (N, 4) x1, y1, x2, y2; ``scores`` (N,); ``labels`` class names; ``label_ids`` (N,)
    detector labels (1-based, 0 is the background); ``masks`` (N, H, W) bool, or None for a
    detector without a mask head."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    label_ids: torch.Tensor
    masks: torch.Tensor | None

    def as_output(self) -> dict[str, torch.Tensor]:
        """The detector's output dict (masks as (N, 1, H, W) bool: a view, never a float copy of
        image-sized masks) for drawing and COCO export."""
        out = {"boxes": self.boxes, "scores": self.scores, "labels": self.label_ids}
        if self.masks is not None:
            out["masks"] = self.masks[:, None]
        return out


@torch.no_grad()
def detect(model: nn.Module, image: ImageLike, class_names: Sequence[str], *, score_thresh: float = 0.5,
           device: torch.device | str = "cpu", amp: str = "fp32") -> Detections:
    """The objects of one image scoring at least ``score_thresh``.

    The evaluation path of the detection task: torchvision's transform resizes the longer side to
    the canvas, normalises, and maps boxes and masks back to the image (masks thresholded at 0.5)."""
    pixels = read_image(image)
    h, w = pixels.shape[-2:]
    device = torch.device(device)
    with autocast(device, amp), unpasted_masks(model):
        out = model([to_float_image(pixels, device)])[0]
    keep = out["scores"] >= score_thresh
    ids = out["labels"][keep].cpu()
    masks = None
    if "masks" in out and IMAGE_SIZE in out:  # only the kept detections' masks at the image's size
        masks = paste_masks(out["masks"][keep], out["boxes"][keep], (h, w))
    elif "masks" in out:
        masks = out["masks"][keep].cpu()[:, 0] > 0.5 if keep.any() else torch.zeros(0, h, w, dtype=torch.bool)
    names = [class_names[i - 1] if 0 < i <= len(class_names) else str(i) for i in ids.tolist()]
    return Detections(out["boxes"][keep].float().cpu(), out["scores"][keep].float().cpu(), names, ids, masks)


def _unique_names(images: Sequence[str | os.PathLike]) -> list[str]:
    """The file name of each image's drawing: its stem as ``.png``, numbered when taken."""
    names, used = [], set()
    for image_id, path in enumerate(images, start=1):
        stem = Path(path).stem
        name = stem if stem not in used else f"{stem}_{image_id}"
        used.add(name)
        names.append(f"{name}.png")
    return names


def write_predictions(model: nn.Module, images: Sequence[str | os.PathLike], class_names: Sequence[str],
                      out_dir: str | os.PathLike, *, cat_ids: Sequence[int] | None = None,
                      score_thresh: float = 0.5, device: torch.device | str = "cpu",
                      skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """Detect objects in image files: one PNG per image with masks, boxes, class names and scores
    drawn, and ``detections.json``, a COCO instances file (images, categories, and one annotation
    with a ``score`` per detection). Returns the document.

    Nothing is written over an input: ``out_dir`` must not be a folder of the images, nor a
    drawing's name one of them (:class:`~botnet.io.Outputs`, checked before any image is read).
    With ``skipped`` (a dict), an unreadable file is skipped with a warning and recorded there;
    without, it stops the command. A failure part-way removes the pictures this call drew (and
    only those)."""
    cat_ids = list(cat_ids or range(1, len(class_names) + 1))
    label_to_cat = {i + 1: c for i, c in enumerate(cat_ids)}
    inputs = [*images, *{Path(p).parent for p in images}]
    doc: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, class_names)]}
    progress = Progress("prediction", len(images))
    with Outputs(inputs, folder=out_dir) as outputs:
        out_dir = outputs.folder
        drawings = [outputs.claim(out_dir / name) for name in _unique_names(images)]
        outputs.claim(out_dir / "detections.json")
        for image_id, (path, drawing) in enumerate(zip(images, drawings), start=1):
            pixels = read_image_or_skip(path, skipped)
            progress.update(1)
            if pixels is None:
                continue
            found = detect(model, pixels, class_names, score_thresh=score_thresh, device=device)
            save_png(draw_detections(pixels, found.as_output(), class_names, 0.0), drawing)
            doc["images"].append({"id": image_id, "file_name": str(path), "width": pixels.shape[2],
                                  "height": pixels.shape[1], "drawing": drawing.name})
            for det in detections_to_coco(found.as_output(), image_id, label_to_cat):
                det.update(id=len(doc["annotations"]) + 1, iscrowd=0, area=round(det["bbox"][2] * det["bbox"][3], 2))
                doc["annotations"].append(det)
        write_json(out_dir / "detections.json", doc, indent=None)
    return doc


#: an image shrunk by more than this factor to fit the canvas gets a note: its small objects may
#: fall below what the detector can find (a 303 x 384 photo at canvas 128 lost every object)
SHRINK_NOTE = 2.0


def shrink_note(sizes: Sequence[tuple[int, int]], canvas: int | None) -> str | None:
    """A line for images (``(height, width)`` each) whose longer side is more than
    :data:`SHRINK_NOTE` times the ``canvas`` they are resized to, naming ``--img-size``; None when
    there are none."""
    if not canvas:
        return None
    shrunk = [max(hw) for hw in sizes if max(hw) > SHRINK_NOTE * canvas]
    if not shrunk:
        return None
    largest = max(shrunk)
    suggested = min(-(-largest // 32) * 32, 4 * canvas)  # the photos' own size, within reason
    return (f"note: {len(shrunk)} of {len(sizes)} image(s) were shrunk more than {SHRINK_NOTE:g}x to fit the "
            f"{canvas} px canvas (largest side {largest} px); small objects may be missed. "
            f"--img-size {suggested} runs the detector at a larger size")


def letterbox(image: ImageLike, canvas: int) -> tuple[torch.Tensor, float]:
    """An image on a fixed ``canvas`` x ``canvas``, the input of a detector export, and its scale
    (canvas pixels per image pixel: divide the export's boxes by it to return to the image).

    ``image`` is anything :class:`botnet.Predictor` takes (a path, a PIL image, a numpy array or a
    (C, H, W) tensor: :func:`~botnet.data.images.read_image`). Its longer side is resized to
    ``canvas`` and the bottom / right padded with zeros (the training crop's padding); the result
    is (3, canvas, canvas) RGB float32 in [0, 1]."""
    from torchvision.transforms.v2 import functional as TF

    pixels = read_image(image)
    pixels = pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels.float()
    h, w = pixels.shape[-2:]
    scale = canvas / max(h, w)
    size = [max(1, min(canvas, round(h * scale))), max(1, min(canvas, round(w * scale)))]
    resized = TF.resize(pixels, size, antialias=True).clamp_(0, 1) if size != [h, w] else pixels
    return F.pad(resized, (0, canvas - size[1], 0, canvas - size[0])), scale
