"""Library entry points for classification: train, evaluate, predict. The CLI calls these."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from botnet.classification.config import ClassificationConfig, ClsDataConfig, ClsModelConfig
from botnet.classification.report import confusion_document, draw_confusion, per_class
from botnet.classification.task import ClassificationTask, model_input_size
from botnet.data.imagefolder import IMAGE_EXTENSIONS, split_folder
from botnet.engine import distributed as du
from botnet.engine import evaluate, train
from botnet.engine.hooks import Hook
from botnet.engine.recipes import RecipeChoice
from botnet.errors import UserError
from botnet.engine.evaluate import EVAL_FILE, weights_amp
from botnet.io import Outputs
from botnet.tasks import CLASSIFICATION, task_title
from botnet.weights.rebuild import LoadedModel, load_model


#: below this many training images of sides under the training resolution, a run that names no
#: recipe trains with ``cls_small`` instead of the ImageNet default
SMALL_DATASET = 10_000
SMALL_RECIPE = "cls_small"
#: images whose sizes are read to judge them small (headers only)
SIZE_SAMPLE = 32
#: written beside eval.json by ``botnet eval cls``
CONFUSION_FILE, CONFUSION_PICTURE = "confusion_matrix.json", "confusion_matrix.png"


def choose_recipe(cfg: ClassificationConfig, limit: int = SMALL_DATASET) -> RecipeChoice:
    """The recipe for a run that names none: ``cls_small`` when ``cfg.data.root``'s training split
    holds fewer than ``limit`` images and they are smaller than the training resolution, else the
    ImageNet default. On a few thousand small images the ImageNet recipe (arXiv 2101.11605: crops
    down to 8%, flips, SGD) leaves a short run near chance (docs/training.md, small datasets)."""
    default = type(cfg).recipe
    train_dir = split_folder(cfg.data.root, "train") if cfg.data.root else None
    if train_dir is None:
        return RecipeChoice(default, "the default (no training folder to look at)")
    files = []
    for path in train_dir.rglob("*"):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
            if len(files) >= limit:
                return RecipeChoice(default, f"the default, for {limit:,} training images or more")
    side = max(model_input_size(cfg.model, cfg.data.img_size))
    typical = _median_side(files[::max(1, len(files) // SIZE_SAMPLE)])
    counts = f"{len(files):,} training images (under {limit:,})"
    if typical is None or typical >= side:
        size = "" if typical is None else f", a median longer side of {typical} px (not under {side})"
        return RecipeChoice(default, f"the default: {counts}{size}")
    return RecipeChoice(SMALL_RECIPE, f"chosen from the data: {counts}, a median longer side of {typical} px "
                                      f"(under the training size {side}); the default is {default}")


def _median_side(files: list[Path]) -> int | None:
    from botnet.data.images import DECODE_ERRORS, image_size

    sides = []
    for path in files:
        try:
            sides.append(max(image_size(path)))
        except DECODE_ERRORS:
            continue  # the training reports unreadable images itself
    return sorted(sides)[len(sides) // 2] if sides else None


def train_classifier(cfg: ClassificationConfig, out_dir: str | os.PathLike,
                     resume: str | os.PathLike | None = None, hooks: Iterable[Hook] = ()) -> dict[str, Any]:
    """Train on ``cfg.data.root`` into ``out_dir``; returns the final metrics. ``hooks``
    (:class:`botnet.engine.Hook`) are called after the engine's own at each point of the run."""
    return train(ClassificationTask.for_training(cfg), cfg, out_dir, resume=resume, hooks=hooks)


def _task_for_weights(loaded: LoadedModel, strict: bool) -> ClassificationTask:
    # the evaluation preprocessing of the weights (as rebuilt by botnet.weights.rebuild)
    data = ClsDataConfig(img_size=loaded.img_size[0], crop_pct=loaded.crop_pct, strict=strict, mean=loaded.mean,
                         std=loaded.std)
    cfg = ClassificationConfig(model=ClsModelConfig(name=loaded.metadata.get("model", "")), data=data)
    return ClassificationTask(cfg, class_names=loaded.class_names)


def evaluate_classifier(
    data: str | os.PathLike,
    weights: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    split: str = "val",
    batch_size: int = 64,
    img_size: int | None = None,
    workers: int = 2,
    device: str = "auto",
    amp: str = "auto",
    strict: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (percent; top-5 for more than 5 classes), loss and each class's
    accuracy (``per_class``) of ``weights`` on ``data/<split>``. With ``out_dir`` they are written
    to :data:`~botnet.engine.evaluate.EVAL_FILE`, and the confusion matrix beside it as
    :data:`CONFUSION_FILE` (rows: true class) and :data:`CONFUSION_PICTURE` (never over an input,
    nor over a run's own ``metrics.json``)."""
    outputs = Outputs([data, weights], folder=out_dir) if out_dir is not None else None  # before any work
    dev = du.select_device(device)
    loaded = load_model(weights, img_size=img_size, device=dev)
    if loaded.task != CLASSIFICATION:
        raise UserError(f"{weights}: {task_title(loaded.task)} weights; evaluate them with `botnet eval {loaded.task}`")
    if not loaded.metadata.get("class_names"):
        raise UserError(f"{weights}: no class names in this file; use the model.safetensors or best.safetensors "
                        "of a classification run")
    task = _task_for_weights(loaded, strict)
    split_dir = split_folder(data, split) or Path(data)
    dataset = task.eval_dataset(split_dir)
    amp = weights_amp(dev, amp, loaded.metadata)  # auto: the precision of the run's own evaluations
    result = evaluate(task, loaded.model, dataset, batch_size=batch_size, workers=workers, device=dev, amp=amp,
                      channels_last=dev.type == "cuda")
    confusion = result.details["confusion"]
    metrics = {**result.metrics, **task.summary(), "weights": str(weights), "data": str(split_dir), "amp": amp,
               "per_class": per_class(confusion, loaded.class_names)}
    if outputs is not None and du.rank() == 0:
        with outputs:
            folder = Path(out_dir)
            outputs.write_json(folder / CONFUSION_FILE, confusion_document(confusion, loaded.class_names))
            draw_confusion(confusion, loaded.class_names, outputs.claim(folder / CONFUSION_PICTURE),
                           title=f"{Path(weights).name} on {split_dir}")
            outputs.write_json(folder / EVAL_FILE, metrics)
    return metrics
