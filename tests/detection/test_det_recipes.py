"""The shipped detection recipes: each one documented, and the small-data fine-tuning recipe as
docs/detection.md describes it (built here without fetching anything: no weights)."""
from __future__ import annotations

from pathlib import Path

import pytest
from torchvision.ops import FrozenBatchNorm2d

from botnet.detection.config import DetectionConfig
from botnet.engine.config import load_config
from botnet.engine.optim import effective_lr, lr_factor

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.stem for p in (ROOT / "src" / "botnet" / "configs").glob("det_*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_detection_recipe_is_in_the_docs(recipe):
    assert f"`{recipe}`" in (ROOT / "docs" / "detection.md").read_text()


def test_the_small_data_recipe_fine_tunes_with_fractions_of_the_run():
    cfg = load_config(DetectionConfig, "det_finetune_small")
    m = cfg.model
    assert m.backbone_weights == "imagenet" and m.norm == "frozen" and m.freeze_at in (1, 2)
    assert m.box_batch_size <= 256 and m.rpn_post_nms_train <= 1000 and m.rpn_post_nms_test <= 500
    assert cfg.train.clip_grad_norm and cfg.amp.dtype == "auto"
    assert cfg.eval.every_epochs and cfg.checkpoint.keep_best
    assert effective_lr(cfg.optim, 4) == pytest.approx(0.005)
    # 36 images at batch 4 for 24 epochs: 216 steps, the warmup a tenth of them, decays at 2/3 and 8/9
    total = 9 * 24
    factors = [lr_factor(s, total, 9, cfg.schedule) for s in range(total)]
    assert factors.index(1.0) == 21 and factors[143] == 1.0 and factors[144] == pytest.approx(0.1)
    assert factors[192] == pytest.approx(0.01)


def test_the_small_data_recipe_builds_without_weights():
    from botnet.detection.maskrcnn import build_maskrcnn

    cfg = load_config(DetectionConfig, "det_finetune_small",
                      ["model.name=botnet_tiny", "model.backbone_weights=null", "data.canvas=128"])
    model = build_maskrcnn(cfg.model.name, 1, canvas=cfg.data.canvas, **cfg.model.builder_kwargs())
    body = model.backbone.body
    assert any(isinstance(x, FrozenBatchNorm2d) for x in body.modules())
    frozen = [p.requires_grad for mod in body.stem_modules for p in mod.parameters()]
    frozen += [p.requires_grad for p in body.stages[0].parameters()]
    assert frozen and not any(frozen)
    assert all(p.requires_grad for p in body.stages[1].parameters())
