"""Under bf16 autocast the detector's coordinates, box decoding and losses stay in float32."""
import torch

from botnet.detection.maskrcnn import build_maskrcnn

SMALL = dict(fpn_channels=16, box_representation=32, mask_head_channels=[16], rpn_pre_nms_train=100,
             rpn_post_nms_train=50, rpn_pre_nms_test=100, rpn_post_nms_test=50, box_batch_size=16,
             anchor_sizes=[8, 16, 32, 64, 128])


def _data(canvas=384):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, canvas, canvas, generator=g)
    boxes = torch.tensor([[301.0, 287.0, 317.0, 305.0], [40.0, 50.0, 61.0, 66.0]])  # small objects
    masks = torch.zeros(2, canvas, canvas, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
        m[y1:y2, x1:x2] = 1
    return [image], [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}]


def test_bf16_training_keeps_proposals_and_losses_in_float32():
    torch.manual_seed(0)
    model = build_maskrcnn("resnet_tiny", 2, canvas=384, **SMALL).train()
    seen = {}
    model.rpn.register_forward_hook(lambda m, a, out: seen.update(proposals=out[0]))  # returns None
    images, targets = _data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    proposals = seen["proposals"][0]
    assert proposals.dtype == torch.float32
    # bf16 would put every coordinate between 256 and 512 on a 2-pixel grid
    far = proposals[proposals > 256]
    assert far.numel() and bool(((far / 2) != (far / 2).round()).any())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bf16_inference_boxes_match_float32():
    torch.manual_seed(0)
    model = build_maskrcnn("resnet_tiny", 2, canvas=384, score_thresh=0.0, **SMALL).eval()
    images, _ = _data()
    with torch.no_grad():
        full = model(images)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)[0]
    assert low["boxes"].dtype == torch.float32 and low["masks"].dtype == torch.float32
    assert len(full["boxes"]) and len(low["boxes"])
