"""Library entry points for detection: train, evaluate, predict. The CLI calls these."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from botnet.detection.config import DetDataConfig, DetectionConfig, DetModelConfig
from botnet.detection.predict import write_predictions
from botnet.detection.task import DetectionTask
from botnet.engine import distributed as du
from botnet.engine import evaluate, train
from botnet.engine.config import from_dict
from botnet.engine.hooks import Hook
from botnet.engine.recipes import RecipeChoice
from botnet.errors import UserError, old_argument
from botnet.engine.evaluate import EVAL_FILE, weights_amp
from botnet.io import Outputs
from botnet.tasks import DETECTION, task_title
from botnet.weights.rebuild import load_model


def train_detector(cfg: DetectionConfig, out_dir: str | os.PathLike,
                   resume: str | os.PathLike | None = None, hooks: Iterable[Hook] = ()) -> dict[str, Any]:
    """Train a detector on ``cfg.data`` into ``out_dir``; returns the final metrics. With
    ``model.anchor_sizes: auto`` the anchors are fitted to the training boxes first (the run's
    config.yaml keeps the fitted values, so a resumed run and the weights' metadata use them).
    ``hooks`` (:class:`botnet.engine.Hook`) are called after the engine's own."""
    if cfg.model.anchor_sizes == "auto":
        from botnet.detection.anchors import fit_anchors

        cfg = fit_anchors(cfg, say=_say)
    hint = random_backbone_hint(cfg.model) if resume is None else None
    if hint:
        _say(hint)
    return train(DetectionTask.for_training(cfg), cfg, out_dir, resume=resume, hooks=hooks)


def _say(line: str) -> None:
    if du.rank() == 0:
        print(line, file=sys.stderr)


def random_backbone_hint(model: DetModelConfig) -> str | None:
    """A line for a run whose backbone starts random though ImageNet weights exist for it: the
    paper (arXiv 2101.11605, the COCO experiments) starts the ResNet layers from ImageNet weights."""
    from botnet.weights.pretrained import imagenet_cache_file

    where = imagenet_cache_file(model.name) if model.backbone_weights is None else None
    if where is None:
        return None
    return (f"backbone {model.name} starts from random weights; the paper starts from ImageNet weights "
            f"(--backbone-weights imagenet, fetched once to {where[0]}; docs/pretrained.md)")


#: below this many training images, a run that names no recipe gets the small-data schedule
SMALL_DATASET = 1_000
SMALL_RECIPES = {"pretrained": "det_finetune_small", "scratch": "det_scratch_small"}


def choose_recipe(cfg: DetectionConfig, limit: int = SMALL_DATASET) -> RecipeChoice:
    """The recipe for a run that names none: the paper's COCO default, or for fewer than ``limit``
    training images the small-data schedule, fine-tuning when backbone weights are given or
    ImageNet's are in the cache (nothing is fetched to decide), else from scratch."""
    default, docs = type(cfg).recipe, "docs/detection.md"
    count = _count_images(cfg.data.train_ann)
    if count is None:
        return RecipeChoice(default, "the default (no readable training annotations to look at)", docs)
    if count >= limit:
        return RecipeChoice(default, f"the default, for {count:,} training images (not under {limit:,})", docs)
    from botnet.weights.pretrained import imagenet_cache_file

    why = f"chosen from the data: {count:,} training images (under {limit:,}), "
    if cfg.model.backbone_weights is not None:
        return RecipeChoice(SMALL_RECIPES["pretrained"], why + "fine-tuning the backbone weights given", docs)
    where = imagenet_cache_file(cfg.model.name)
    if where is not None and where[1]:
        return RecipeChoice(SMALL_RECIPES["pretrained"], why + f"fine-tuning ImageNet weights from {where[0]}", docs)
    reason = "no ImageNet weights exist for it" if where is None else "its ImageNet weights are not in the cache"
    return RecipeChoice(SMALL_RECIPES["scratch"], why + f"{cfg.model.name} from scratch ({reason})", docs)


def _count_images(ann: str) -> int | None:
    # the dataset's own validation reports a missing or broken file, with its details, when the run starts
    try:
        doc = json.loads(Path(ann).read_text()) if ann else None
    except (OSError, ValueError):
        return None
    images = doc.get("images") if isinstance(doc, dict) else None
    return len(images) if isinstance(images, list) else None


def _task_for_weights(meta: dict[str, Any], strict: bool, canvas: int) -> DetectionTask:
    model_cfg = from_dict(DetModelConfig, meta["detector"], "detector")
    cfg = DetectionConfig(model=model_cfg, data=DetDataConfig(img_size=canvas, strict=strict))
    return DetectionTask(cfg, class_names=meta["class_names"], cat_ids=meta.get("cat_ids"))


def evaluate_detector(images: str | os.PathLike, ann: str | os.PathLike, weights: str | os.PathLike,
                      out_dir: str | os.PathLike | None = None, *, batch_size: int = 8, workers: int = 2,
                      device: str = "auto", amp: str = "auto", img_size: int | None = None,
                      strict: bool = False, canvas: int | None = None) -> dict[str, Any]:
    """COCO box and mask AP (0-100) of ``weights`` on a COCO-format set, the average recalls of the
    COCO summary (``box_ar1`` .. ``mask_arl``) and each category's AP (``per_category``). With ``out_dir``, writes
    :data:`EVAL_FILE` and ``predictions.json`` (the COCO results format), never over an input
    (nor over a run's own ``metrics.json``). Under torchrun each process evaluates a share and the
    predictions of all ranks are gathered. ``amp="auto"`` evaluates in the precision the run
    evaluated the weights in (:func:`~botnet.engine.evaluate.weights_amp`), so that the same
    weights give the run's own metrics; the precision used is reported as ``amp``. ``img_size``:
    the canvas side (default: the one trained at; ``canvas=`` is its old name)."""
    img_size = old_argument("evaluate_detector", "canvas", canvas, "img_size", img_size)
    outputs = Outputs([images, ann, weights], folder=out_dir) if out_dir is not None else None  # before any work
    dev = du.select_device(device, int(os.environ.get("LOCAL_RANK", 0)))
    info = du.setup("auto", dev)
    try:
        loaded = load_model(weights, img_size=img_size, device=dev)
        if loaded.task != DETECTION:
            raise UserError(f"{weights}: {task_title(loaded.task)} weights; evaluate them with "
                            f"`botnet eval {loaded.task}`")
        task = _task_for_weights(loaded.metadata, strict, loaded.canvas)
        dataset = task.build_val_dataset(str(images), str(ann))
        amp = weights_amp(dev, amp, loaded.metadata)
        result = evaluate(task, loaded.model, dataset, batch_size=batch_size, workers=workers, device=dev, amp=amp)
        metrics: dict[str, Any] = {**result.metrics, **result.details["recall"], **task.summary(),
                                   "weights": str(weights), "annotations": str(ann), "amp": amp,
                                   "per_category": result.details["per_category"]}
        if outputs is not None and info.is_main:
            with outputs:
                outputs.write_json(Path(out_dir) / "predictions.json", result.predictions, indent=None)
                outputs.write_json(Path(out_dir) / EVAL_FILE, metrics)
        return metrics
    finally:
        du.teardown(info)


def predict_images(images: Sequence[str | os.PathLike], weights: str | os.PathLike, out_dir: str | os.PathLike,
                   *, score_thresh: float = 0.5, device: str = "auto", img_size: int | None = None,
                   canvas: int | None = None) -> dict[str, Any]:
    """Detect objects in image files with the detector in ``weights``: pictures and
    ``detections.json`` in ``out_dir`` (see :func:`~botnet.detection.predict.write_predictions`).
    ``img_size``: the canvas side (default: the one trained at; ``canvas=`` is its old name)."""
    img_size = old_argument("predict_images", "canvas", canvas, "img_size", img_size)
    dev = du.select_device(device)
    loaded = load_model(weights, img_size=img_size, device=dev)
    if loaded.task != DETECTION:
        raise UserError(f"{weights}: {task_title(loaded.task)} weights; use `botnet predict {loaded.task}`")
    return write_predictions(loaded.model, images, loaded.class_names, out_dir, cat_ids=loaded.metadata.get("cat_ids"),
                             score_thresh=score_thresh, device=dev)
