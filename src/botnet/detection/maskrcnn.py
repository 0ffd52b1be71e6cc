"""Mask R-CNN / Faster R-CNN with FPN on a ResNet or BoTNet backbone (torchvision underneath).

The backbone's c2..c5 maps go through a feature pyramid (p2..p5, plus p6 by max pooling p5) into
torchvision's RPN and RoI heads. The BoT blocks size their attention to whatever map they see,
so the detector works at any input size; images are resized by torchvision's transform so that
the longer side is ``canvas`` (a no-op for the square training canvas).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from botnet.data.det_transforms import keep_every_side
from botnet.detection.precision import float32_head_outputs
from botnet.detection.roi_align import ROI_ALIGN_IMPLS, GatherMultiScaleRoIAlign
from botnet.errors import UserError

NORMS = ("bn", "frozen", "syncbn")
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
    if norm not in NORMS:
        raise UserError(f"norm must be one of {NORMS}, got {norm!r}")
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


def build_backbone(name: str = "botnet50", norm: str = "bn", canvas: int = 1024,
                   backbone_weights: str | os.PathLike | None = None, freeze_at: int = 0,
                   fpn_channels: int = 256, **overrides) -> BackboneWithFPN:
    """A registered backbone (``botnet.list_models()``) wrapped with an FPN.

    ``backbone_weights``: a weights source (:mod:`botnet.weights.pretrained`: ``imagenet``, ``torchvision:...``,
    ``timm:...`` or a file); from a ResNet every layer but the attention ones, which start random
    as in the paper; from timm's BoTNets every layer.
    """
    from botnet.models import create_model

    body = create_model(name, num_classes=0, norm_layer=_norm_layer(norm), img_size=canvas, **overrides)
    body.load_report = None
    if backbone_weights is not None:
        from botnet.weights.pretrained import load_pretrained

        body.load_report = load_pretrained(body, backbone_weights, include_classifier=False, what="backbone weights")
    freeze_stages(body, freeze_at)
    return BackboneWithFPN(body, fpn_channels)


def build_maskrcnn(
    backbone: str = "botnet50",
    num_classes: int = 80,
    *,
    masks: bool = True,
    norm: str = "bn",
    canvas: int = 1024,
    backbone_weights: str | os.PathLike | None = None,
    freeze_at: int = 0,
    backbone_overrides: dict | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    anchor_scales: Sequence[float] = (1.0,),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    rpn_batch_size: int = 256,
    rpn_pre_nms_train: int = 2000,
    rpn_post_nms_train: int = 2000,
    rpn_pre_nms_test: int = 1000,
    rpn_post_nms_test: int = 1000,
    box_batch_size: int = 512,
    box_representation: int = 1024,
    mask_head_channels: Sequence[int] = (256, 256, 256, 256),
    mask_roi_size: int = 14,
    roi_sampling_ratio: int = 2,
    roi_align_impl: str = "auto",
    detections_per_img: int = 100,
    score_thresh: float = 0.05,
) -> nn.Module:
    """A Mask R-CNN (``masks=True``) or Faster R-CNN with FPN on a registered backbone.

    ``num_classes`` counts object categories, not the background (torchvision's ``num_classes``
    is this plus one). ``norm``: "bn" (trainable), "frozen" (FrozenBatchNorm2d, for fine-tuning
    from ``backbone_weights`` at small batch) or "syncbn" (BatchNorm made synchronized when
    torch.distributed is initialised, as in the paper). ``anchor_sizes`` gives one size per level
    p2..p6 (the defaults suit a 1024 canvas), each multiplied by every ``anchor_scales`` factor
    (1, 2^(1/3), 2^(2/3) gives denser scales). The sample counts, head widths, the mask RoI side
    ``mask_roi_size`` (14 as in Mask R-CNN; the predicted masks are twice that) and the RoIAlign
    sampling ratio trade accuracy for speed (see the demo recipe). ``roi_align_impl``: how the RoI poolers
    sample (:mod:`botnet.detection.roi_align`): "auto" (the row gather on CPU, torchvision's op
    elsewhere), "gather" or "torchvision"; all compute torchvision's RoIAlign.
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if len(anchor_sizes) != 5:
        raise UserError(f"anchor_sizes needs one size per pyramid level p2..p6 (5), got {list(anchor_sizes)}")
    if mask_roi_size < 1:
        raise UserError(f"mask_roi_size must be at least 1, got {mask_roi_size}")
    if roi_align_impl not in ROI_ALIGN_IMPLS:
        raise UserError(f"roi_align_impl must be one of {ROI_ALIGN_IMPLS}, got {roi_align_impl!r}")
    body = build_backbone(backbone, norm, canvas, backbone_weights, freeze_at, fpn_channels,
                          **(backbone_overrides or {}))
    sizes = tuple(tuple(float(s * k) for k in anchor_scales) for s in anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(aspect_ratios),) * 5)
    box_pool = GatherMultiScaleRoIAlign(list(FPN_NAMES), 7, roi_sampling_ratio, impl=roi_align_impl)
    common = dict(
        min_size=canvas, max_size=canvas, rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=rpn_pre_nms_train, rpn_post_nms_top_n_train=rpn_post_nms_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_test, rpn_post_nms_top_n_test=rpn_post_nms_test,
        rpn_batch_size_per_image=rpn_batch_size, box_roi_pool=box_pool,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, box_representation),
        box_predictor=FastRCNNPredictor(box_representation, num_classes + 1),
        box_batch_size_per_image=box_batch_size, box_detections_per_img=detections_per_img,
        box_score_thresh=score_thresh,
    )
    if masks:
        mask_channels = list(mask_head_channels)
        model = MaskRCNN(
            body, num_classes=None, **common,
            mask_roi_pool=GatherMultiScaleRoIAlign(list(FPN_NAMES), mask_roi_size, roi_sampling_ratio,
                                                   impl=roi_align_impl),
            mask_head=MaskRCNNHeads(fpn_channels, mask_channels, 1),
            mask_predictor=MaskRCNNPredictor(mask_channels[-1], mask_channels[-1], num_classes + 1),
        )
    else:
        model = FasterRCNN(body, num_classes=None, **common)
    if norm == "syncbn" and dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        # PyTorch's SyncBatchNorm runs on CUDA only; elsewhere each process keeps its own statistics
        # (a run on the CPU of a machine with CUDA: the trainer makes these plain BatchNorm again,
        # botnet.engine.distributed.batchnorm_for_device)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.num_classes = num_classes
    model.transform = keep_every_side(model.transform)  # a 4000 x 20 image keeps a pixel per side
    return float32_head_outputs(model)  # box coding and losses in float32 under autocast


def build_fasterrcnn(backbone: str = "botnet50", num_classes: int = 80, **kwargs) -> nn.Module:
    """:func:`build_maskrcnn` without the mask head."""
    return build_maskrcnn(backbone, num_classes, masks=False, **kwargs)
