"""RoIAlign as a weighted gather of feature rows: torchvision's numbers, a fast CPU backward.

``torchvision.ops.roi_align`` (``aligned=False``, a fixed ``sampling_ratio`` s, as torchvision's
Mask R-CNN uses it) averages s x s bilinear samples in every output bin. Each sample reads 4
pixels, so an output bin is a weighted sum of 4 s^2 pixel vectors (16 for s = 2). On a CPU the
op's backward scatters one channel of one RoI at a time on one thread, and it is the largest
single cost of a Mask R-CNN training step (BENCHMARKS.md, detection step). Written as
``F.embedding_bag`` over the channels-last rows of the feature maps, with those pixels as the bag
and their bilinear weights / s^2 as ``per_sample_weights``, the same sum runs vectorised over
channels, and its backward is a parallel row scatter-add.

The sample positions, the out-of-map rule (a sample beyond one pixel outside the map reads zero),
the clamping at the border and the weights follow torchvision's CPU kernel term by term, so the
two agree to float rounding (1e-12 in float64; tests/detection/test_roi_align.py). Level
assignment, scales and the pooler interface stay torchvision's (``MultiScaleRoIAlign``); only
the sampling changes. It runs in float32 (or the maps' wider dtype) with autocast off, as
torchvision's op does under autocast, and returns the features' dtype.

Adaptive sampling (``sampling_ratio <= 0``) has a bag size that varies per RoI: those poolers,
CUDA tensors, TorchScript and ONNX export (tracing) use torchvision's op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

ROI_ALIGN_IMPLS = ("auto", "gather", "torchvision")


def _axis_taps(start: Tensor, length: Tensor, size: Tensor, pooled: int, s: int) -> tuple[Tensor, Tensor]:
    """Pixel indices and bilinear weights along one axis: each (K, pooled, 2 s).

    ``start``/``length``: (K,) RoI start and extent on the feature map (extent at least 1);
    ``size``: (K,) the map's extent along this axis."""
    start, length, size = start[:, None, None], length[:, None, None], size[:, None, None]
    bin_size = length / pooled
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)[None, :, None]
    i = torch.arange(s, device=start.device, dtype=start.dtype)[None, None, :]
    coord = start + p * bin_size + (i + 0.5) * bin_size / s  # (K, pooled, s)
    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    coord = torch.where(at_edge, low, coord)
    high = torch.where(at_edge, low, low + 1)
    frac = coord - low
    weights = torch.stack([(1 - frac) * inside, frac * inside], -1).flatten(2)  # (K, pooled, 2 s)
    index = torch.stack([low, high], -1).flatten(2).long()
    return index, weights


def roi_align_levels(features: list[Tensor], rois: Tensor, levels: Tensor, scales: list[float],
                     output_size: tuple[int, int], sampling_ratio: int) -> Tensor:
    """RoIAlign of each RoI on its own level: torchvision's ``roi_align`` with ``aligned=False``.

    features: (N, C, H_l, W_l) maps, any memory format; rois: (K, 5) [image index, x1, y1, x2, y2]
    in input pixels; levels: (K,) index into ``features``; scales: each level's
    ``spatial_scale``. Returns (K, C, ph, pw) in the features' dtype (a channels-last view).
    """
    if sampling_ratio <= 0:
        raise ValueError(f"the gather RoIAlign needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    ph, pw = output_size
    s = sampling_ratio
    channels = features[0].shape[1]
    device = rois.device
    dtype = torch.promote_types(features[0].dtype, torch.float32)
    with torch.autocast(device.type, enabled=False):
        # every level's pixels as rows of one table, float32 or wider (a view for one channels-last map)
        parts = [f.to(dtype).permute(0, 2, 3, 1).reshape(-1, channels) for f in features]
        table = parts[0] if len(parts) == 1 else torch.cat(parts)
        sizes = torch.tensor([f.shape[2:] for f in features], device=device)  # (L, 2): H, W
        firsts = torch.tensor([0] + [p.shape[0] for p in parts[:-1]], device=device).cumsum(0)
        height, width = sizes[levels, 0], sizes[levels, 1]
        box = rois[:, 1:] * torch.tensor(scales, device=device, dtype=rois.dtype)[levels, None]
        x1, y1, x2, y2 = box.unbind(1)
        iy, wy = _axis_taps(y1, (y2 - y1).clamp(min=1), height.to(box.dtype), ph, s)
        ix, wx = _axis_taps(x1, (x2 - x1).clamp(min=1), width.to(box.dtype), pw, s)
        first = firsts[levels] + rois[:, 0].long() * height * width
        # (K, ph, pw, 2s, 2s): the bag of each output bin
        index = (first[:, None, None, None, None] + iy[:, :, None, :, None] * width[:, None, None, None, None]
                 + ix[:, None, :, None, :])
        weight = wy[:, :, None, :, None] * wx[:, None, :, None, :] / (s * s)
        bag = index.shape[-1] * index.shape[-2]
        out = F.embedding_bag(index.reshape(-1, bag), table, per_sample_weights=weight.reshape(-1, bag).to(dtype),
                              mode="sum")
    return out.view(-1, ph, pw, channels).permute(0, 3, 1, 2).to(features[0].dtype)


class GatherMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` sampling through :func:`roi_align_levels`.

    ``impl``: "gather" (always, where it applies), "torchvision" (never) or "auto" (on CPU).
    Falls back to torchvision's op wherever the gather does not apply (see the module doc).
    """

    def __init__(self, featmap_names: list[str], output_size: int | tuple[int, int], sampling_ratio: int,
                 impl: str = "auto", **kwargs):
        super().__init__(featmap_names, output_size, sampling_ratio, **kwargs)
        if impl not in ROI_ALIGN_IMPLS:
            raise ValueError(f"roi_align_impl must be one of {ROI_ALIGN_IMPLS}, got {impl!r}")
        self.impl = impl

    def _use_gather(self, feature: Tensor) -> bool:
        if self.impl == "torchvision" or self.sampling_ratio <= 0:
            return False
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        return self.impl == "gather" or feature.device.type == "cpu"

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if not self._use_gather(features[0]):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            levels = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
        else:
            levels = self.map_levels(boxes)
        return roi_align_levels(features, rois, levels, self.scales, self.output_size, self.sampling_ratio)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, impl={self.impl!r})"
