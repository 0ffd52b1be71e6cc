"""Run configuration: nested dataclasses, read from YAML recipes, overridable from the command line.

The engine's sections (``train``, ``optim``, ``schedule``, ``ema``, ``amp``, ``checkpoint``,
``log``, ``dist``, ``eval``) live in :class:`TrainConfig`. A task subclasses it and adds its own
sections (``model``, ``data``), so one YAML file describes a whole run::

    @dataclass
    class ClassificationConfig(TrainConfig):
        model: ClsModelConfig = field(default_factory=ClsModelConfig)
        data: ClsDataConfig = field(default_factory=ClsDataConfig)

A config is resolved in three layers: dataclass defaults, then a recipe file, then ``key=value``
overrides with dotted keys (``optim.lr=0.1``); values are parsed as YAML (``0.1``, ``true``,
``[8, 11]``, ``null``). Unknown keys are errors that name the key, so a typo never passes silently;
values are checked by type and by range (each section's ``limits``, see
:mod:`botnet.engine.config_validate`) when the config is built, before any work starts.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, TypeVar

import yaml

from botnet import reading
# from_dict / to_dict live with the checks and are used from here by the tasks
from botnet.engine.config_validate import (  # noqa: F401
    Checked, Limits, above, at_least, between, each, fraction, from_dict, one_of, to_dict)
from botnet.engine.renamed_keys import SYNC_BN, Renamed, upgrade, with_old_overrides
from botnet.engine.run_log import mlflow_installed
from botnet.errors import UserError, did_you_mean
from botnet.io import write_text
from botnet.reading import load_yaml

C = TypeVar("C")


@dataclass
class TrainLoopConfig(Checked):
    limits: ClassVar[Limits] = {
        "epochs": at_least(1), "batch_size": at_least(1), "accum_steps": at_least(1),
        "clip_grad_norm": at_least(0), "device": one_of("auto", "cpu", "cuda"), "workers": at_least(0),
        "stop_after_steps": at_least(1), "seed": between(0, 2**32 - 1)}
    epochs: int = 100
    #: images per process and per micro-batch; the global batch is batch_size * world * accum_steps
    batch_size: int = 64
    accum_steps: int = 1
    #: max global gradient norm (None: no clipping)
    clip_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool = True
    workers: int = 4
    #: stop after this many optimizer steps, keeping the schedule of the full run (pausing a
    #: run in a time-limited job; ``--resume`` continues it). None: run to the end.
    stop_after_steps: int | None = None


@dataclass
class OptimConfig(Checked):
    limits: ClassVar[Limits] = {
        "name": one_of("sgd", "adamw"), "lr": above(0), "base_batch": at_least(1),
        "momentum": fraction(hi_open=True), "betas": each(fraction(hi_open=True)), "weight_decay": at_least(0)}
    name: str = "sgd"  # sgd (Nesterov momentum) | adamw
    lr: float = 0.1
    #: if set, ``lr`` is the rate for this global batch and is scaled linearly to the actual
    #: global batch (batch_size x processes x accum_steps), so a recipe works at any scale
    base_batch: int | None = None
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    #: no weight decay on biases and normalisation parameters (all 1-D parameters)
    no_decay_1d: bool = True


@dataclass
class ScheduleConfig(Checked):
    limits: ClassVar[Limits] = {
        "name": one_of("cosine", "step", "constant"), "warmup_epochs": at_least(0), "warmup_steps": at_least(0),
        "warmup_start_factor": fraction(), "min_lr_ratio": fraction(), "milestones": each(at_least(0)),
        "milestone_fractions": each(fraction()), "max_warmup_fraction": fraction(), "gamma": above(0)}
    name: str = "cosine"  # cosine | step | constant
    #: linear warmup from warmup_start_factor * lr; warmup_steps wins over warmup_epochs if > 0
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    warmup_start_factor: float = 0.001
    #: cosine: final lr = min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    #: step: multiply by gamma at each milestone (in epochs, fractions allowed)
    milestones: list[float] = field(default_factory=list)
    #: step: milestones as fractions of the run (win over ``milestones``), so that they follow the
    #: number of epochs: the paper's detection recipes decay at 2/3 and 8/9 of any schedule
    milestone_fractions: list[float] = field(default_factory=list)
    gamma: float = 0.1
    #: the warmup never takes more than this fraction of the run (a 500-step warmup in a 192-step
    #: run would never reach the learning rate)
    max_warmup_fraction: float = 0.25


@dataclass
class EmaConfig(Checked):
    limits: ClassVar[Limits] = {"decay": fraction(), "every_steps": at_least(1)}
    enabled: bool = False
    decay: float = 0.9999
    #: update every N optimizer steps (the decay is applied per update)
    every_steps: int = 1


@dataclass
class AmpConfig(Checked):
    limits: ClassVar[Limits] = {"dtype": one_of("auto", "bf16", "fp16", "fp32")}
    #: bf16 (autocast on CPU and CUDA) | fp16 (CUDA only, with a gradient scaler) | fp32 (off) |
    #: auto (bf16 on CUDA, fp32 on AVX2-only CPUs; on CPUs with bf16 kernels, AVX-512 BF16 / AMX, the
    #: faster of the two for the run's model, measured once: botnet.engine.amp_choice)
    dtype: str = "auto"


@dataclass
class CheckpointConfig(Checked):
    limits: ClassVar[Limits] = {"every_steps": at_least(0), "keep_last": at_least(1)}
    #: save every N optimizer steps (0: at the end of each epoch); always at the end
    every_steps: int = 0
    keep_last: int = 2
    keep_best: bool = True


@dataclass
class LogConfig(Checked):
    limits: ClassVar[Limits] = {"every_steps": at_least(1), "progress": one_of("auto", "always", "never"),
                                "mlflow": mlflow_installed}
    #: a console line and metrics.csv row every N optimizer steps (more often in short runs, and every 30 s)
    every_steps: int = 20
    tensorboard: bool = True
    #: also log to an MLflow file store in RUN/mlruns (no server; needs the mlflow package)
    mlflow: bool = False
    plot: bool = True
    #: progress bar: auto (only on a terminal) | always | never
    progress: str = "auto"


@dataclass
class DistConfig(Checked):
    limits: ClassVar[Limits] = {"backend": one_of("auto", "gloo", "nccl")}
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl


@dataclass
class EvalConfig(Checked):
    limits: ClassVar[Limits] = {"every_epochs": at_least(0), "every_steps": at_least(0), "batch_size": at_least(1)}
    #: evaluate every N epochs (0: only at the end) and/or every N steps (0: off)
    every_epochs: int = 1
    every_steps: int = 0
    #: images per process (None: the training batch size)
    batch_size: int | None = None
    #: evaluate the EMA copy when EMA is enabled
    use_ema: bool = True


@dataclass
class TrainConfig:
    #: the task the config is for (a name of botnet.tasks), written into a run's config.yaml so that
    #: resuming a run with the other task's command is refused by name
    task: ClassVar[str] = ""
    #: the shipped recipe whose values these defaults are (botnet.engine.recipes)
    recipe: ClassVar[str] = ""
    #: keys an earlier version read, still loaded into their one home (botnet.engine.renamed_keys)
    renamed: ClassVar[tuple[Renamed, ...]] = (SYNC_BN,)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --- layers: defaults <- recipe file <- overrides ------------------------------------------


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> (["optim", "lr"], 0.1); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=0.1")
    value = load_yaml(raw, f"override {text!r}") if raw.strip() else None
    return key.strip().split("."), value


def _dotted_keys(data: dict, prefix: str = "") -> list[str]:
    return [k for name, v in data.items()
            for k in (_dotted_keys(v, f"{prefix}{name}.") if isinstance(v, dict) and v else [prefix + name])]


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise UserError(f"override {text!r}: {part!r} is not a config section{did_you_mean('.'.join(path), _dotted_keys(data))}")
            node = node[part]
        if path[-1] not in node:
            raise UserError(f"override {text!r}: unknown key {'.'.join(path)!r}{did_you_mean('.'.join(path), _dotted_keys(data))}")
        node[path[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: config file not found")
    data = reading.read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections at the top level")
    return data


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: a path, or the name of a recipe shipped in ``botnet/configs`` (with or
    without ``.yaml``)."""
    path = Path(name_or_path)
    if path.exists():  # a FIFO or a folder too: read_yaml says what it is
        return path
    shipped = Path(__file__).resolve().parent.parent / "configs"
    for candidate in (shipped / path.name, shipped / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{name_or_path}: no such config file, and no shipped recipe by that name in {shipped}")


def load_config(
    cls: type[C],
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: dict | None = None,
    warn: bool = True,
) -> C:
    """Resolve a config: ``cls`` defaults, then ``base`` (a dict), then the recipe file, then the
    overrides. Every layer may give only the keys it changes; old keys move (``cls.renamed``)."""
    renamed = getattr(cls, "renamed", ())
    data = to_dict(cls())
    if base:
        data = _merge(data, base)
    if path is not None:
        file_path = recipe_path(path)
        raw = read_yaml(file_path)
        file_task = raw.pop("task", None)
        if file_task and cls.task and file_task != cls.task:
            raise UserError(f"{file_path}: this is the config of a '{file_task}' run, which this command cannot "
                            f"continue or use ('{cls.task}'); resume it with `botnet train {file_task}`")
        try:
            data = upgrade(renamed, _merge(data, raw), warn)
            from_dict(cls, data)
        except UserError as e:
            raise UserError(f"{file_path}: {e}") from None
    data, overrides = with_old_overrides(renamed, data, overrides, parse_override)
    return from_dict(cls, upgrade(renamed, apply_overrides(data, overrides), warn))


def resolve_run_config(
    cls: type[C],
    recipe: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    resume: str | os.PathLike | None = None,
) -> C:
    """The config of a run: defaults, then the recipe (or, when resuming without one, the config
    the run was started with), then ``key=value`` overrides."""
    if recipe is None and resume is not None:
        from botnet.engine.checkpoint import resolve_resume, run_dir_of

        saved = run_dir_of(resolve_resume(resume)) / "config.yaml"
        if saved.is_file():
            recipe = saved
    return load_config(cls, recipe, overrides)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    task = getattr(cfg, "task", "")
    return write_text(path, yaml.safe_dump({**({"task": task} if task else {}), **to_dict(cfg)}, sort_keys=False))
