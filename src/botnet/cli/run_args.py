"""Flags that every ``botnet train TASK`` (and ``botnet eval TASK``) takes: the engine's, not the task's."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from botnet.cli.names import add_batch_size, add_set
from botnet.errors import UserError
from botnet.engine.config_validate import count_int, positive_int

DEVICES = ["auto", "cpu", "cuda"]
AMP_CHOICES = ["auto", "bf16", "fp16", "fp32"]


def add_engine_args(p: argparse.ArgumentParser, recipe_example: str, lr_example: float) -> None:
    p.add_argument("--out", help="run folder (default: the --resume run's folder)")
    p.add_argument("--config", help=f"recipe YAML: a path or a shipped name such as {recipe_example} (default: "
                                    "a recipe chosen from the data, named on the run's first line)")
    p.add_argument("--epochs", type=int)
    add_batch_size(p, "images per process and step", type=int)
    p.add_argument("--workers", type=int, help="data-loading processes per training process")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--amp", choices=AMP_CHOICES, help="precision (default auto: the faster of bf16 and fp32 "
                                                       "where the device runs bf16, else fp32)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow's file store in RUN/mlruns "
                                                          "(log.mlflow; no server, needs mlflow)")
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
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
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
            "train.device": args.device, "amp.dtype": args.amp, "data.strict": True if args.strict else None,
            "log.mlflow": True if args.mlflow else None}


def as_overrides(flags: dict) -> list[str]:
    # values as JSON (valid YAML), so paths with ':' or '#' survive the override parser
    return [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


def source_overrides(key: str, value: str | None) -> list[str]:
    """The override of a weights flag: ``none`` (any case) sets no weights, as ``--set KEY=null`` does."""
    if value is None:
        return []
    return [f"{key}=null"] if value.strip().lower() == "none" else as_overrides({key: value})


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


def resume_command(task: str, out: Path) -> str:
    """The command that continues the run in ``out`` (its config, data and flags are in its folder)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    launcher = f"torchrun --nproc_per_node {local} -m botnet" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "botnet"
    return f"{launcher} train {task} --resume {shlex.quote(str(out))}"


@contextlib.contextmanager
def tells_how_to_resume(task: str, out: Path):
    """Around a training run: Ctrl-C ends with the command that resumes it (``botnet.cli.main``
    prints the interruption's text)."""
    try:
        yield
    except KeyboardInterrupt:
        from botnet.engine.checkpoint import list_step_checkpoints

        saved = list_step_checkpoints(out)
        if saved:
            hint = f"its last checkpoint is {saved[-1].name}; resume with: {resume_command(task, out)}"
        else:
            hint = "no checkpoint was written yet; the same command starts the run again"
        raise KeyboardInterrupt(hint) from None


def report_pause(task: str, summary: dict, out: Path) -> bool:
    """After a run paused by ``train.stop_after_steps``: where it stopped and how it goes on."""
    if summary.get("finished", True):
        return False
    if is_main():
        print(f"paused at step {summary['step']} (train.stop_after_steps); resume with: {resume_command(task, out)}")
    return True


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
