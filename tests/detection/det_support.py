"""Helpers of the tests that train a detector and score it: one intra-op thread, evaluation through
``botnet eval det``, and COCO results of predictors that learn nothing (the floor's yardstick)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from botnet.cli import main


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: on a shared 2-core machine a 2-thread run was five
    times slower (OpenMP threads spin while they wait)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def evaluate(weights: Path, images, ann, out: Path) -> tuple[dict, list]:
    """``botnet eval det``: (eval.json, predictions.json) of ``weights`` on a COCO set."""
    assert main(["eval", "det", "--data", str(images), "--ann", str(ann), "--weights", str(weights),
                 "--out", str(out), "--workers", "0"]) == 0
    return json.loads((out / "eval.json").read_text()), json.loads((out / "predictions.json").read_text())


def baseline_results(train_ann, val_ann, seed: int = 0) -> dict[str, list[dict]]:
    """COCO results of predictors that learn nothing: the training set's mean box (centred, every
    class, score 1), a grid of mean-sized boxes (every class: 20 places per image), and 100 random
    boxes per image with random classes and scores. Masks fill the boxes."""
    from pycocotools import mask as mask_utils

    train = json.loads(Path(train_ann).read_text())
    val = json.loads(Path(val_ann).read_text())
    cats = [c["id"] for c in val["categories"]]
    w, h = np.mean([a["bbox"][2:] for a in train["annotations"] if not a.get("iscrowd", 0)], axis=0)
    rng = np.random.default_rng(seed)

    def result(image, cat, box, score):
        m = np.zeros((image["height"], image["width"]), np.uint8, order="F")
        x0, y0, bw, bh = (int(round(v)) for v in box)
        m[max(y0, 0):y0 + bh, max(x0, 0):x0 + bw] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode()
        return {"image_id": image["id"], "category_id": int(cat), "bbox": [float(v) for v in box], "score": float(score),
                "segmentation": rle}

    out = {"constant": [], "grid": [], "random": []}
    for im in val["images"]:
        W, H = im["width"], im["height"]
        out["constant"] += [result(im, c, [(W - w) / 2, (H - h) / 2, w, h], 1.0) for c in cats]
        out["grid"] += [result(im, c, [x, y, w, h], 0.5) for x in np.linspace(0, W - w, 5)
                        for y in np.linspace(0, H - h, 4) for c in cats]
        for _ in range(100):
            bw, bh = np.exp(rng.uniform(np.log(4), np.log(W / 2), 2))
            x, y = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
            out["random"].append(result(im, rng.choice(cats), [x, y, bw, bh], rng.random()))
    return out


def baseline_scores(train_ann, val_images, val_ann, keys, iou_types=("bbox", "segm")) -> dict[str, dict]:
    """``keys`` of the COCO metrics of each :func:`baseline_results` predictor."""
    from botnet.data.coco import load_coco
    from botnet.detection.evaluator import coco_metrics

    gt = load_coco(val_ann, val_images)
    scores = {}
    for name, results in baseline_results(train_ann, val_ann).items():
        metrics = coco_metrics(gt, results, iou_types)
        scores[name] = {k: metrics[k] for k in keys}
    return scores
