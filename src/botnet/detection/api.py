"""Library entry points for detection: train, evaluate, predict. The CLI calls these."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from botnet.detection.config import DetDataConfig, DetectionConfig, DetModelConfig
from botnet.detection.evaluator import detections_to_coco, to_float_image
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.detection.task import DetectionTask
from botnet.detection.visualize import draw_detections, save_png
from botnet.engine import distributed as du
from botnet.engine import evaluate, train
from botnet.engine.config import from_dict, resolve_run_config
from botnet.engine.evaluate import autocast
from botnet.errors import UserError
from botnet.io import write_json


def resolve_train_config(recipe: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                         resume: str | os.PathLike | None = None) -> DetectionConfig:
    """Defaults <- recipe (or, when resuming without one, the run's own config) <- overrides."""
    return resolve_run_config(DetectionConfig, recipe, overrides, resume)


def train_detector(cfg: DetectionConfig, out_dir: str | os.PathLike,
                   resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train a detector on ``cfg.data`` into ``out_dir``; returns the final metrics."""
    return train(DetectionTask(cfg), cfg, out_dir, resume=resume)


def load_detector(weights: str | os.PathLike, device: str | torch.device = "cpu", canvas: int | None = None,
                  score_thresh: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A detector rebuilt from a weights file written by ``botnet train det``, and its metadata.

    ``canvas`` evaluates at another size than the one trained at (the attention follows)."""
    from botnet.weights import load_weights, read_metadata

    meta = read_metadata(weights)
    if meta.get("task") != "det" or not meta.get("class_names") or "detector" not in meta:
        raise UserError(f"{weights}: not detection weights (no class names / detector description); use "
                        "the model.safetensors or best.safetensors of a `botnet train det` run")
    model_cfg = from_dict(DetModelConfig, meta["detector"], "detector")
    model_cfg = dataclasses.replace(model_cfg, backbone_weights=None)
    if score_thresh is not None:
        model_cfg = dataclasses.replace(model_cfg, score_thresh=score_thresh)
    model = build_maskrcnn(model_cfg.name, len(meta["class_names"]), canvas=canvas or int(meta["canvas"]),
                           **model_cfg.builder_kwargs())
    load_weights(model, weights)
    return model.to(device).eval(), meta


def _task_for_weights(meta: dict[str, Any], strict: bool = False, canvas: int | None = None) -> DetectionTask:
    model_cfg = from_dict(DetModelConfig, meta["detector"], "detector")
    cfg = DetectionConfig(model=model_cfg, data=DetDataConfig(canvas=canvas or int(meta["canvas"]), strict=strict))
    return DetectionTask(cfg, class_names=meta["class_names"], cat_ids=meta.get("cat_ids"))


def evaluate_detector(images: str | os.PathLike, ann: str | os.PathLike, weights: str | os.PathLike,
                      out_dir: str | os.PathLike | None = None, *, batch_size: int = 8, workers: int = 2,
                      device: str = "auto", amp: str = "bf16", canvas: int | None = None,
                      strict: bool = False) -> dict[str, Any]:
    """COCO box and mask AP (0-100) of ``weights`` on a COCO-format set. With ``out_dir``, writes
    ``metrics.json`` and ``predictions.json`` (the COCO results format). Under torchrun each
    process evaluates a share and the predictions of all ranks are gathered."""
    dev = du.select_device(device, int(os.environ.get("LOCAL_RANK", 0)))
    info = du.setup("auto", dev)
    try:
        model, meta = load_detector(weights, dev, canvas)
        task = _task_for_weights(meta, strict, canvas)
        dataset = task.build_val_dataset(str(images), str(ann))
        metrics: dict[str, Any] = evaluate(task, model, dataset, batch_size=batch_size, workers=workers,
                                           device=dev, amp=amp)
        metrics.update(task.summary(), weights=str(weights), annotations=str(ann))
        if out_dir is not None and info.is_main:
            write_json(Path(out_dir) / "predictions.json", task.last_results, indent=None)
            write_json(Path(out_dir) / "metrics.json", metrics)
        return metrics
    finally:
        du.teardown(info)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """(3, H, W) uint8 RGB; a missing or unreadable file is a :class:`UserError` naming it."""
    from botnet.api import read_image as read_float_image

    # the float image is k / 255 for uint8 k, so rounding recovers the bytes exactly
    return read_float_image(path).mul(255).round_().to(torch.uint8)


@torch.no_grad()
def predict_images(images: Sequence[str | os.PathLike], weights: str | os.PathLike, out_dir: str | os.PathLike,
                   *, score_thresh: float = 0.5, device: str = "auto", amp: str = "bf16",
                   canvas: int | None = None, model: nn.Module | None = None,
                   meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Detect objects in ``images``: one PNG per image with masks, boxes, class names and scores
    drawn, and ``detections.json``, a COCO instances file (images, categories, and one
    annotation with a ``score`` per detection above ``score_thresh``). Returns that dict."""
    dev = du.select_device(device)
    if model is None or meta is None:
        model, meta = load_detector(weights, dev, canvas)
    model.eval()
    names, cat_ids = meta["class_names"], meta.get("cat_ids") or list(range(1, len(meta["class_names"]) + 1))
    label_to_cat = {i + 1: c for i, c in enumerate(cat_ids)}
    out_dir = Path(out_dir)
    doc: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, names)]}
    used: set[str] = set()
    for image_id, path in enumerate(images, start=1):
        image = read_image(path)
        with autocast(dev, amp):
            output = model([to_float_image(image, dev)])[0]
        keep = output["scores"] >= score_thresh
        output = {k: v[keep] for k, v in output.items()}
        stem = Path(path).stem
        name = stem if stem not in used else f"{stem}_{image_id}"
        used.add(name)
        save_png(draw_detections(image, output, names, score_thresh=0.0), out_dir / f"{name}.png")
        doc["images"].append({"id": image_id, "file_name": str(path), "width": image.shape[2],
                              "height": image.shape[1], "drawing": f"{name}.png"})
        for det in detections_to_coco(output, image_id, label_to_cat):
            det.update(id=len(doc["annotations"]) + 1, iscrowd=0, area=round(det["bbox"][2] * det["bbox"][3], 2))
            doc["annotations"].append(det)
    write_json(out_dir / "detections.json", doc, indent=None)
    return doc
