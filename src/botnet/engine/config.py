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
``[8, 11]``, ``null``). Unknown keys are errors that name the key, so a typo never passes silently.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from botnet.errors import UserError
from botnet.io import write_text

C = TypeVar("C")


@dataclass
class TrainLoopConfig:
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
class OptimConfig:
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
class ScheduleConfig:
    name: str = "cosine"  # cosine | step | constant
    #: linear warmup from warmup_start_factor * lr; warmup_steps wins over warmup_epochs if > 0
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    warmup_start_factor: float = 0.001
    #: cosine: final lr = min_lr_ratio * lr
    min_lr_ratio: float = 0.0
    #: step: multiply by gamma at each milestone (in epochs, fractions allowed)
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9999
    #: update every N optimizer steps (the decay is applied per update)
    every_steps: int = 1


@dataclass
class AmpConfig:
    #: bf16 (autocast on CPU and CUDA) | fp16 (CUDA only, with a gradient scaler) | fp32 (off)
    dtype: str = "bf16"


@dataclass
class CheckpointConfig:
    #: save every N optimizer steps (0: at the end of each epoch); always at the end
    every_steps: int = 0
    keep_last: int = 2
    keep_best: bool = True


@dataclass
class LogConfig:
    #: one metrics.csv row (and TensorBoard point) every N optimizer steps
    every_steps: int = 20
    tensorboard: bool = True
    plot: bool = True
    #: progress bar: auto (only on a terminal) | always | never
    progress: str = "auto"


@dataclass
class DistConfig:
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
    #: convert BatchNorm to SyncBatchNorm (CUDA only; ignored with a warning on CPU)
    sync_bn: bool = False


@dataclass
class EvalConfig:
    #: evaluate every N epochs (0: only at the end) and/or every N steps (0: off)
    every_epochs: int = 1
    every_steps: int = 0
    #: images per process (None: the training batch size)
    batch_size: int | None = None
    #: evaluate the EMA copy when EMA is enabled
    use_ema: bool = True


@dataclass
class TrainConfig:
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --- dict <-> dataclass ---------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) that YAML and ``torch.load(weights_only=True)`` accept."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; every unknown key or ill-typed value is an error."""
    if not isinstance(data, dict):
        raise UserError(f"config{where and ' ' + where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"config: unknown key {_join(where, unknown[0])!r} (known in this section: {', '.join(sorted(names))})"
        )
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except UserError:
                pass
        raise UserError(f"config: {key}={value!r} is not a valid {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: {key} must be a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config: {key} must be a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; a float field takes it anyway
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"config: {key}={value!r} is not a valid {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


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
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UserError(f"override {text!r}: cannot parse the value: {e}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise UserError(f"override {text!r}: {part!r} is not a config section")
            node = node[part]
        if path[-1] not in node:
            raise UserError(f"override {text!r}: unknown key {'.'.join(path)!r}")
        node[path[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config sections at the top level")
    return data


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: a path, or the name of a recipe shipped in ``botnet/configs`` (with or
    without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
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
) -> C:
    """Resolve a config: ``cls`` defaults, then ``base`` (a dict), then the recipe file, then the
    overrides. Every layer may give only the keys it changes."""
    data = to_dict(cls())
    if base:
        data = _merge(data, base)
    if path is not None:
        file_path = recipe_path(path)
        try:
            data = _merge(data, read_yaml(file_path))
            from_dict(cls, data)
        except UserError as e:
            raise UserError(f"{file_path}: {e}") from None
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


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
    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
