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

# COCOeval.stats order for bbox and segm: the six APs, then the six average recalls (at most 1,
# 10 and 100 detections per image, then small / medium / large objects at 100)
STAT_NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")
AR_NAMES = ("ar1", "ar10", "ar100", "ars", "arm", "arl")
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


def _percent(value: float) -> float:
    # pycocotools' -1 ("no object of this size in the set") stays -1, not a score
    value = float(value)
    return round(value * 100, 3) if value >= 0 else -1.0


def per_category_ap(ev: COCOeval) -> dict[int, dict[str, float]]:
    """AP and AP50 of each category (0-100, -1 without ground truth) from an accumulated
    ``COCOeval``: ``eval["precision"]`` is (IoU thresholds, recall points, categories, areas,
    max detections); a category's AP is the mean over IoU thresholds and recall points, for all
    areas and the largest detection count, of the entries that are defined (> -1), as
    ``summarize`` computes the overall AP."""
    precision = ev.eval["precision"][:, :, :, 0, -1]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        values = [precision[:, :, k], precision[:1, :, k]]
        ap, ap50 = (float(v[v > -1].mean()) if (v > -1).any() else -1.0 for v in values)
        out[int(cat_id)] = {"ap": _percent(ap), "ap50": _percent(ap50)}
    return out


def coco_summary(coco_gt: COCO, results: list[dict], iou_types: Iterable[str] = ("bbox", "segm"),
                 image_ids: list[int] | None = None, verbose: bool = False) -> tuple[dict[str, float], dict]:
    """:func:`coco_metrics`, and the rest of the COCO summary: the six average recalls
    (``box_ar1, box_ar10, box_ar100, box_ars, box_arm, box_arl``: pycocotools' ``stats[6:12]``)
    and each category's AP / AP50 (``per_category``: by category name, with its id)."""
    iou_types = tuple(iou_types)
    if not results:
        return _empty_metrics(iou_types), {"recall": {f"{IOU_PREFIX[t]}_{s}": 0.0 for t in iou_types
                                                      for s in AR_NAMES}, "per_category": {}}
    sink = io.StringIO()
    metrics: dict[str, float] = {}
    recall: dict[str, float] = {}
    categories: dict[str, dict] = {}
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
            prefix = IOU_PREFIX[iou_type]
            metrics.update({f"{prefix}_{name}": _percent(v) for name, v in zip(STAT_NAMES, ev.stats[:6])})
            recall.update({f"{prefix}_{name}": _percent(v) for name, v in zip(AR_NAMES, ev.stats[6:12])})
            for cat_id, aps in per_category_ap(ev).items():
                entry = categories.setdefault(coco_gt.cats[cat_id]["name"], {"id": cat_id})
                entry.update({f"{prefix}_{k}": v for k, v in aps.items()})
    if verbose:
        print(sink.getvalue())
    return metrics, {"recall": recall, "per_category": categories}


def coco_metrics(coco_gt: COCO, results: list[dict], iou_types: Iterable[str] = ("bbox", "segm"),
                 image_ids: list[int] | None = None, verbose: bool = False) -> dict[str, float]:
    """Run COCOeval for each IoU type; flat keys ``box_ap, box_ap50, ..., mask_apl`` in 0..100
    (-1 for a size range with no ground-truth object, as pycocotools reports it).

    ``image_ids`` restricts the evaluation (default: every image of ``coco_gt``). With no
    detections at all the metrics are 0 (pycocotools cannot load an empty result list).
    """
    return coco_summary(coco_gt, results, iou_types, image_ids, verbose)[0]


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
        return self.summary(verbose)[0]

    def summary(self, verbose: bool = False) -> tuple[dict[str, float], dict]:
        """:meth:`summarize`, and the recalls and per-category APs (:func:`coco_summary`)."""
        return coco_summary(self.coco_gt, self.results, self.iou_types, self.image_ids or None, verbose)


def to_float_image(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A plain float tensor in [0, 1] on ``device`` (datasets keep uint8 to cut loader traffic)."""
    image = image.as_subclass(torch.Tensor).to(device, non_blocking=True)
    return image.float().div_(255) if image.dtype == torch.uint8 else image.float()
