"""Weights files shared by the deployment tests (tiny models, written once per session)."""
import dataclasses

import pytest
import torch

from botnet.models import create_model
from botnet.weights import save_weights

CLASS_NAMES = ["circle", "square", "triangle"]
#: a small detector: the heads are narrow so that building, running and exporting take seconds
DET_OPTIONS = dict(fpn_channels=32, box_representation=64, mask_head_channels=[32, 32], rpn_pre_nms_test=200,
                   rpn_post_nms_test=100, detections_per_img=20, score_thresh=0.0)
CANVAS = 128


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine terms (the zero-initialised last BN would otherwise
    hide whole residual branches from the comparisons)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def randomise_for_comparison(model: torch.nn.Module) -> torch.nn.Module:
    """Weights under which every part of the network shows in its output, as after training:
    random BN terms (see above), and q, k, v projections of unit scale (the init's N(0, 0.01)
    makes attention nearly uniform and its output nearly zero)."""
    from botnet.layers.attention import MHSA2d

    _randomise_norms(model)
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, MHSA2d):
            with torch.no_grad():
                w = m.qkv.weight
                w.copy_(torch.randn(w.shape, generator=g) * w.shape[1] ** -0.5)
    return model


def assert_branches_live(model: torch.nn.Module, *inputs, floor: float = 0.05) -> None:
    """Every BatchNorm and attention layer puts out values above ``floor`` on ``inputs``: a
    comparison of the model's outputs then covers every residual branch (a block whose last BN
    is zero adds exactly nothing, and its branch could be anything)."""
    from botnet.layers.attention import MHSA2d

    peaks: dict[str, float] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: peaks.__setitem__(
        name, max(peaks.get(name, 0.0), float(out.detach().abs().amax()))))
        for name, m in model.named_modules() if isinstance(m, (torch.nn.BatchNorm2d, MHSA2d))]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    assert peaks, "no BatchNorm or attention layer ran"
    dead = {name: peak for name, peak in peaks.items() if peak <= floor}
    assert not dead, f"layers whose output is (nearly) zero, unseen by the comparison: {dead}"


@pytest.fixture(scope="session")
def cls_weights(tmp_path_factory):
    """A botnet_tiny classifier saved as the classification task saves it."""
    torch.manual_seed(0)
    model = create_model("botnet_tiny", num_classes=len(CLASS_NAMES))
    randomise_for_comparison(model)
    path = tmp_path_factory.mktemp("cls") / "model.safetensors"
    save_weights(model, path, {"task": "cls", "class_names": CLASS_NAMES, "img_size": [128, 128],
                               "crop_pct": 0.875, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.25]})
    return path


@pytest.fixture(scope="session")
def det_weights(tmp_path_factory):
    """A tiny Mask R-CNN saved as the detection task saves it."""
    from botnet.detection.config import DetModelConfig
    from botnet.detection.maskrcnn import build_maskrcnn

    torch.manual_seed(0)
    model_cfg = DetModelConfig(name="botnet_tiny", norm="bn", **DET_OPTIONS)
    model = build_maskrcnn(model_cfg, num_classes=2, canvas=CANVAS)
    randomise_for_comparison(model)
    # Untrained heads score every anchor and box almost alike, so which ones survive top-k and NMS
    # would hinge on 1e-6 differences between runtimes; spread the scores as training does.
    with torch.no_grad():
        for layer in (model.rpn.head.cls_logits, model.roi_heads.box_predictor.cls_score):
            layer.weight.normal_(std=0.5)
    path = tmp_path_factory.mktemp("det") / "model.safetensors"
    save_weights(model, path, {"task": "det", "class_names": ["cat", "dog"], "cat_ids": [3, 7], "canvas": CANVAS,
                               "detector": dataclasses.asdict(model_cfg)})
    return path
