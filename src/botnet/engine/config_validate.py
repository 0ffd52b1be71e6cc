"""Config values checked by type and by range.

:func:`from_dict` turns nested dicts (a YAML recipe, overrides, a saved ``config.yaml``) into the
config dataclasses, refusing unknown keys and ill-typed values by name. Ranges are declared next
to the fields: a section dataclass derives from :class:`Checked` and lists rules for its fields in
a ``limits`` class variable::

    @dataclass
    class LogConfig(Checked):
        limits: ClassVar[Limits] = {"every_steps": at_least(1), "progress": one_of("auto", "never")}
        every_steps: int = 20
        progress: str = "auto"

Every construction of such a dataclass (from a file, from code, by ``dataclasses.replace``) is
checked, so a value out of range is refused when the config is loaded, before any work starts,
with a message that names the key: ``config: log.every_steps=0: must be at least 1``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, ClassVar, TypeVar

from botnet.errors import UserError
# the range rules live in botnet.limits (one home for every bound); imported here too, where the
# config sections and the flags find them
from botnet.limits import (
    CANVAS_SIDE, IMAGE_SIDE, MAX_IMAGE_SIDE, NUM_CLASSES, Limits, Rule, above, at_least, auto_or, between, each,
    fraction, increasing_pair, one_of, without)

C = TypeVar("C")
__all__ = ["CANVAS_SIDE", "IMAGE_SIDE", "MAX_IMAGE_SIDE", "NUM_CLASSES", "Limits", "Rule", "above", "at_least",
           "auto_or", "between", "each", "fraction", "increasing_pair", "one_of", "without", "ConfigValueError", "flag_type",
           "positive_int", "num_classes_int", "count_int", "image_side", "canvas_side", "fraction_float", "Checked",
           "to_dict", "from_dict", "check_model_options"]

class ConfigValueError(UserError):
    """A config value outside its range; ``key`` is the dotted key, ``reason`` what is expected."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"config: {key}={value!r}: {reason}")


# -- command-line flags -----------------------------------------------------------------------------


def flag_type(kind: type, rule: Rule) -> Callable[[str], Any]:
    """An argparse ``type=``: parse with ``kind`` (int / float), then apply ``rule``; argparse
    turns a refusal into ``argument --flag: <why>`` and exit code 2, before any work starts."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        why = rule(value)
        if why:
            raise argparse.ArgumentTypeError(f"{why}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = flag_type(int, at_least(1))
num_classes_int = flag_type(int, NUM_CLASSES)
count_int = flag_type(int, at_least(0))
image_side = flag_type(int, IMAGE_SIDE)
canvas_side = flag_type(int, CANVAS_SIDE)
fraction_float = flag_type(float, fraction())


# -- checked sections -------------------------------------------------------------------------------


class Checked:
    """Base of the config sections: checks each field against ``limits`` on construction."""

    limits: ClassVar[Limits] = {}

    def __post_init__(self) -> None:
        for name, rule in self.limits.items():
            value = getattr(self, name)
            why = rule(value)
            if why:
                raise ConfigValueError(name, value, why)


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """Refuse ``model.options`` that do not make a valid description of model ``name`` (a field
    out of range, over the size budget: :func:`botnet.limits.check_model`) when the config is
    built; an unknown name is left to the place that makes the model, which lists the known ones."""
    from botnet.limits import ModelOptionError
    from botnet.models import get_model_config

    try:
        base = get_model_config(name)
    except UserError:
        return
    try:
        base.replace(**options)
    except ModelOptionError as e:
        raise ConfigValueError(f"options.{e.field}", e.value, e.reason) from None
    except UserError as e:
        raise ConfigValueError("options", options, str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigValueError("options", options, f"not a model description ({e})") from None


# -- dict <-> dataclass ------------------------------------------------------------------------------


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
    """Build dataclass ``cls`` from ``data``; every unknown key, ill-typed value or value out of
    range is an error that names the key."""
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
    try:
        return cls(**kwargs)
    except ConfigValueError as e:
        if e.key.split(".")[0] in names:  # raised by this section itself: give the full dotted key
            raise ConfigValueError(_join(where, e.key), e.value, e.reason) from None
        raise


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
        args = typing.get_args(tp)
        if origin is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                raise UserError(f"config: {key}={list(value)!r} must be a list of {len(args)} values")
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
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
