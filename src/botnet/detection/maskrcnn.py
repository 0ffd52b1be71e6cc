"""Mask R-CNN / Faster R-CNN with FPN on a ResNet or BoTNet backbone (torchvision underneath).

The backbone's c2..c5 maps go through a feature pyramid (p2..p5, plus p6 by max pooling p5) into
torchvision's RPN and RoI heads. The BoT blocks size their attention to whatever map they see,
so the detector works at any input size; images are resized by torchvision's transform so that
the longer side is ``canvas`` (a no-op for the square training canvas).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from botnet.data.det_transforms import keep_every_side
from botnet.detection.config import DetDataConfig, DetModelConfig, detector_config
from botnet.detection.precision import float32_head_outputs
from botnet.detection.roi_align import GatherMultiScaleRoIAlign
from botnet.errors import UserError

FEATURES = ("c2", "c3", "c4", "c5")
# Names torchvision's RoI poolers look for; "pool" (p6) only feeds the RPN.
FPN_NAMES = ("0", "1", "2", "3")


class BackboneWithFPN(nn.Module):
    """Backbone c2..c5 -> FPN p2..p6 as the ordered dict torchvision's detectors expect."""

    def __init__(self, body: nn.Module, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork([body.feature_channels[k] for k in FEATURES], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body.forward_features(x)
        return self.fpn(OrderedDict((name, feats[k]) for name, k in zip(FPN_NAMES, FEATURES)))


def _norm_layer(norm: str):
    # "syncbn" builds plain BatchNorm: whether it is synchronized depends on how the model trains
    # (several CUDA processes), which the training engine decides (botnet.engine.parts)
    return FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d


def freeze_stages(body: nn.Module, freeze_at: int) -> None:
    """Stop gradients to the stem (freeze_at >= 1) and the first ``freeze_at - 1`` stages."""
    if freeze_at <= 0:
        return
    parts = [body.stem_modules] + [[s] for s in body.stages]
    for group in parts[:freeze_at]:
        for module in group:
            for p in module.parameters():
                p.requires_grad_(False)


def build_backbone(cfg: DetModelConfig, canvas: int = DetDataConfig.img_size) -> BackboneWithFPN:
    """The registered backbone ``cfg.name`` (``botnet.list_models()``) wrapped with an FPN.

    ``cfg.backbone_weights``: a weights source (:mod:`botnet.weights.pretrained`: ``imagenet``,
    ``torchvision:...``, ``timm:...`` or a file); from a ResNet every layer but the attention ones,
    which start random as in the paper; from timm's BoTNets every layer.
    """
    from botnet.models import create_model

    body = create_model(cfg.name, num_classes=0, norm_layer=_norm_layer(cfg.norm), img_size=canvas,
                        attn_impl=cfg.attn_impl, **cfg.options)
    body.load_report = None
    if cfg.backbone_weights is not None:
        from botnet.weights.pretrained import load_pretrained

        body.load_report = load_pretrained(body, cfg.backbone_weights, include_classifier=False,
                                           what="backbone weights")
    freeze_stages(body, cfg.freeze_at)
    return BackboneWithFPN(body, cfg.fpn_channels)


def build_maskrcnn(cfg: DetModelConfig | str | None = None, num_classes: int = 80, *,
                   canvas: int = DetDataConfig.img_size, **changes: Any) -> nn.Module:
    """A Mask R-CNN (``cfg.masks``) or Faster R-CNN with FPN, as ``cfg`` describes it.

    ``cfg`` is a :class:`~botnet.detection.config.DetModelConfig` (a run's ``model`` section: every
    setting, its default and its check are there), a backbone name for the default config, or
    None for the default config itself (``botnet50``); keyword ``changes`` set its fields
    (``norm="frozen"``, ``mask_roi_size=7``...), as torchvision's ``maskrcnn_resnet50_fpn(**kwargs)`` does. ``num_classes`` counts object categories, not the
    background (torchvision's ``num_classes`` is this plus one); images are resized so that their
    longer side is ``canvas`` (a run's ``data.img_size``).
    """
    cfg = detector_config(cfg, **changes)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if cfg.anchor_sizes == "auto":
        raise UserError("model.anchor_sizes=auto is resolved from the training boxes when training starts "
                        "(botnet.detection.api.train_detector); give sizes to build a model outside training")
    body = build_backbone(cfg, canvas)
    channels, ratio, impl = cfg.fpn_channels, cfg.roi_sampling_ratio, cfg.roi_align_impl
    sizes = tuple(tuple(float(s * k) for k in cfg.anchor_scales) for s in cfg.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(cfg.aspect_ratios),) * len(sizes))
    common = dict(
        min_size=canvas, max_size=canvas, rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size,
        box_roi_pool=GatherMultiScaleRoIAlign(list(FPN_NAMES), 7, ratio, impl=impl),
        box_head=TwoMLPHead(channels * 7 * 7, cfg.box_representation),
        box_predictor=FastRCNNPredictor(cfg.box_representation, num_classes + 1),
        box_batch_size_per_image=cfg.box_batch_size, box_detections_per_img=cfg.detections_per_img,
        box_score_thresh=cfg.score_thresh,
    )
    if cfg.masks:
        mask_channels = list(cfg.mask_head_channels)
        model = MaskRCNN(
            body, num_classes=None, **common,
            mask_roi_pool=GatherMultiScaleRoIAlign(list(FPN_NAMES), cfg.mask_roi_size, ratio, impl=impl),
            mask_head=MaskRCNNHeads(channels, mask_channels, 1),
            mask_predictor=MaskRCNNPredictor(mask_channels[-1], mask_channels[-1], num_classes + 1),
        )
    else:
        model = FasterRCNN(body, num_classes=None, **common)
    model.num_classes = num_classes
    model.transform = keep_every_side(model.transform)  # a 4000 x 20 image keeps a pixel per side
    model.transform.pad_square = canvas  # detections independent of the batch: AnyAspectRCNNTransform
    return float32_head_outputs(model)  # box coding and losses in float32 under autocast


def build_fasterrcnn(cfg: DetModelConfig | str | None = None, num_classes: int = 80, **changes: Any) -> nn.Module:
    """:func:`build_maskrcnn` without the mask head."""
    return build_maskrcnn(cfg, num_classes, **{**changes, "masks": False})
