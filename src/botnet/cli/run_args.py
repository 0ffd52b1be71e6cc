"""Flags that every ``botnet train TASK`` (and ``botnet eval TASK``) takes: the engine's, not the task's."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from botnet.cli.names import add_batch_size, add_set
from botnet.errors import UserError
from botnet.engine.config_validate import count_int, positive_int

DEVICES = ["auto", "cpu", "cuda"]


def add_engine_args(p: argparse.ArgumentParser, recipe_example: str, lr_example: float) -> None:
    p.add_argument("--out", help="run folder (default: the --resume run's folder)")
    p.add_argument("--config", help=f"recipe YAML: a path or a shipped name such as {recipe_example} (default: "
                                    "a recipe chosen from the data, named on the run's first line)")
    p.add_argument("--epochs", type=int)
    add_batch_size(p, "images per process and step", type=int)
    p.add_argument("--workers", type=int, help="data-loading processes per training process")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--resume", metavar="PATH", help="continue a run: its folder or a checkpoint file")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    add_set(p, f"override any config field, e.g. --set optim.lr={lr_example} (repeatable)")


def add_eval_args(p: argparse.ArgumentParser, outputs: str, batch_size: int) -> None:
    """The flags of ``botnet eval TASK`` beyond its data: weights, output folder, the engine's."""
    p.add_argument("--weights", required=True, help="a model.safetensors / best.safetensors of a run")
    p.add_argument("--out", help=f"folder for {outputs}")
    add_batch_size(p, type=positive_int, default=batch_size)
    p.add_argument("--workers", type=count_int, default=2)
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="precision (default auto: the precision the run evaluated the weights in, as the "
                        "weights file records it, where the device runs it natively; else bf16 where native, "
                        "else fp32)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    """The flags every ``botnet predict TASK`` takes."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them (read through)")
    p.add_argument("--weights", required=True, help="a model.safetensors / best.safetensors of a run")
    p.add_argument("--device", choices=DEVICES, default="auto")


def report_skipped(skipped: dict[str, str], total: int) -> None:
    """After a prediction that went on past unreadable files: an error naming them (exit 2)."""
    if skipped:
        listed = "\n".join(f"  - {why}" for why in list(skipped.values())[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        raise UserError(f"{len(skipped)} of {total} images could not be read and were skipped (the others were "
                        f"predicted):\n{listed}{more}")


def engine_flags(args: argparse.Namespace) -> dict:
    """Config keys set by the engine flags (None: not given)."""
    return {"train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.workers": args.workers,
            "train.device": args.device, "data.strict": True if args.strict else None}


def as_overrides(flags: dict) -> list[str]:
    # values as JSON (valid YAML), so paths with ':' or '#' survive the override parser
    return [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


def run_folder(args: argparse.Namespace) -> Path:
    """``--out``, or the folder of the run that ``--resume`` continues."""
    if args.out is not None:
        return Path(args.out)
    if args.resume is None:
        raise UserError("--out is required (or --resume RUN_FOLDER to continue a run in place)")
    from botnet.engine.checkpoint import resolve_resume, run_dir_of

    return run_dir_of(resolve_resume(args.resume))


def is_main() -> bool:
    """Under torchrun only the first process reports."""
    return int(os.environ.get("RANK", 0)) == 0


def run_config(cls: type, args: argparse.Namespace, overrides: list[str], rule: Callable):
    """The config of ``botnet train TASK``: ``--config`` or the resumed run's, else the recipe
    ``rule`` chooses from the data, named on the run's first line."""
    from botnet.engine.config import resolve_run_config
    from botnet.engine.recipes import choose_run_config

    if args.config is not None or args.resume is not None:
        return resolve_run_config(cls, args.config, overrides, resume=args.resume)
    cfg, choice = choose_run_config(cls, overrides, rule)
    if is_main():
        print(choice.line(), file=sys.stderr)
    return cfg
