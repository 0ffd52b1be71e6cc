"""Library entry points for classification: train, evaluate, predict. The CLI calls these."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from botnet.classification.config import ClassificationConfig, ClsDataConfig, ClsModelConfig
from botnet.classification.task import ClassificationTask
from botnet.data.imagefolder import split_folder
from botnet.engine import distributed as du
from botnet.engine import evaluate, train
from botnet.errors import UserError
from botnet.engine.evaluate import EVAL_FILE
from botnet.io import Outputs
from botnet.loading import LoadedModel, load_model


#: below this many training images, ``botnet train cls`` without ``--config`` suggests ``cls_small``
SMALL_DATASET = 10_000


def small_data_hint(root: str | os.PathLike, limit: int = SMALL_DATASET) -> str | None:
    """The line suggesting the ``cls_small`` recipe when ``root/train`` holds fewer than ``limit``
    files, else None. The defaults are the ImageNet recipe (arXiv 2101.11605): on a few thousand
    images its crops, RandAugment and SGD 0.1 leave a short run near chance (docs/training.md)."""
    train_dir = Path(root) / "train"
    if not train_dir.is_dir():
        return None
    n = 0
    for path in train_dir.rglob("*"):
        n += path.is_file()
        if n >= limit:
            return None
    return (f"note: {n} training images and the default (ImageNet) recipe; on small data it may learn little "
            f"in a short run. Try --config cls_small (docs/training.md, small datasets).")


def train_classifier(cfg: ClassificationConfig, out_dir: str | os.PathLike,
                     resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train on ``cfg.data.root`` into ``out_dir``; returns the final metrics."""
    return train(ClassificationTask.for_training(cfg), cfg, out_dir, resume=resume)


def _task_for_weights(loaded: LoadedModel, strict: bool) -> ClassificationTask:
    # the evaluation preprocessing of the weights (as rebuilt by botnet.loading)
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
    amp: str = "bf16",
    strict: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (percent) and loss of ``weights`` on ``data/<split>``; written to
    ``out_dir/``:data:`~botnet.engine.evaluate.EVAL_FILE` when ``out_dir`` is given (never over an input, nor
    over a run's own ``metrics.json``)."""
    outputs = Outputs([data, weights], folder=out_dir) if out_dir is not None else None  # before any work
    dev = du.select_device(device)
    loaded = load_model(weights, img_size=img_size, device=dev)
    if loaded.task != "cls":
        raise UserError(f"{weights}: detection weights; evaluate them with `botnet eval det`")
    if not loaded.metadata.get("class_names"):
        raise UserError(f"{weights}: no class names in this file; use the model.safetensors or best.safetensors "
                        "of a classification run")
    task = _task_for_weights(loaded, strict)
    split_dir = split_folder(data, split) or Path(data)
    dataset = task.eval_dataset(split_dir)
    result = evaluate(task, loaded.model, dataset, batch_size=batch_size, workers=workers, device=dev, amp=amp,
                      channels_last=dev.type == "cuda")
    metrics = {**result.metrics, **task.summary(), "weights": str(weights), "data": str(split_dir)}
    if outputs is not None and du.rank() == 0:
        outputs.write_json(Path(out_dir) / EVAL_FILE, metrics)
    return metrics
