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
import math
import types
import typing
from typing import Any, Callable, ClassVar, Dict, TypeVar

from botnet.errors import UserError

C = TypeVar("C")
#: a rule takes a value and says what is wrong with it (None: nothing)
Rule = Callable[[Any], "str | None"]
Limits = Dict[str, Rule]

#: the largest image side / detection canvas accepted; the paper's largest inputs are 1280 pixels
#: (arXiv 2101.11605, Table 3), and attention memory grows with the fourth power of the side
MAX_IMAGE_SIDE = 4096


class ConfigValueError(UserError):
    """A config value outside its range; ``key`` is the dotted key, ``reason`` what is expected."""

    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"config: {key}={value!r}: {reason}")


# -- rules -----------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False) -> Rule:
    """A finite number in [lo, hi] (``lo_open`` / ``hi_open``: the bound itself excluded);
    None passes (a field that may be unset)."""
    parts = []
    if lo is not None:
        parts.append(f"{'above' if lo_open else 'at least'} {lo:g}")
    if hi is not None:
        parts.append(f"{'below' if hi_open else 'at most'} {hi:g}")
    expected = "must be " + (" and ".join(parts) if parts else "a finite number")

    def rule(v: Any) -> str | None:
        if v is None:
            return None
        if not _is_number(v) or not math.isfinite(v):
            return "must be a finite number"
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return expected
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return expected
        return None

    return rule


def at_least(lo: float) -> Rule:
    return between(lo)


def above(lo: float) -> Rule:
    return between(lo, lo_open=True)


def fraction(*, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A number in [0, 1] (a probability, a rate, a ratio)."""
    return between(0, 1, lo_open=lo_open, hi_open=hi_open)


def one_of(*choices: str) -> Rule:
    def rule(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"

    return rule


def each(item: Rule, *, nonempty: bool = False) -> Rule:
    """Every element of a list / tuple passes ``item``."""

    def rule(v: Any) -> str | None:
        if v is None:
            return None
        if nonempty and not v:
            return "must not be empty"
        for i, x in enumerate(v):
            why = item(x)
            if why:
                return f"element {i} ({x!r}) {why}"
        return None

    return rule


def auto_or(rule: Rule) -> Rule:
    """The string ``"auto"`` (resolved later, from the data) or a value that passes ``rule``."""

    def check(v: Any) -> str | None:
        if isinstance(v, str):
            return None if v == "auto" else "must be auto or a list"
        return rule(v)

    return check


def without(key: str, home: str) -> Rule:
    """A mapping that does not hold ``key``: a setting with its own place, ``home``."""
    return lambda v: f"must not hold {key}: it is set as {home}" if isinstance(v, dict) and key in v else None


def increasing_pair(item: Rule) -> Rule:
    """A (low, high) pair: both pass ``item`` and low <= high."""
    check = each(item)

    def rule(v: Any) -> str | None:
        why = check(v)
        if why:
            return why
        return None if v[0] <= v[1] else "must be [low, high] with low <= high"

    return rule


IMAGE_SIDE = between(1, MAX_IMAGE_SIDE)
#: a detection canvas is at least one stride of the backbone's last stage (32 pixels)
CANVAS_SIDE = between(32, MAX_IMAGE_SIDE)


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
        if e.key in names:  # raised by this section itself: give the full dotted key
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
