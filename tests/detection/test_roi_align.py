"""The gather RoIAlign computes torchvision's roi_align: values and gradients, every level."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from botnet.detection.roi_align import GatherMultiScaleRoIAlign, roi_align_levels


def _rois(count: int, image: int, batch: int, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=g, dtype=dtype) * image
    wh = torch.rand(count, 2, generator=g, dtype=dtype) * image * 0.6
    boxes = torch.cat([xy, xy + wh], 1)
    # boxes past the right/bottom edge, tiny ones (extent < 1 pixel on the map) and one at the corner
    boxes[0] = torch.tensor([image - 3.0, image - 2.0, image + 9.0, image + 7.0])
    boxes[1] = torch.tensor([5.0, 6.0, 5.2, 6.1])
    boxes[2] = torch.tensor([0.0, 0.0, image, image])
    index = torch.randint(0, batch, (count, 1), generator=g).to(dtype)
    return torch.cat([index, boxes], 1)


@pytest.mark.parametrize("sampling_ratio, output", [(2, 7), (1, 14), (3, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_level_equals_torchvision(sampling_ratio, output, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 13, 17, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rois = _rois(40, 64, 2, g)
    levels = torch.zeros(40, dtype=torch.long)
    ours = roi_align_levels([x], rois, levels, [0.25], (output, output), sampling_ratio)
    ref = roi_align(x, rois, (output, output), 0.25, sampling_ratio)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)


def test_pooler_equals_torchvision_over_levels():
    g = torch.Generator().manual_seed(1)
    image = 128
    feats = {str(i): torch.randn(2, 8, image // 2 ** (i + 2), image // 2 ** (i + 2), generator=g,
                                 dtype=torch.float64, requires_grad=True) for i in range(4)}
    feats["pool"] = torch.randn(2, 8, 2, 2, dtype=torch.float64)
    boxes = [_rois(30, image, 1, g)[:, 1:].clamp(0, image) for _ in range(2)]
    boxes = [torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 0.5)], 1) for b in boxes]
    shapes = [(image, image)] * 2
    names = ["0", "1", "2", "3"]
    ours = GatherMultiScaleRoIAlign(names, 7, 2, impl="gather")(feats, boxes, shapes)
    ref = MultiScaleRoIAlign(names, 7, 2)(feats, boxes, shapes)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = [feats[n] for n in names]
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_bf16_features_keep_their_dtype_and_match_float32():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 16, 16, generator=g)
    rois = _rois(10, 64, 1, g, torch.float32)
    levels = torch.zeros(10, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align_levels([x.bfloat16()], rois, levels, [0.25], (7, 7), 2)
    assert out.dtype == torch.bfloat16
    ref = roi_align(x.bfloat16().float(), rois, (7, 7), 0.25, 2)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_falls_back_where_the_gather_does_not_apply():
    pooler = GatherMultiScaleRoIAlign(["0"], 7, 0)
    assert not pooler._use_gather(torch.zeros(1))
    assert not GatherMultiScaleRoIAlign(["0"], 7, 2, impl="torchvision")._use_gather(torch.zeros(1))
    assert GatherMultiScaleRoIAlign(["0"], 7, 2)._use_gather(torch.zeros(1))
    with pytest.raises(ValueError, match="roi_align_impl"):
        GatherMultiScaleRoIAlign(["0"], 7, 2, impl="fast")
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_levels([torch.zeros(1, 1, 4, 4)], torch.zeros(1, 5), torch.zeros(1, dtype=torch.long), [1.0],
                         (2, 2), 0)


def test_no_rois_gives_an_empty_batch_like_torchvision():
    feats = {"0": torch.randn(2, 8, 16, 16), "1": torch.randn(2, 8, 8, 8)}
    boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
    shapes = [(64, 64)] * 2
    ours = GatherMultiScaleRoIAlign(["0", "1"], 7, 2, impl="gather")(feats, boxes, shapes)
    ref = MultiScaleRoIAlign(["0", "1"], 7, 2)(feats, boxes, shapes)
    assert ours.shape == ref.shape == (0, 8, 7, 7)
