"""The detection run config: the engine's sections plus ``model`` and ``data``.

Defaults are the recipe ``det_12ep``, the paper's COCO recipe (arXiv 2101.11605, the COCO
experiments): 1024 canvas, scale jitter [0.8, 1.25], SGD momentum 0.9, lr 0.08 at global batch 64
scaled linearly with the batch, 500-step warmup, x0.1 at 2/3 and 8/9 of the schedule, weight decay
1e-4. A small training set gets a small-data recipe instead (:func:`botnet.detection.api.choose_recipe`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from botnet.engine.config import (
    EvalConfig, OptimConfig, ScheduleConfig, TrainConfig, TrainLoopConfig, from_dict, to_dict)
from botnet.engine.config_validate import (
    check_model_options, CANVAS_SIDE, Checked, Limits, Rule, above, at_least, auto_or, between, each, fraction,
    increasing_pair, one_of, without)
from botnet.engine.renamed_keys import UNCHANGED, Renamed
from botnet.layers.attention import ATTN_IMPLS
from botnet.tasks import DETECTION

#: the feature pyramid's levels p2..p6: one anchor size each
PYRAMID_LEVELS = 5


def _per_level(rule: Rule) -> Rule:
    def check(v: Any) -> str | None:
        if isinstance(v, (list, tuple)) and len(v) != PYRAMID_LEVELS:
            return f"must hold one size per pyramid level p2..p6 ({PYRAMID_LEVELS}), not {len(v)}"
        return rule(v)

    return check


@dataclass
class DetModelConfig(Checked):
    """The detector, as :func:`botnet.detection.build_maskrcnn` builds it: every default and every
    check of a detector's settings lives here."""

    limits: ClassVar[Limits] = {
        "norm": one_of("bn", "frozen", "syncbn"), "freeze_at": between(0, 5), "fpn_channels": at_least(1),
        "anchor_sizes": auto_or(_per_level(each(above(0), nonempty=True))),
        "anchor_scales": each(above(0), nonempty=True),
        "aspect_ratios": each(above(0), nonempty=True), "rpn_batch_size": at_least(1),
        "rpn_pre_nms_train": at_least(1), "rpn_post_nms_train": at_least(1), "rpn_pre_nms_test": at_least(1),
        "rpn_post_nms_test": at_least(1), "box_batch_size": at_least(1), "box_representation": at_least(1),
        "mask_head_channels": each(at_least(1), nonempty=True), "mask_roi_size": at_least(1),
        "roi_sampling_ratio": at_least(0),
        "roi_align_impl": one_of("auto", "gather", "torchvision"), "detections_per_img": at_least(1),
        "attn_impl": one_of(*ATTN_IMPLS), "score_thresh": fraction(),
        "options": lambda o: (without("attn_impl", "model.attn_impl")(o)
                              or without("img_size", "data.img_size, the canvas")(o))}
    #: a registered backbone (``botnet models``): resnet*/botnet*
    name: str = "botnet50"
    #: Mask R-CNN (true) or Faster R-CNN (false)
    masks: bool = True
    #: bn (trainable) | frozen (FrozenBatchNorm2d, for fine-tuning at small batch) | syncbn (trainable,
    #: synchronized across processes when training under torch.distributed on CUDA, as in the paper)
    norm: str = "syncbn"
    #: backbone start (``--backbone-weights``): a source of botnet.weights.pretrained (``imagenet`` is the
    #: paper's setting, ``timm:NAME``, a local file); a ResNet leaves the attention random
    backbone_weights: str | None = None
    #: 0: train everything; 1: freeze the stem; k: the stem and the first k-1 stages
    freeze_at: int = 0
    #: any other field of the backbone's config, e.g. {widths: [32, 64, 128, 256]}; its input
    #: size is the canvas (data.img_size)
    options: dict[str, Any] = field(default_factory=dict)
    #: how the backbone's attention computes its relative term: auto, or a path (chunked, fold,
    #: bias, flex; botnet.layers.attention.PATHS); the same result either way
    attn_impl: str = "auto"
    fpn_channels: int = 256
    #: one anchor size per pyramid level p2..p6 (pixels on the canvas), or ``auto``: sizes, scales
    #: and aspect ratios fitted to the training boxes when training starts (botnet.detection.anchors)
    anchor_sizes: list[int] | str = field(default_factory=lambda: [32, 64, 128, 256, 512])
    #: each level's anchor size times each of these (more than one: denser scales)
    anchor_scales: list[float] = field(default_factory=lambda: [1.0])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_batch_size: int = 256
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    #: RoIs sampled per image for the box and mask heads
    box_batch_size: int = 512
    box_representation: int = 1024
    mask_head_channels: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    #: side of the mask head's RoIAlign output (Mask R-CNN: 14); predicted masks are twice this
    mask_roi_size: int = 14
    roi_sampling_ratio: int = 2
    #: RoIAlign sampling: auto (a row gather on CPU, torchvision's op elsewhere) | gather | torchvision
    roi_align_impl: str = "auto"
    detections_per_img: int = 100
    score_thresh: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        check_model_options(self.name, self.options)

def detector_config(cfg: DetModelConfig | str | None = None, **changes: Any) -> DetModelConfig:
    """``cfg`` (a :class:`DetModelConfig`, a backbone name for the default config, or None: the
    default config) with ``changes`` to its fields, checked as a config file's ``model`` section is."""
    base = DetModelConfig(name=cfg) if isinstance(cfg, str) else cfg or DetModelConfig()
    if not changes:
        return base
    return from_dict(DetModelConfig, {**to_dict(base), **changes})


@dataclass
class DetDataConfig(Checked):
    limits: ClassVar[Limits] = {"img_size": CANVAS_SIDE, "scale_range": increasing_pair(above(0)), "hflip": fraction()}
    #: image folders and COCO instances files; the val pair may be empty (no evaluation)
    train_images: str = ""
    train_ann: str = ""
    val_images: str = ""
    val_ann: str = ""
    #: side of the square training canvas (evaluation resizes the longer side to it); the backbone's
    #: input size too
    img_size: int = 1024
    #: scale jitter range: the paper's [0.8, 1.25], or [0.5, 2.0], [0.1, 2.0]
    scale_range: tuple[float, float] = (0.8, 1.25)
    hflip: float = 0.5
    #: also train on images without annotations
    train_empty: bool = False
    #: stop at the first unreadable image instead of skipping it with a warning
    strict: bool = False


@dataclass
class DetectionConfig(TrainConfig):
    task: ClassVar[str] = DETECTION
    recipe: ClassVar[str] = "det_12ep"
    # the backbone was always built at the canvas: model.options.input_size never took effect
    renamed: ClassVar[tuple[Renamed, ...]] = TrainConfig.renamed + (
        Renamed("data.canvas", "data.img_size"),
        Renamed("model.options.input_size", "data.img_size", convert=lambda size, data: UNCHANGED))
    model: DetModelConfig = field(default_factory=DetModelConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
    train: TrainLoopConfig = field(default_factory=lambda: TrainLoopConfig(epochs=12, batch_size=8, workers=8))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=0.08, base_batch=64, momentum=0.9, nesterov=False, weight_decay=1e-4))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(
        name="step", warmup_steps=500, milestone_fractions=[0.666667, 0.888889], gamma=0.1))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(every_epochs=2, batch_size=8))
