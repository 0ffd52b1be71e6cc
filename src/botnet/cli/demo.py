"""``botnet demo``: the demo workflow of :mod:`botnet.detection.demo` with its flags."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from botnet.cli.names import add_set


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
    add_set(p, "override a field of the demo recipe (repeatable)")
    p.set_defaults(func=run)


def again(args: argparse.Namespace) -> str:
    """This demo's command line (the flags that shape the run; a rerun reuses the data and resumes)."""
    flags = ["--out", args.out]
    for name in ("train", "val", "epochs", "workers"):
        if getattr(args, name) is not None:
            flags += [f"--{name}", str(getattr(args, name))]
    for setting in args.overrides:
        flags += ["--set", setting]
    return shlex.join(["botnet", "demo", *flags])


def run(args: argparse.Namespace) -> int:
    from botnet.detection.demo import run_demo

    out = Path(args.out)
    try:
        result = run_demo(out, train=args.train, val=args.val, epochs=args.epochs, workers=args.workers,
                          pictures=args.pictures, overrides=args.overrides)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the same command resumes the demo: {again(args)}") from None
    print(f"done in {result['minutes']:.1f} min: box AP {result.get('box_ap', 0.0):.1f}, "
          f"mask AP {result.get('mask_ap', 0.0):.1f}\n"
          f"  pictures:  {out / 'predictions'}\n  curves:    {out / 'run' / 'curves.png'}\n"
          f"  metrics:   {out / 'metrics.json'}")
    return 0
