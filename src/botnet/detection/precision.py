"""Box maths in float32 under autocast.

torchvision's box coder casts the reference boxes (anchors, proposals) to the dtype of the
predicted offsets. Under bf16 autocast the heads' offsets are bf16, so every anchor and proposal
would be rounded to bf16 (8 significant bits: 2-pixel steps between 256 and 512, 4-pixel steps up
to 1024) before decoding, and the box and mask losses would be taken in bf16 too. Small objects
suffer first. Casting the heads' outputs to float32 keeps the convolutions in bf16 (the cost)
and the coordinates, the decoding and the losses in float32. Forward hooks, so that the module
names, and with them every weights file, stay as they are.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def _float_outputs(module: nn.Module, args: Any, output: Any) -> Any:
    return _to_float(output)


def float32_head_outputs(model: nn.Module) -> nn.Module:
    """Make the RPN head, the box predictor and the mask predictor of a torchvision R-CNN return
    float32 (in place; returns the model)."""
    heads = [model.rpn.head, model.roi_heads.box_predictor, getattr(model.roi_heads, "mask_predictor", None)]
    for head in heads:
        if head is not None:
            head.register_forward_hook(_float_outputs)
    return model
