"""Training checkpoints: everything needed to continue a run exactly.

A checkpoint holds the model, the EMA copy, the optimizer, the scheduler, the gradient scaler, the
step and the RNG states (torch, CUDA, Python, NumPy), all as tensors and plain containers so that
it loads with ``torch.load(weights_only=True)``. Files are written under a temporary name and
renamed, so a kill during the write leaves the previous checkpoint intact.

Layout inside a run folder::

    checkpoints/step_00001200.pt   the last ``keep_last`` of these
    checkpoints/best.pt            the best so far by the task's main metric

What else a run folder holds, and who may write there, is :mod:`botnet.engine.run_dir`.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from botnet.errors import UserError
from botnet.io import atomic_path
from botnet.tasks import task_title

CHECKPOINT_DIR = "checkpoints"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
#: what the trainer reads from a checkpoint to continue a run
TRAINING_KEYS = ("step", "steps_per_epoch", "model", "optimizer", "scheduler", "scaler", "rng")


def step_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def best_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / "best.pt"


def list_step_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Step checkpoints of a run, oldest first (stray ``.tmp`` files from a kill are ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(path: str | os.PathLike) -> Path:
    """``--resume`` accepts a checkpoint file, a run folder or its ``checkpoints/`` folder; a
    folder means its latest step checkpoint."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise UserError(f"--resume {path}: no such file or folder")
    run_dir = path.parent if path.name == CHECKPOINT_DIR else path
    found = list_step_checkpoints(run_dir)
    if not found:
        raise UserError(f"--resume {path}: no checkpoint (checkpoints/step_*.pt) in this folder")
    return found[-1]


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run folder a checkpoint file belongs to."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    # through a Python file, so that a full disk surfaces as the OSError behind torch's error
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    task: str | None = None) -> dict[str, Any]:
    """A training checkpoint (of a run of ``task``, when given); anything else (a bare tensor, a
    list, a state dict, a checkpoint without its step, another task's) is a :class:`UserError`
    saying what the file holds instead."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a checkpoint file") from None
    except Exception as e:  # truncated file, not a checkpoint, unsafe content
        raise UserError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {e})") from None
    check_training_state(state, path)
    meta = state.get("metadata")
    saved = meta.get("task") if isinstance(meta, dict) else None
    if task is not None and saved and saved != task:
        raise UserError(f"{path}: this checkpoint is a {task_title(saved)} run, which `botnet train "
                        f"{task}` cannot continue; resume it with `botnet train {saved}`")
    return state


def check_training_state(state: Any, path: str | os.PathLike) -> None:
    """Raise a :class:`UserError` unless ``state`` has what resuming a run reads."""
    hint = "resume from a checkpoints/step_*.pt file written by `botnet train` (or its run folder)"
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a training checkpoint: the file holds a {type(state).__name__}; {hint}")
    missing = [k for k in TRAINING_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: not a training checkpoint: no {', '.join(map(repr, missing))} in it; {hint}")
    step = state["step"]
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: corrupt training checkpoint: 'step' is {state['step']!r}, not a step count")
    if not isinstance(state["model"], dict):
        raise UserError(f"{path}: corrupt training checkpoint: 'model' is a {type(state['model']).__name__}, "
                        "not a state dict")


def prune(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints."""
    found = list_step_checkpoints(run_dir)
    for old in found[: max(0, len(found) - max(1, keep_last))]:
        old.unlink(missing_ok=True)
