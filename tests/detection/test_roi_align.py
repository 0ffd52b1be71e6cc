"""The gather RoIAlign computes torchvision's roi_align: values and gradients, every level."""
from __future__ import annotations

import math

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


def _boxes_on_every_level(count: int, image: int, g: torch.Generator) -> torch.Tensor:
    """Boxes whose sizes sqrt(w h) run log-uniform from 40 to 800 pixels: torchvision's level
    rule (floor(4 + log2(sqrt(w h) / 224)), clamped to 2..5) puts about a quarter on each of the
    strides 4, 8, 16 and 32. Boxes larger than the image, or reaching past its edge, are kept:
    a detector's proposals are clipped to the image, not its RoIs in general."""
    side = torch.exp(torch.empty(count, dtype=torch.float64).uniform_(math.log(40), math.log(800), generator=g))
    aspect = torch.exp(torch.empty(count, dtype=torch.float64).uniform_(-0.7, 0.7, generator=g))
    wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], 1)
    centre = torch.rand(count, 2, generator=g, dtype=torch.float64) * image
    return torch.cat([centre - wh / 2, centre + wh / 2], 1)


@pytest.mark.parametrize("output, sampling_ratio", [(7, 2), (14, 2), (5, 3)])
def test_pooler_equals_torchvision_on_every_level(output, sampling_ratio):
    g = torch.Generator().manual_seed(1)
    image = 512
    names = ["0", "1", "2", "3"]  # p2..p5: strides 4, 8, 16, 32
    feats = {n: torch.randn(2, 8, image // 2 ** (i + 2), image // 2 ** (i + 2), generator=g,
                            dtype=torch.float64, requires_grad=True) for i, n in enumerate(names)}
    feats["pool"] = torch.randn(2, 8, 8, 8, dtype=torch.float64)  # p6: never pooled from
    boxes = [_boxes_on_every_level(60, image, g) for _ in range(2)]
    shapes = [(image, image)] * 2
    ref_pooler = MultiScaleRoIAlign(names, output, sampling_ratio)
    ref = ref_pooler(feats, boxes, shapes)
    # every level holds a fair share of the RoIs (torchvision's own assignment)
    levels = ref_pooler.map_levels(boxes)
    counts = torch.bincount(levels, minlength=4).tolist()
    assert len(counts) == 4 and min(counts) >= 15, counts
    ours = GatherMultiScaleRoIAlign(names, output, sampling_ratio, impl="gather")(feats, boxes, shapes)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    # each level's own RoIs, so a level that is wrong cannot hide behind the others
    for level in range(4):
        rows = levels == level
        torch.testing.assert_close(ours[rows], ref[rows], rtol=0, atol=1e-12, msg=f"level {level}")
        assert ours[rows].abs().amax() > 0.1  # the level's map was read
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = [feats[n] for n in names]
    for level, (a, b) in enumerate(zip(torch.autograd.grad(ours, inputs, grad),
                                        torch.autograd.grad(ref, inputs, grad))):
        assert b.abs().amax() > 0, f"level {level} received no gradient"
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=f"gradient of level {level}")


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
