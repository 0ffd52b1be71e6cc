"""Library entry points for classification: train, evaluate, predict. The CLI calls these."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from botnet.classification.config import ClassificationConfig, ClsDataConfig, ClsModelConfig
from botnet.classification.task import ClassificationTask
from botnet.engine import distributed as du
from botnet.engine import evaluate, train
from botnet.engine.config import resolve_run_config
from botnet.errors import UserError
from botnet.io import write_json


def resolve_train_config(recipe: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                         resume: str | os.PathLike | None = None) -> ClassificationConfig:
    """Defaults <- recipe (or, when resuming without one, the run's own config) <- overrides."""
    return resolve_run_config(ClassificationConfig, recipe, overrides, resume)


def train_classifier(cfg: ClassificationConfig, out_dir: str | os.PathLike,
                     resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train on ``cfg.data.root`` into ``out_dir``; returns the final metrics."""
    return train(ClassificationTask(cfg), cfg, out_dir, resume=resume)


def load_classifier(weights: str | os.PathLike, img_size: int | None = None,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A model rebuilt from a weights file written by training, and the file's metadata."""
    from botnet.api import build_classifier_from_file
    from botnet.weights import read_metadata

    meta = read_metadata(weights)
    if not meta.get("class_names") or "config" not in meta:
        raise UserError(f"{weights}: no class names / model description in this file; "
                        "use the model.safetensors or best.safetensors of a classification run")
    # the position tables are resized when img_size differs from the size trained at
    model = build_classifier_from_file(weights, meta, img_size=img_size)
    return model.to(device).eval(), meta


def _task_for_weights(meta: dict[str, Any], img_size: int | None, strict: bool) -> ClassificationTask:
    size = img_size or int(meta.get("img_size", [224])[0])
    data = ClsDataConfig(img_size=size, crop_pct=float(meta.get("crop_pct", 0.875)), strict=strict,
                         mean=tuple(meta.get("mean", ClsDataConfig.mean)), std=tuple(meta.get("std", ClsDataConfig.std)))
    cfg = ClassificationConfig(model=ClsModelConfig(name=meta.get("model", "")), data=data)
    return ClassificationTask(cfg, class_names=meta["class_names"])


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
    ``out_dir/metrics.json`` when ``out_dir`` is given."""
    dev = du.select_device(device)
    model, meta = load_classifier(weights, img_size, dev)
    task = _task_for_weights(meta, img_size, strict)
    split_dir = Path(data) / split if (Path(data) / split).is_dir() else Path(data)
    dataset = task.eval_dataset(split_dir)
    metrics = evaluate(task, model, dataset, batch_size=batch_size, workers=workers, device=dev, amp=amp,
                       channels_last=dev.type == "cuda")
    metrics.update(task.summary(), weights=str(weights), data=str(split_dir))
    if out_dir is not None and du.rank() == 0:
        write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


@torch.no_grad()
def predict(images: Sequence[str | os.PathLike], weights: str | os.PathLike, *, topk: int = 5,
            img_size: int | None = None, device: str = "auto") -> list[list[tuple[str, float]]]:
    """The ``topk`` (class name, probability) pairs of each image, best first."""
    from botnet.data.imagefolder import load_rgb

    dev = du.select_device(device)
    model, meta = load_classifier(weights, img_size, dev)
    task = _task_for_weights(meta, img_size, strict=True)
    transform = task.eval_transform()
    names = meta["class_names"]
    results = []
    for path in images:
        try:
            image = load_rgb(str(path))
        except FileNotFoundError:
            raise UserError(f"{path}: no such image") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
        probs = model(transform(image)[None].to(dev)).float().softmax(dim=1)[0]
        p, idx = probs.topk(min(topk, len(names)))
        results.append([(names[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())])
    return results
