"""``botnet demo`` from scratch, with its output kept: held-out box and mask AP after every
evaluation (epochs 4, 8 and 12), and the wall time of the whole demo (data generation, training,
evaluations, pictures) and of its training alone.

    python benchmarks/demo.py                # results/demo.md, .json: the recipe as shipped (timed:
                                             # take the figures from an idle machine)
    python benchmarks/demo.py --ablation     # results/demo_ablation.md, .json: box / mask AP of the
                                             # recipe's choices, one demo each (AP only, no timing)

Each demo runs in a fresh folder (a temporary one unless ``--workdir``), so the dataset is
generated and the detector trained every time. docs/detection.md and the ``demo_shapes`` recipe
quote these files.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import common
from botnet.detection.demo import run_demo
from botnet.engine import read_metrics_csv

AP_KEYS = ["ap", "ap50", "ap75", "aps", "apm", "apl"]
#: what docs/detection.md reports of the recipe's choices: each row adds one change to the one above
ABLATION = [
    ("two mask convs, one anchor scale per level, 14 x 14 mask RoIs",
     ["model.mask_head_channels=[64,64]", "model.anchor_scales=[1.0]", "model.mask_roi_size=14"]),
    ("four mask convs, one anchor scale per level, 14 x 14 mask RoIs",
     ["model.anchor_scales=[1.0]", "model.mask_roi_size=14"]),
    ("four mask convs, three anchor scales per level, 14 x 14 mask RoIs", ["model.mask_roi_size=14"]),
    ("four mask convs, three anchor scales per level, 7 x 7 mask RoIs (the recipe)", []),
]


def one_demo(workdir: Path, name: str, overrides: list[str], args) -> dict:
    out = workdir / name
    if out.exists():
        shutil.rmtree(out)
    sizes = {k: getattr(args, k) for k in ("train", "val", "epochs") if getattr(args, k) is not None}
    started = time.perf_counter()
    result = run_demo(out, overrides=overrides, **sizes)
    wall = time.perf_counter() - started
    evals = [{k: v for k, v in row.items() if k == "step" or k == "epoch" or k.startswith("val_")}
             for row in read_metrics_csv(out / "run" / "metrics.csv") if row["kind"] == "eval"]
    if not args.keep:
        shutil.rmtree(out)
    return {"overrides": overrides, "result": result, "evals": evals, "wall_seconds": wall}


def ap_row(metrics: dict, prefix: str = "") -> list[str]:
    """AP on the 0-100 scale to one decimal, as docs/detection.md quotes it (-1: no object of that size)."""
    values = [metrics.get(f"{prefix}{kind}_{k}") for kind in ("box", "mask") for k in AP_KEYS]
    return ["-" if v is None else f"{v:.1f}" for v in values]


AP_HEADER = [f"{kind} AP{k[2:]}" for kind in ("box", "mask") for k in AP_KEYS]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ablation", action="store_true", help="the recipe's choices, AP only (results/demo_ablation)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--workdir", help="where the demos run (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep each demo's folder (data, run, pictures)")
    p.add_argument("--train", type=int, help="training images (default: the demo's)")
    p.add_argument("--val", type=int, help="held-out images (default: the demo's)")
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    p.add_argument("--out", help="report name under results/ (default demo, or demo_ablation)")
    args = p.parse_args()
    common.setup_threads(args.threads)
    info = common.machine(torch.device("cpu"))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="botnet-demo-bench-"))
    try:
        if args.ablation:
            runs = [one_demo(workdir, f"ablation{i}", overrides, args) for i, (_, overrides) in enumerate(ABLATION)]
            rows = [[label, " ".join(f"`{o}`" for o in run["overrides"]) or "-", *ap_row(run["result"])]
                    for (label, _), run in zip(ABLATION, runs)]
            text = (f"**held-out box / mask AP** ({runs[0]['result']['num_images']} images, COCO AP 0-100; S / M / L by object area) of `botnet "
                    "demo` with each change, the same data and seed\n\n"
                    + common.markdown_table(["demo", "--set", *AP_HEADER], rows))
            data = {"runs": [{"label": label, **{k: v for k, v in run.items() if k != "wall_seconds"}}
                             for (label, _), run in zip(ABLATION, runs)]}
            # AP only: the times of these runs are not reported
            for run in data["runs"]:
                run["result"] = {k: v for k, v in run["result"].items() if k not in ("minutes", "train_seconds")}
            common.write_report(args.out or "demo_ablation", "The demo recipe's choices (cpu)", info, [text], data)
        else:
            run = one_demo(workdir, "demo", [], args)
            res = run["result"]
            final = common.markdown_table(AP_HEADER, [ap_row(res)])
            curve = common.markdown_table(["step", "epoch", *AP_HEADER],
                                          [[e["step"], f"{e['epoch']:g}", *ap_row(e, "val_")] for e in run["evals"]])
            minutes, seconds = divmod(round(run["wall_seconds"]), 60)
            text = (f"**held-out box / mask AP** ({res['num_images']} images, COCO AP 0-100) of the finished run\n\n"
                    f"{final}\n\n**every evaluation during training**\n\n{curve}\n\n"
                    f"**time**: {minutes} min {seconds} s for the whole demo (data generation, training, evaluations, "
                    f"pictures); training alone {res['train_seconds']:.0f} s")
            common.write_report(args.out or "demo", "botnet demo (cpu)", info, [text], run)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
