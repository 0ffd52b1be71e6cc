"""The classification run config: the engine's sections plus ``model``, ``data`` and ``loss``.

The defaults are the recipe ``cls_standard_100ep``, the paper's standard ImageNet setting (arXiv
2101.11605): SGD 0.1 per 256 images scaled linearly to the global batch, a 5-epoch warmup (at most a
quarter of the run), cosine, crops and flips only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from botnet.engine.config import EvalConfig, OptimConfig, ScheduleConfig, TrainConfig, TrainLoopConfig
from botnet.engine.config_validate import (
    check_model_options, IMAGE_SIDE, Checked, Limits, at_least, between, each, fraction, increasing_pair, one_of,
    without)
from botnet.engine.renamed_keys import UNCHANGED, Renamed
from botnet.errors import UserError
from botnet.layers.attention import ATTN_IMPLS
from botnet.models.botnet import IMAGENET_MEAN, IMAGENET_STD
from botnet.tasks import CLASSIFICATION


#: model options with their own key in the classification config (one home each)
OWN_KEYS = {"attn_impl": "model.attn_impl", "img_size": "data.img_size", "input_size": "data.img_size",
            "drop_rate": "model.drop_rate", "drop_path_rate": "model.drop_path_rate"}


def _no_own_keys(options: Any) -> str | None:
    return next((why for key, home in OWN_KEYS.items() if (why := without(key, home)(options))), None)


@dataclass
class ClsModelConfig(Checked):
    limits: ClassVar[Limits] = {"drop_rate": fraction(hi_open=True), "drop_path_rate": fraction(hi_open=True),
                                "norm": one_of("bn", "syncbn"), "attn_impl": one_of(*ATTN_IMPLS),
                                "options": _no_own_keys}
    #: a registered model (``botnet models`` lists them)
    name: str = "botnet_s1_50"
    #: bn | syncbn (BatchNorm synchronized across processes when training under torch.distributed on CUDA)
    norm: str = "bn"
    #: dropout before the classifier
    drop_rate: float = 0.0
    #: stochastic depth (drop-path) rate of the last block, linear in the block index
    drop_path_rate: float = 0.0
    #: any other field of the model's config, e.g. {act: silu, se_ratio: 0.0625}
    options: dict[str, Any] = field(default_factory=dict)
    #: how the attention computes its relative term: auto, or a path (chunked, fold, bias, flex;
    #: botnet.layers.attention.PATHS); the same result either way
    attn_impl: str = "auto"
    #: weights to start from (``--weights``): a source of botnet.weights.pretrained (``imagenet``,
    #: ``torchvision:ENUM``, ``timm:NAME``, a local file in any layout); a ResNet fills the matching
    #: layers and the attention stays random (the paper's ImageNet start)
    init_weights: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_model_options(self.name, self.options)


@dataclass
class RandAugmentConfig(Checked):
    # torchvision's RandAugment has 31 magnitude bins: 0..30
    limits: ClassVar[Limits] = {"layers": at_least(0), "magnitude": between(0, 30)}
    #: number of operations per image (0: off)
    layers: int = 2
    magnitude: int = 9


@dataclass
class ClsDataConfig(Checked):
    limits: ClassVar[Limits] = {
        "img_size": IMAGE_SIDE, "crop_pct": fraction(lo_open=True), "scale": increasing_pair(fraction(lo_open=True)),
        "hflip": fraction(), "mean": each(between()), "std": each(between(0, lo_open=True))}
    #: ImageFolder root holding train/<class>/* and val/<class>/*
    root: str = ""
    #: training / evaluation resolution (None: the model's default input size)
    img_size: int | None = None
    #: evaluation: resize to img_size / crop_pct, then center-crop img_size
    crop_pct: float = 0.875
    #: RandomResizedCrop area range
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    #: off by default (the standard setting); the 200-epoch and T3..T7 recipes turn it on
    randaugment: RandAugmentConfig = field(default_factory=lambda: RandAugmentConfig(layers=0))
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: stop at the first unreadable image instead of skipping it with a warning
    strict: bool = False


@dataclass
class ClsLossConfig(Checked):
    limits: ClassVar[Limits] = {"label_smoothing": fraction(hi_open=True)}
    label_smoothing: float = 0.0


def _square_side(size: Any, data: dict) -> Any:
    if (data.get("data") or {}).get("img_size"):
        return UNCHANGED  # data.img_size won over it
    side = [size, size] if isinstance(size, int) else list(size)
    if len(side) != 2 or side[0] != side[1]:
        raise UserError(f"config: model.options.input_size={size!r}: must be square, the one side of "
                        "data.img_size (its key now)")
    return int(side[0])


@dataclass
class ClassificationConfig(TrainConfig):
    task: ClassVar[str] = CLASSIFICATION
    recipe: ClassVar[str] = "cls_standard_100ep"
    renamed: ClassVar[tuple[Renamed, ...]] = TrainConfig.renamed + (
        Renamed("model.options.input_size", "data.img_size", convert=_square_side),
        Renamed("model.options.drop_rate", "model.drop_rate"),
        Renamed("model.options.drop_path_rate", "model.drop_path_rate"))
    model: ClsModelConfig = field(default_factory=ClsModelConfig)
    data: ClsDataConfig = field(default_factory=ClsDataConfig)
    loss: ClsLossConfig = field(default_factory=ClsLossConfig)
    train: TrainLoopConfig = field(default_factory=lambda: TrainLoopConfig(epochs=100, batch_size=128))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.1, base_batch=256))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="cosine", warmup_epochs=5))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(every_epochs=5))
