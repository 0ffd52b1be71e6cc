"""The data that describes a ResNet / BoTNet: one frozen dataclass, one row per preset."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from botnet.errors import UserError


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
    pos_enc: str | None = "relative"
    #: activation on the projection shortcut of BoT blocks, as the reference code does
    bot_shortcut_act: bool = True
    zero_init_last: bool = True
    #: default (H, W) input; also sizes the attention tables
    input_size: tuple[int, int] = (224, 224)
    #: dropout before the classifier
    drop_rate: float = 0.0
    #: stochastic depth rate of the last block (linear in the block index)
    drop_path_rate: float = 0.0
    description: str = field(default="", compare=False)

    def replace(self, **overrides: Any) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise UserError(f"unknown model option(s) {unknown}; known: {sorted(names - {'description'})}")
        for key in ("layers", "bot_layers", "widths", "input_size"):
            if key in overrides and overrides[key] is not None:
                overrides[key] = tuple(int(v) for v in overrides[key])
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(layers=tuple(d["layers"])).replace(**{k: v for k, v in d.items() if k != "layers"})
