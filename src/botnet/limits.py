"""Ranges and size budgets: the one place that says how large a value may be.

Range rules (:func:`between`, :func:`one_of`, :func:`each` ...) take a value and say what is wrong
with it (``None``: nothing). The config sections (``botnet.engine.config_validate``), the size flags
of every command, weights metadata and model descriptions all use them, so a size refused in one
place is refused everywhere.

A model description (:class:`botnet.models.ModelConfig`, from a preset, a recipe's
``model.options``, ``--set``, ``convert --option`` or a file's metadata) is checked field by field
and then against a size budget: its parameters and the activations of one forward pass at its
input size are estimated from the description alone (:func:`estimate_model`), before anything is
allocated, so that ``widths: [1048576]*4`` is a message, not an attempt to find 39 TB.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict

from botnet.errors import UserError

#: a rule takes a value and says what is wrong with it (None: nothing)
Rule = Callable[[Any], "str | None"]
Limits = Dict[str, Rule]

#: the largest image side / detection canvas accepted; the paper's largest inputs are 1280 pixels
#: (arXiv 2101.11605, Table 3), and attention memory grows with the fourth power of the side
MAX_IMAGE_SIDE = 4096
#: the most classes a classifier or detector may have (ImageNet-21k has 21,841)
MAX_CLASSES = 100_000
#: a model description whose estimate exceeds these is refused: 2e9 parameters are 8 GB in float32,
#: over 25 times the largest preset; the activation budget is for one image at the model's input size
MAX_PARAMETERS = 2_000_000_000
MAX_ACTIVATION_BYTES = 64 * 2**30
#: bottleneck blocks per stage (ResNet-200's deepest stage has 36)
MAX_STAGE_DEPTH = 1000
#: channels of a stage's bottleneck, of the stem and of the final conv (ResNet-50's widest is 2048)
MAX_CHANNELS = 16384


# -- rules -----------------------------------------------------------------------------------------


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False, integer: bool = False) -> Rule:
    """A finite number in [lo, hi] (``lo_open`` / ``hi_open``: the bound itself excluded; ``integer``:
    a whole number); None passes (a field that may be unset)."""
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = []
    if lo is not None:
        parts.append(f"{'above' if lo_open else 'at least'} {show(lo)}")
    if hi is not None:
        parts.append(f"{'below' if hi_open else 'at most'} {show(hi)}")
    expected = "must be " + (" and ".join(parts) if parts else "a finite number")

    def rule(v: Any) -> str | None:
        if v is None:
            return None
        if integer and not (isinstance(v, int) and not isinstance(v, bool)):
            return "must be an integer"
        if not is_number(v) or not math.isfinite(v):
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


def one_of(*choices: Any) -> Rule:
    def rule(v: Any) -> str | None:
        ok = any(v is c if c is None else (isinstance(v, type(c)) and v == c) for c in choices)
        return None if ok else f"must be one of {', '.join(str(c) for c in choices)}"

    return rule


def each(item: Rule, *, nonempty: bool = False, length: int | None = None) -> Rule:
    """Every element of a list / tuple passes ``item`` (and there are ``length`` of them)."""

    def rule(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, (list, tuple)):
            return "must be a list"
        if nonempty and not v:
            return "must not be empty"
        if length is not None and len(v) != length:
            return f"must be a list of {length} values"
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
    check = each(item, length=2)

    def rule(v: Any) -> str | None:
        why = check(v)
        if why:
            return why
        return None if v[0] <= v[1] else "must be [low, high] with low <= high"

    return rule


IMAGE_SIDE = between(1, MAX_IMAGE_SIDE, integer=True)
#: a detection canvas is at least one stride of the backbone's last stage (32 pixels)
CANVAS_SIDE = between(32, MAX_IMAGE_SIDE, integer=True)
NUM_CLASSES = between(1, MAX_CLASSES, integer=True)


def check(name: str, value: Any, rule: Rule) -> Any:
    """``value`` if it passes ``rule``, else a :class:`UserError` naming ``name`` (a flag, a key)."""
    why = rule(value)
    if why:
        raise UserError(f"{name} {value!r}: {why}")
    return value


# -- model descriptions ----------------------------------------------------------------------------


class ModelOptionError(UserError):
    """A model description field out of range; ``field`` names it."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"model option {field}={value!r}: {reason}")


_CHANNELS = between(1, MAX_CHANNELS, integer=True)
MODEL_LIMITS: Limits = {
    "layers": each(between(1, MAX_STAGE_DEPTH, integer=True), length=4),
    "bot_layers": each(between(0, MAX_STAGE_DEPTH, integer=True), length=4),
    "c5_stride": one_of(1, 2),
    "stem_width": _CHANNELS,
    "widths": each(_CHANNELS, length=4),
    "se_ratio": fraction(hi_open=True),
    "act": one_of("relu", "silu", "gelu"),
    "heads": between(1, 1024, integer=True),
    "pos_enc": one_of("relative", "absolute", None),
    "img_size": each(IMAGE_SIDE, length=2),
    "drop_rate": fraction(hi_open=True),
    "drop_path_rate": fraction(hi_open=True),
    "stem": one_of("7x7", "tiered"),
    "out_channels": each(_CHANNELS, length=4),
    "bot_blocks": each(each(between(0, MAX_STAGE_DEPTH, integer=True)), length=4),
    "group_size": between(0, MAX_CHANNELS, integer=True),
    "mid_attn": one_of("se", "eca", None),
    "num_features": between(0, MAX_CHANNELS, integer=True),
}


def check_model(cfg: Any) -> None:
    """Refuse a model description (a ``ModelConfig``) with a field out of range, fields that do not
    fit together, or an estimated size over the budget; :class:`ModelOptionError` names the field."""
    for name, rule in MODEL_LIMITS.items():
        value = getattr(cfg, name)
        why = rule(value)
        if why:
            raise ModelOptionError(name, value, why)
    for s in range(4):
        bot = cfg.bot_indices(s)
        if any(not 0 <= i < cfg.layers[s] for i in bot):
            raise ModelOptionError("bot_blocks" if cfg.bot_blocks is not None else "bot_layers",
                                   cfg.bot_blocks or cfg.bot_layers,
                                   f"stage {s} has {cfg.layers[s]} blocks; BoT block indices {sorted(bot)} are outside")
        if bot and cfg.widths[s] % cfg.heads:
            raise ModelOptionError("heads", cfg.heads, f"the attention width {cfg.widths[s]} of stage {s} "
                                   "must be a multiple of the number of heads")
        if cfg.group_size and cfg.widths[s] % cfg.group_size:
            raise ModelOptionError("group_size", cfg.group_size, f"width {cfg.widths[s]} of stage {s} is not a "
                                   "multiple of it")
    params, activations = estimate_model(cfg)
    if params > MAX_PARAMETERS:
        raise ModelOptionError("widths/layers", (list(cfg.widths), list(cfg.layers)),
                               f"about {params:.3g} parameters, over the budget of {MAX_PARAMETERS:.3g}")
    if activations > MAX_ACTIVATION_BYTES:
        raise ModelOptionError("img_size", list(cfg.img_size),
                               f"one image would need about {activations / 2**30:.3g} GiB of activations, over the "
                               f"budget of {MAX_ACTIVATION_BYTES / 2**30:g} GiB")


def _down(side: int) -> int:
    return (side + 1) // 2


def estimate_model(cfg: Any) -> tuple[int, int]:
    """(parameters, activation bytes of one float32 image at ``cfg.img_size``), from the
    description alone: convolution weights of every block and shortcut, and each block's output
    maps plus, for BoT blocks, the heads x N x N attention logits (N positions)."""
    h, w = (_down(_down(s)) for s in cfg.img_size)
    stem = cfg.stem_width
    params = 3 * 49 * stem + 9 * stem * stem
    acts = 4 * stem * h * w
    channels = stem
    for s, (depth, width, out) in enumerate(zip(cfg.layers, cfg.widths, cfg.stage_out_channels())):
        stride = 1 if s == 0 else (cfg.c5_stride if s == 3 else 2)
        bot = cfg.bot_indices(s)
        groups = width // cfg.group_size if cfg.group_size else 1
        for i in range(depth):
            if i == 0 and stride == 2:
                h, w = _down(h), _down(w)
            spatial = 3 * width * width if i in bot else 9 * width * width // max(groups, 1)
            params += channels * width + spatial + width * out + (channels * out if i == 0 else 0)
            acts += (3 * width + 2 * out) * h * w
            if i in bot:
                acts += cfg.heads * (h * w) ** 2
            channels = out
    params += channels * cfg.num_features
    return params, 4 * acts
