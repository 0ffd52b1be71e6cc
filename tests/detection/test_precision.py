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


#: how far a bf16 detection's corners may lie from float32's: well under the bf16 grid of 1 px
#: (128..256) and 2 px (256..512) that boxes decoded from bf16 offsets would be rounded to
BF16_BOX_TOL = 0.25
BF16_SCORE_TOL = 0.02


def test_bf16_inference_boxes_match_float32():
    torch.manual_seed(0)
    model = build_maskrcnn("resnet_tiny", 2, canvas=384, score_thresh=0.0, **SMALL).eval()
    with torch.no_grad():  # spread the scores as training does, so that the top detections are clear
        for layer in (model.rpn.head.cls_logits, model.roi_heads.box_predictor.cls_score):
            layer.weight.normal_(std=0.5)
    images, _ = _data()
    with torch.no_grad():
        full = model(images)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)[0]
    assert low["boxes"].dtype == torch.float32 and low["masks"].dtype == torch.float32
    assert len(full["boxes"]) >= 10 and bool((full["boxes"][:10] > 256).any())
    # each of float32's ten best detections has a bf16 twin of its label (the order may differ)
    for box, label, score in zip(full["boxes"][:10], full["labels"][:10], full["scores"][:10]):
        same = low["labels"] == label
        corners = (low["boxes"][same] - box).abs().amax(dim=1)
        twin = int(corners.argmin())
        assert corners[twin] <= BF16_BOX_TOL, (box, low["boxes"][same][twin])
        assert abs(low["scores"][same][twin] - score) <= BF16_SCORE_TOL
