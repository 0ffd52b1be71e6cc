"""The data that describes a ResNet / BoTNet: one frozen dataclass, one row per preset."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from botnet.errors import UserError
from botnet.layers.attention import ATTN_IMPLS
from botnet.limits import check_model


@dataclass(frozen=True)
class ModelConfig:
    #: bottleneck blocks per stage c2..c5
    layers: tuple[int, int, int, int]
    #: how many of each stage's LAST blocks are BoT blocks (BoTNet: (0, 0, 0, 3))
    bot_layers: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: stride of stage c5: 2 (detection backbones) or 1 (BoTNet-S1)
    c5_stride: int = 2
    stem_width: int = 64
    #: bottleneck width w of each stage; the output is 4w
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    #: squeeze-excitation width as a fraction of the block's output channels (0: none)
    se_ratio: float = 0.0
    act: str = "relu"
    heads: int = 4
    #: None (qk only), "relative_only" (qr only), "relative" (qk + qr) or "absolute" (qk + qr
    #: absolute): the paper's position-encoding ablation (arXiv 2101.11605, section 6)
    pos_enc: str | None = "relative"
    #: activation on the projection shortcut of BoT blocks, as the reference code does
    bot_shortcut_act: bool = True
    zero_init_last: bool = True
    #: default (H, W) input; also sizes the attention tables (``create_model(name, img_size=)``)
    img_size: tuple[int, int] = (224, 224)
    #: dropout before the classifier
    drop_rate: float = 0.0
    #: stochastic depth rate of the last block (linear in the block index)
    drop_path_rate: float = 0.0
    #: "7x7" (the ResNet's: 7x7 conv, BN, act, max pool) or "tiered" (timm's three 3x3 convs)
    stem: str = "7x7"
    #: the tiered stem's max pool; without it its last conv has stride 2
    stem_pool: bool = True
    #: output channels of each stage (None: 4 x widths, the ResNet bottleneck's expansion)
    out_channels: tuple[int, int, int, int] | None = None
    #: indices of the BoT blocks within each stage (timm's interleaved stages); replaces bot_layers
    bot_blocks: tuple[tuple[int, ...], ...] | None = None
    #: channels per group of the 3x3 convs (0: dense), timm's ``gs``
    group_size: int = 0
    #: channel attention after the 3x3 conv of the conv blocks: "se", "eca" or None (timm's attn_layer)
    mid_attn: str | None = None
    #: False: the position logits are not scaled by d^-0.5 (timm's BottleneckAttn default)
    scale_pos_embed: bool = True
    #: a final 1x1 conv + BN + act to this many channels before pooling (timm's num_features; 0: none)
    num_features: int = 0
    #: how the attention computes its relative term (``MHSA2d``'s ``attn_impl``: "auto" or a path
    #: name): a run-time choice with no effect on the result, so not compared and not saved
    attn_impl: str = field(default="auto", compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # every description, from a preset, a recipe, a flag or a file's metadata, is range-checked
        # and sized before a module is built from it
        check_model(self)

    def bot_indices(self, stage: int) -> frozenset[int]:
        """Indices of the BoT blocks of stage ``stage`` (0 = c2)."""
        if self.bot_blocks is not None:
            return frozenset(self.bot_blocks[stage])
        depth = self.layers[stage]
        return frozenset(range(max(depth - self.bot_layers[stage], 0), depth))

    def stage_out_channels(self) -> tuple[int, int, int, int]:
        return self.out_channels or tuple(4 * w for w in self.widths)

    def replace(self, **overrides: Any) -> "ModelConfig":
        if "input_size" in overrides:  # the field's name in earlier versions
            warnings.warn("the model option input_size is deprecated; use img_size", FutureWarning, stacklevel=2)
            size = overrides.pop("input_size")
            overrides.setdefault("img_size", size)
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UserError(f"unknown model option(s) {unknown}; known: {sorted(names - {'description'})}")
        for key in ("layers", "bot_layers", "widths", "img_size", "out_channels", "bot_blocks"):
            if key in overrides and overrides[key] is not None:
                overrides[key] = _int_tuple(key, overrides[key], nested=key == "bot_blocks")
        if overrides.get("attn_impl", "auto") not in ATTN_IMPLS:
            raise UserError(f"attn_impl {overrides['attn_impl']!r}: must be one of {', '.join(ATTN_IMPLS)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        d.pop("attn_impl")
        return {k: _lists(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        if not isinstance(d, dict) or "layers" not in d:
            raise UserError(f"a model description is a mapping with 'layers', got {type(d).__name__}")
        # files written by earlier versions name img_size input_size: read silently
        fields = {("img_size" if k == "input_size" else k): v for k, v in d.items() if k != "layers"}
        return cls(layers=_int_tuple("layers", d["layers"])).replace(**fields)


def _int_tuple(key: str, value: Any, nested: bool = False) -> tuple:
    """A list of integers (of lists of integers: ``nested``) as a tuple; anything else is refused by name."""
    def whole(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise UserError(f"model option {key}={value!r}: must be a list of integers")
        return int(v)

    if not isinstance(value, (list, tuple)) or nested and not all(isinstance(v, (list, tuple)) for v in value):
        raise UserError(f"model option {key}={value!r}: must be a list{' of lists' if nested else ''} of integers")
    return tuple(tuple(whole(i) for i in v) for v in value) if nested else tuple(whole(v) for v in value)


def _lists(value: Any) -> Any:
    """Tuples (nested too) as lists, as they come back from JSON."""
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value
