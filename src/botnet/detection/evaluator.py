"""COCO box and mask AP with pycocotools, reported as flat keys on the paper's 0-100 scale.

Detections are converted to the COCO results format as they arrive (boxes as [x, y, w, h],
masks as compressed RLE of the thresholded mask), so evaluation holds no full-size masks in
memory. Under torch.distributed every rank collects its share; :meth:`CocoEvaluator.gather`
merges them so that COCOeval sees all images, and every rank gets the same metrics.
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from botnet.detection.masks import IMAGE_SIZE, encode_masks, mask_rles
from botnet.engine import distributed as du

# COCOeval.stats order for bbox and segm
STAT_NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")
IOU_PREFIX = {"bbox": "box", "segm": "mask"}


def detections_to_coco(output: dict, image_id: int, label_to_cat: dict[int, int],
                       mask_threshold: float = 0.5) -> list[dict]:
    """One image's model output (boxes XYXY in image pixels, labels, scores, optional masks
    (N, 1, H, W) probabilities, or small ones with the image's size: :mod:`botnet.detection.masks`)
    as COCO result dicts."""
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]
    xywh = xywh.tolist()
    rles = None
    if "masks" in output and len(boxes) and IMAGE_SIZE in output:
        size = tuple(int(v) for v in output[IMAGE_SIZE])
        rles = mask_rles(output["masks"].detach(), output["boxes"].detach(), size, mask_threshold)
    elif "masks" in output and len(boxes):
        masks = output["masks"].detach().cpu()[:, 0]
        rles = encode_masks(masks if masks.dtype == torch.bool else masks > mask_threshold)
    results = []
    for i in range(len(scores)):
        r = {"image_id": int(image_id), "category_id": int(label_to_cat[int(labels[i])]),
             "bbox": [round(v, 2) for v in xywh[i]], "score": round(float(scores[i]), 5)}
        if rles is not None:
            r["segmentation"] = rles[i]
        results.append(r)
    return results


def _empty_metrics(iou_types: Iterable[str]) -> dict[str, float]:
    return {f"{IOU_PREFIX[t]}_{s}": 0.0 for t in iou_types for s in STAT_NAMES}


def coco_metrics(coco_gt: COCO, results: list[dict], iou_types: Iterable[str] = ("bbox", "segm"),
                 image_ids: list[int] | None = None, verbose: bool = False) -> dict[str, float]:
    """Run COCOeval for each IoU type; flat keys ``box_ap, box_ap50, ..., mask_apl`` in 0..100
    (-1 for a size range with no ground-truth object, as pycocotools reports it).

    ``image_ids`` restricts the evaluation (default: every image of ``coco_gt``). With no
    detections at all the metrics are 0 (pycocotools cannot load an empty result list).
    """
    iou_types = tuple(iou_types)
    if not results:
        return _empty_metrics(iou_types)
    sink = io.StringIO()
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(sink):
        # loadRes adds areas to the results in place; give it copies
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        for iou_type in iou_types:
            if iou_type == "segm" and "segmentation" not in results[0]:
                continue
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            if image_ids is not None:
                ev.params.imgIds = sorted(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, value in zip(STAT_NAMES, ev.stats[:6]):
                # pycocotools' -1 ("no object of this size in the set") stays -1, not a score
                value = float(value)
                metrics[f"{IOU_PREFIX[iou_type]}_{name}"] = round(value * 100, 3) if value >= 0 else -1.0
    if verbose:
        print(sink.getvalue())
    return metrics


def gather_objects(items: list) -> list:
    """Concatenate per-rank lists on every rank (identity outside torch.distributed)."""
    return [x for part in du.all_gather_objects(list(items)) for x in part]


class CocoEvaluator:
    """Accumulate detections batch by batch, then compute COCO metrics across all ranks.

    ``label_to_cat`` maps the model's contiguous labels back to the JSON's category ids.
    """

    def __init__(self, coco_gt: COCO, label_to_cat: dict[int, int], iou_types=("bbox", "segm"),
                 mask_threshold: float = 0.5):
        self.coco_gt = coco_gt
        self.label_to_cat = dict(label_to_cat)
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self.results: list[dict] = []
        self.image_ids: list[int] = []

    def update(self, outputs: list[dict], image_ids: list[int]) -> None:
        for output, image_id in zip(outputs, image_ids):
            self.image_ids.append(int(image_id))
            self.results.extend(detections_to_coco(output, image_id, self.label_to_cat, self.mask_threshold))

    def gather(self) -> None:
        """Merge every rank's results (each rank then holds all of them)."""
        self.results = gather_objects(self.results)
        self.image_ids = sorted(set(gather_objects(self.image_ids)))

    def summarize(self, verbose: bool = False) -> dict[str, float]:
        """Metrics over the images seen (by all ranks, after :meth:`gather`)."""
        return coco_metrics(self.coco_gt, self.results, self.iou_types, self.image_ids or None, verbose)


def to_float_image(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A plain float tensor in [0, 1] on ``device`` (datasets keep uint8 to cut loader traffic)."""
    image = image.as_subclass(torch.Tensor).to(device, non_blocking=True)
    return image.float().div_(255) if image.dtype == torch.uint8 else image.float()
