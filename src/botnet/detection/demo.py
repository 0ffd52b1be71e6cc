"""The demo workflow: generated shapes -> a BoTNet Mask R-CNN trained on the CPU -> COCO AP on
held-out images -> pictures of the predictions (``botnet demo`` is a thin command over it).

Every step reuses what a previous call left in ``out``: the dataset is generated once, a run that
was interrupted is resumed, and a finished run is only evaluated and drawn again.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

DEMO_RECIPE = "demo_shapes"


def format_ap(metrics: dict, prefix: str = "") -> str:
    """``box AP 67.1 (AP50 .., AP75 ..), mask AP ..`` of the metrics that are there."""
    parts = []
    for kind in ("box", "mask"):
        if f"{prefix}{kind}_ap" in metrics:
            parts.append(f"{kind} AP {metrics[f'{prefix}{kind}_ap']:.1f} (AP50 {metrics[f'{prefix}{kind}_ap50']:.1f}, "
                         f"AP75 {metrics[f'{prefix}{kind}_ap75']:.1f})")
    return ", ".join(parts) or "no evaluation"


def run_demo(out: str | os.PathLike = "botnet-demo", *, train: int = 1000, val: int = 200, epochs: int | None = None,
             workers: int | None = None, pictures: int = 8, overrides: Sequence[str] = (),
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``out`` (data/, run/, predictions/, metrics.json) and return its metrics:
    held-out box and mask AP, minutes, images. ``say`` receives one line per step."""
    from botnet.data.shapes import make_shapes_dataset, shapes_dataset_paths
    from botnet.detection.api import predict_images, train_detector
    from botnet.detection.config import DetectionConfig
    from botnet.engine.config import resolve_run_config
    from botnet.engine.checkpoint import list_step_checkpoints
    from botnet.engine.run_dir import finished_summary
    from botnet.errors import UserError
    from botnet.io import Outputs

    if min(train, val) < 1:
        raise UserError(f"--train {train} --val {val}: the demo trains on one set and evaluates on the other; "
                        "each needs at least 1 image")
    started = time.perf_counter()
    out = Path(out)
    outputs = Outputs(folder=out)
    data = shapes_dataset_paths(out / "data")
    run_dir = out / "run"
    flags = {"data.train_images": data["train_images"], "data.train_ann": data["train_ann"],
             "data.val_images": data["val_images"], "data.val_ann": data["val_ann"], "train.workers": workers,
             "train.epochs": epochs}
    settings = [f"{k}={json.dumps(str(v) if isinstance(v, Path) else v)}" for k, v in flags.items()
                if v is not None] + list(overrides)
    cfg = resolve_run_config(DetectionConfig, DEMO_RECIPE, settings)  # a bad setting stops before any work
    if not (data["train_ann"].is_file() and data["val_ann"].is_file()):
        say(f"[1/4] generating {train} + {val} images of shapes in {out / 'data'}")
        make_shapes_dataset(out / "data", train=train, val=val, img_size=128)
    else:
        say(f"[1/4] using the dataset in {out / 'data'}")

    summary = finished_summary(run_dir)
    if summary is not None:
        say(f"[2/4] {run_dir} holds a finished run; delete it to train again")
    else:
        resume = run_dir if list_step_checkpoints(run_dir) else None
        say(f"[2/4] training {cfg.model.name} Mask R-CNN for {cfg.train.epochs} epochs on the CPU"
            + (" (resuming)" if resume else "") + f" -> {run_dir}")
        summary = train_detector(cfg, run_dir, resume=resume)

    # the engine evaluated the final weights on the held-out set at the end of training
    metrics = {k[len("val_"):]: v for k, v in summary.items() if k.startswith("val_")}
    say(f"[3/4] held-out set ({metrics.get('num_images', 0)} images): {format_ap(metrics)}")

    say(f"[4/4] drawing predictions for {pictures} held-out images")
    images = sorted(data["val_images"].glob("*.png"))[:pictures]
    predict_images(images, run_dir / "model.safetensors", out / "predictions", score_thresh=0.5, device="cpu")
    minutes = (time.perf_counter() - started) / 60
    result = {k: metrics[k] for k in metrics if k.startswith(("box_", "mask_"))}
    result.update(minutes=round(minutes, 2), num_images=metrics.get("num_images", 0),
                  train_seconds=summary.get("train_seconds"))
    outputs.write_json(out / "metrics.json", result)
    return result
