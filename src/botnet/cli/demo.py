"""``botnet demo``: synthetic data -> train a BoTNet Mask R-CNN on the CPU -> COCO AP -> pictures.

Every step reuses what a previous call left in ``--out``: the dataset is generated once, a run
that was interrupted is resumed, and a finished run is only evaluated and drawn again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEMO_RECIPE = "demo_shapes"


def register(cli) -> None:
    p = cli.command("demo", "train and evaluate a BoTNet Mask R-CNN on generated shapes (CPU, minutes)",
                    epilog="Writes OUT/data (the dataset), OUT/run (checkpoints, metrics.csv, curves.png), "
                           "OUT/predictions (pictures) and OUT/metrics.json (box and mask AP).")
    p.add_argument("--out", default="botnet-demo", help="output folder (default: ./botnet-demo)")
    p.add_argument("--train", type=int, default=1000, help="training images to generate (default 1000)")
    p.add_argument("--val", type=int, default=200, help="held-out images to generate (default 200)")
    p.add_argument("--epochs", type=int, help="shorten or lengthen the recipe (default: the recipe's)")
    p.add_argument("--workers", type=int, help="data-loading processes (default: the recipe's)")
    p.add_argument("--pictures", type=int, default=8, help="held-out images to draw (default 8)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo recipe (repeatable)")
    p.set_defaults(func=run)


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "metrics.json"
    if not (summary.is_file() and (run_dir / "model.safetensors").is_file()):
        return False
    try:
        return bool(json.loads(summary.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    from botnet.cli.det import format_ap
    from botnet.data.shapes import make_shapes_dataset, shapes_dataset_paths
    from botnet.detection.api import predict_images, resolve_train_config, train_detector
    from botnet.detection.config import paper_milestones
    from botnet.engine.checkpoint import list_step_checkpoints
    from botnet.io import write_json

    started = time.perf_counter()
    out = Path(args.out)
    data = shapes_dataset_paths(out / "data")
    if not (data["train_ann"].is_file() and data["val_ann"].is_file()):
        print(f"[1/4] generating {args.train} + {args.val} images of shapes in {out / 'data'}")
        make_shapes_dataset(out / "data", train=args.train, val=args.val, size=128)
    else:
        print(f"[1/4] using the dataset in {out / 'data'}")

    run_dir = out / "run"
    flags = {"data.train_images": data["train_images"], "data.train_ann": data["train_ann"],
             "data.val_images": data["val_images"], "data.val_ann": data["val_ann"], "train.workers": args.workers,
             "train.epochs": args.epochs, "schedule.milestones": paper_milestones(args.epochs) if args.epochs else None}
    overrides = [f"{k}={json.dumps(str(v) if isinstance(v, Path) else v)}" for k, v in flags.items()
                 if v is not None] + list(args.overrides)
    if _finished(run_dir):
        print(f"[2/4] {run_dir} holds a finished run; delete it to train again")
        summary = json.loads((run_dir / "metrics.json").read_text())
    else:
        resume = run_dir if list_step_checkpoints(run_dir) else None
        cfg = resolve_train_config(DEMO_RECIPE, overrides)
        print(f"[2/4] training {cfg.model.name} Mask R-CNN for {cfg.train.epochs} epochs on the CPU"
              + (" (resuming)" if resume else "") + f" -> {run_dir}")
        summary = train_detector(cfg, run_dir, resume=resume)

    # the engine evaluated the final weights on the held-out set at the end of training
    metrics = {k[len("val_"):]: v for k, v in summary.items() if k.startswith("val_")}
    print(f"[3/4] held-out set ({metrics.get('num_images', 0)} images): {format_ap(metrics)}")
    weights = run_dir / "model.safetensors"

    print(f"[4/4] drawing predictions for {args.pictures} held-out images")
    images = sorted(data["val_images"].glob("*.png"))[: args.pictures]
    predict_images(images, weights, out / "predictions", score_thresh=0.5)
    minutes = (time.perf_counter() - started) / 60
    result = {k: metrics[k] for k in metrics if k.startswith(("box_", "mask_"))}
    result.update(minutes=round(minutes, 2), num_images=metrics.get("num_images", 0),
                  train_seconds=summary.get("train_seconds"))
    write_json(out / "metrics.json", result)
    print(f"done in {minutes:.1f} min: box AP {metrics.get('box_ap', 0.0):.1f}, "
          f"mask AP {metrics.get('mask_ap', 0.0):.1f}\n"
          f"  pictures:  {out / 'predictions'}\n  curves:    {run_dir / 'curves.png'}\n"
          f"  metrics:   {out / 'metrics.json'}")
    return 0
