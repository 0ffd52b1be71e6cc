"""``amp.dtype: auto`` for a training run: the rule, and where it cannot tell, a measurement.

The rule (:func:`botnet.engine.evaluate.resolve_amp`): bf16 on CUDA and on CPUs whose oneDNN has
bf16 kernels, fp32 on AVX2-only CPUs, where bf16 is converted in software and a step runs several
times slower (``benchmarks/demo_step.py``). Among CPUs with bf16 kernels the faster precision
depends on the CPU and on the model: AVX-512 BF16 runs bf16 dot products on vector units, AMX on
tiles whose weight re-layout can outweigh their speed on small layers. So on such a CPU a training
run times a few training steps of its own model on its first batch in both precisions before it
starts (on a copy of the model; the random state is restored, so the run itself is the same as
without the measurement) and keeps bf16 unless fp32 is clearly faster. The choice is cached per
machine, torch version, thread count, task, model and data settings and batch size
(``$XDG_CACHE_HOME/botnet/amp_auto.json``, ``~/.cache`` by default), so the same command on the
same machine always trains in the same precision. Set ``amp.dtype`` to bf16 or fp32 to skip the
measurement; a resumed run keeps the precision its checkpoint recorded.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from botnet.engine import checkpoint as ckpt
from botnet.engine import distributed as du
from botnet.engine.config import TrainConfig, to_dict
from botnet.engine.evaluate import autocast, resolve_amp
from botnet.engine.task import Task
from botnet.errors import UserError
from botnet.io import write_json
from botnet.limits import between, is_number

#: fp32 is chosen only when its step is faster than bf16's by more than this factor (bf16 is the
#: rule's choice on these CPUs, and halves the activations' memory)
FP32_MARGIN = 1.25
#: training steps per precision: the first warms up (oneDNN builds its kernels), the fastest of the
#: rest counts; the precisions alternate
ROUNDS = 3
#: seconds after which no further round starts once every precision has a timed step
BUDGET_S = 30.0
#: a first step this long (seconds) in every precision counts as it is: kernel set-up is lost in it,
#: and a large model on a small CPU could not afford a second round (docs/training.md has the figures)
LONG_STEP_S = 3.0


def step_times(task: Task, model: nn.Module, dataset, batch_size: int, device: torch.device,
               amps=("fp32", "bf16"), rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> dict[str, float]:
    """Seconds of one training step (forward, backward) of a copy of ``model`` on the first
    ``batch_size`` samples of ``dataset`` in each precision of ``amps``: the fastest of the timed
    rounds (``rounds``; fewer once ``budget_s`` has passed, never under 2; one when every first
    step takes ``LONG_STEP_S`` or more). The random state and ``model`` are left as they were."""
    state = ckpt.rng_state()
    collate = task.collate_fn(train=True) or default_collate
    batch = collate([dataset[i] for i in range(min(batch_size, len(dataset)))])
    trial = copy.deepcopy(model).train()
    times: dict[str, list[float]] = {amp: [] for amp in amps}
    begun = time.perf_counter()
    try:
        for round_ in range(rounds):
            if round_ == 1 and min(t[0] for t in times.values()) >= LONG_STEP_S:
                break
            if round_ >= 2 and time.perf_counter() - begun > budget_s:
                break
            for amp in amps:
                started = time.perf_counter()
                with autocast(device, amp):
                    loss = task.training_step(trial, batch, device)["loss"]
                loss.float().backward()
                trial.zero_grad(set_to_none=True)
                times[amp].append(time.perf_counter() - started)
    finally:
        del trial
        ckpt.set_rng_state(state)
    return {amp: min(t[1:] or t) for amp, t in times.items()}


def faster(times: dict[str, float]) -> str:
    """The measured choice from step seconds {"fp32": .., "bf16": ..}: bf16 unless fp32 is more
    than ``FP32_MARGIN`` times faster."""
    return "fp32" if times["fp32"] * FP32_MARGIN < times["bf16"] else "bf16"


def cache_path() -> Path:
    """Where measured choices are kept: ``$XDG_CACHE_HOME/botnet/amp_auto.json`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "botnet" / "amp_auto.json"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(task: Task, cfg: TrainConfig) -> str:
    """What the measured step depends on: the CPU, torch, its threads and kernel level, the task,
    its own config sections (model, data), the batch size and memory format."""
    engine = {f.name for f in dataclasses.fields(TrainConfig)}
    what = {"cpu": _cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(), "task": task.name,
            "batch": cfg.train.batch_size, "channels_last": cfg.train.channels_last,
            "settings": {k: v for k, v in to_dict(cfg).items() if k not in engine}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again


def _usable_entry(entry: Any) -> bool:
    """A cache entry as this module writes it: a choice and two step times; anything else (an
    older format, a hand edit) is measured again and rewritten."""
    step = between(0, lo_open=True)
    return (isinstance(entry, dict) and entry.get("amp") in ("bf16", "fp32")
            and all(is_number(entry.get(k)) and not step(entry[k]) for k in ("bf16", "fp32")))


def choose_training_amp(task: Task, model: nn.Module, dataset, cfg: TrainConfig,
                        device: torch.device) -> tuple[str, str]:
    """The precision of a run's training steps and a note for its log: ``cfg.amp.dtype`` as set,
    the rule's choice, or (a CPU with bf16 kernels) the measured one. Every process takes rank 0's
    choice."""
    if cfg.amp.dtype != "auto":
        return cfg.amp.dtype, ""
    rule = resolve_amp(device, "auto")
    if device.type != "cpu" or rule != "bf16":
        return rule, " (amp auto)"
    path, key = cache_path(), cache_key(task, cfg)
    cache = _read_cache(path)
    known = cache.get(key)
    if _usable_entry(known):
        choice, times, how = known["amp"], known, f"measured earlier, {path}"
    else:
        if du.rank() == 0:  # a large model's steps on a small CPU take a while: say what is happening
            print(f"amp auto: timing training steps in bf16 and in fp32 before training, to train in the faster "
                  f"(up to {ROUNDS} of each, one where a step takes {LONG_STEP_S:.0f} s or more); once per machine and "
                  f"settings, kept in {path}; amp.dtype bf16 or fp32 skips this", file=sys.stderr, flush=True)
        measured = step_times(task, model, dataset, cfg.train.batch_size, device)
        choice = faster(measured)
        times, how = {"amp": choice, **{k: round(v, 4) for k, v in measured.items()}}, "measured"
        if du.rank() == 0:
            try:
                write_json(path, {**cache, key: times})
            except (OSError, UserError):
                pass  # a read-only cache folder: the next run measures again
    note = (f" (amp auto, {how}: a training step takes {1e3 * times['bf16']:.0f} ms in bf16, "
            f"{1e3 * times['fp32']:.0f} ms in fp32 here)")
    return du.all_gather_objects((choice, note))[0]
