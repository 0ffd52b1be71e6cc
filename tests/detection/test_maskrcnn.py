"""The detector: trains and predicts on tiny inputs, at any size, with every norm option."""
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from botnet.detection.config import DetectionConfig
from botnet.detection.maskrcnn import build_fasterrcnn, build_maskrcnn
from botnet.errors import UserError

SMALL = dict(canvas=64, anchor_sizes=(8, 16, 32, 64, 128), fpn_channels=32, box_representation=64,
             mask_head_channels=(32,), box_batch_size=32, rpn_batch_size=32, rpn_pre_nms_train=200,
             rpn_post_nms_train=50, rpn_pre_nms_test=200, rpn_post_nms_test=50)


def _targets(n_images=2, size=64):
    targets = []
    for i in range(n_images):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 4:20, 6:30] = 1
        masks[1, 30:60, 20:50] = 1
        targets.append({"boxes": torch.tensor([[6.0, 4, 30, 20], [20, 30, 50, 60]]),
                        "labels": torch.tensor([1, 3]), "masks": masks})
    return targets


@pytest.mark.parametrize("backbone", ["botnet_tiny", "resnet_tiny"])
def test_train_step_returns_losses_and_gradients_reach_attention(backbone):
    torch.manual_seed(0)
    model = build_maskrcnn(backbone, num_classes=3, **SMALL)
    model.train()
    losses = model([torch.rand(3, 64, 64) for _ in range(2)], _targets())
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    if backbone == "botnet_tiny":
        attn = [n for n in grads if "rel_h" in n]
        assert attn and all(grads[n] is not None for n in attn)


def test_predicts_any_input_size_in_original_coordinates():
    torch.manual_seed(0)
    model = build_maskrcnn("botnet_tiny", num_classes=2, **SMALL).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 50, 90), torch.rand(3, 100, 70)])
    assert out[0]["masks"].shape[-2:] == (50, 90)
    assert out[1]["masks"].shape[-2:] == (100, 70)
    for o, (h, w) in zip(out, [(50, 90), (100, 70)]):
        assert (o["boxes"][:, 2] <= w).all() and (o["boxes"][:, 3] <= h).all()


def test_an_images_detections_do_not_depend_on_the_images_batched_with_it():
    # the attention is global: padding to the largest image of the batch (torchvision's way) would
    # change what a wide image's c5 sees when a tall one shares its batch
    torch.manual_seed(0)
    model = build_maskrcnn("botnet_tiny", num_classes=2, score_thresh=0.0, **SMALL).eval()
    wide, tall = torch.rand(3, 32, 64), torch.rand(3, 64, 32)
    with torch.no_grad():
        alone = model([wide])[0]
        batched = model([wide, tall])[0]
    assert len(alone["boxes"]) > 0
    torch.testing.assert_close(batched["boxes"], alone["boxes"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(batched["scores"], alone["scores"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("roi_size", [14, 7])
def test_mask_roi_size_sets_the_mask_resolution(roi_size):
    """The mask RoIs are ``mask_roi_size`` square and the predicted masks twice that, in training
    (the loss's targets are cropped at that size) and in prediction (pasted back at image size)."""
    torch.manual_seed(0)
    model = build_maskrcnn("resnet_tiny", num_classes=3, mask_roi_size=roi_size, **SMALL)
    shapes = []
    model.roi_heads.mask_predictor.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape[-2:])))
    model.train()
    losses = model([torch.rand(3, 64, 64) for _ in range(2)], _targets())
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert out[0]["masks"].shape[-2:] == (64, 64)
    assert set(shapes) == {(2 * roi_size, 2 * roi_size)}


def test_faster_rcnn_has_no_mask_head_and_frozen_norm_is_frozen():
    model = build_fasterrcnn("resnet_tiny", num_classes=3, norm="frozen", freeze_at=2, **SMALL)
    assert not model.roi_heads.has_mask()
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    model.train()
    losses = model([torch.rand(3, 64, 64)], [{k: v for k, v in _targets(1)[0].items() if k != "masks"}])
    assert "loss_mask" not in losses


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="norm"):
        build_maskrcnn("resnet_tiny", 2, norm="group", **SMALL)
    with pytest.raises(UserError, match="anchor_sizes"):
        build_maskrcnn("resnet_tiny", 2, **{**SMALL, "anchor_sizes": (8, 16)})
    with pytest.raises(UserError, match="mask_roi_size"):
        build_maskrcnn("resnet_tiny", 2, mask_roi_size=0, **SMALL)
    with pytest.raises(UserError, match="backbone weights file not found"):
        build_maskrcnn("resnet_tiny", 2, backbone_weights="/nonexistent.pth", **SMALL)


def test_the_builder_takes_the_model_config_or_changes_to_it_alike():
    """One home for a detector's settings: a backbone name with keyword changes and the config
    holding them build the same model, and the builder adds no default of its own."""
    from botnet.detection.config import DetModelConfig
    from botnet.detection.task import DetectionTask

    changes = {k: v for k, v in SMALL.items() if k != "canvas"}
    torch.manual_seed(0)
    by_name = build_maskrcnn("resnet_tiny", 2, canvas=64, mask_roi_size=7, **changes)
    cfg = DetModelConfig(name="resnet_tiny", mask_roi_size=7, **changes)
    torch.manual_seed(0)
    by_config = build_maskrcnn(cfg, 2, canvas=64)
    a, b = by_name.state_dict(), by_config.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert by_config.roi_heads.mask_roi_pool.output_size == (7, 7)
    # norm "syncbn" (the config's default) builds BatchNorm: the training run synchronizes it
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in by_config.modules())
    assert DetectionTask(DetectionConfig(model=cfg), ["a", "b"]).sync_batchnorm
    assert not DetectionTask(DetectionConfig(model=DetModelConfig(norm="bn")), ["a", "b"]).sync_batchnorm
    with pytest.raises(UserError, match="unknown key 'fpn_width'"):
        build_maskrcnn("resnet_tiny", 2, fpn_width=32)
    with pytest.raises(UserError, match="num_classes"):
        build_maskrcnn(cfg, 0)
