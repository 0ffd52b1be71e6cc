"""The shipped detection recipes: each one documented, and the small-data fine-tuning recipe as
docs/detection.md describes it (built here without fetching anything: no weights)."""
from __future__ import annotations

from pathlib import Path

import pytest
from torchvision.ops import FrozenBatchNorm2d

from botnet.detection.config import DetectionConfig
from botnet.engine.config import load_config, to_dict
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
                      ["model.name=botnet_tiny", "model.backbone_weights=null", "data.img_size=128"])
    model = build_maskrcnn(cfg.model, 1, canvas=cfg.data.img_size)
    body = model.backbone.body
    assert any(isinstance(x, FrozenBatchNorm2d) for x in body.modules())
    frozen = [p.requires_grad for mod in body.stem_modules for p in mod.parameters()]
    frozen += [p.requires_grad for p in body.stages[0].parameters()]
    assert frozen and not any(frozen)
    assert all(p.requires_grad for p in body.stages[1].parameters())


# --- the recipe chosen from the data when none is named -------------------------------------------

def coco_file(path, images: int):
    import json

    path.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8}
                                           for i in range(images)], "annotations": [],
                                "categories": [{"id": 1, "name": "x"}]}))
    return path


def chosen(ann, *overrides, limit=None):
    from botnet.detection.api import SMALL_DATASET, choose_recipe

    cfg = load_config(DetectionConfig, None, [f"data.train_ann={ann}", *overrides])
    return choose_recipe(cfg, limit or SMALL_DATASET)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Torch hub and Hugging Face caches with nothing in them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_under_the_threshold_a_model_without_cached_weights_trains_from_scratch(tmp_path, empty_caches):
    ann = coco_file(tmp_path / "train.json", 40)
    choice = chosen(ann, "model.name=botnet50")
    assert choice.name == "det_scratch_small" and "40 training images (under 1,000)" in choice.reason
    assert "not in the cache" in choice.reason
    assert chosen(ann, "model.name=botnet50", limit=40).name == DetectionConfig.recipe  # 40 is not under 40
    assert chosen(ann, "model.name=botnet50", limit=41).name == "det_scratch_small"
    tiny = chosen(ann, "model.name=botnet_tiny")
    assert tiny.name == "det_scratch_small" and "no ImageNet weights exist" in tiny.reason
    scratch = load_config(DetectionConfig, "det_scratch_small")
    small = load_config(DetectionConfig, "det_finetune_small")
    assert scratch.model.backbone_weights is None and scratch.model.norm == "bn" and scratch.model.freeze_at == 0
    # the schedule, clipping, RoI counts and best-keeping evaluation are the small-data recipe's
    for section in ("train", "optim", "schedule", "eval", "checkpoint", "data"):
        assert getattr(scratch, section) == getattr(small, section), section
    assert {k: v for k, v in to_dict(scratch.model).items() if k not in ("backbone_weights", "norm", "freeze_at")} \
        == {k: v for k, v in to_dict(small.model).items() if k not in ("backbone_weights", "norm", "freeze_at")}


def test_cached_or_given_weights_fine_tune(tmp_path, empty_caches):
    from botnet.weights.pretrained import imagenet_cache_file

    ann = coco_file(tmp_path / "train.json", 40)
    assert chosen(ann, "model.name=resnet50", "model.backbone_weights=w.pth").name == "det_finetune_small"
    file, present = imagenet_cache_file("resnet50")
    assert not present and str(empty_caches) in str(file)
    file.parent.mkdir(parents=True)
    file.write_bytes(b"")  # only its presence is looked at: nothing is read to choose
    choice = chosen(ann, "model.name=resnet50")
    assert choice.name == "det_finetune_small" and str(file) in choice.reason


def test_large_or_unreadable_training_sets_keep_the_default(tmp_path, empty_caches):
    assert chosen(coco_file(tmp_path / "big.json", 1000)).name == DetectionConfig.recipe
    (tmp_path / "bad.json").write_text("{not json")
    assert chosen(tmp_path / "bad.json").name == DetectionConfig.recipe
    assert chosen(tmp_path / "missing.json").name == DetectionConfig.recipe


def test_the_cli_names_the_recipe_first_and_where_imagenet_weights_go(tmp_path, empty_caches, capsys):
    from botnet.cli import build_cli
    from botnet.cli.det import train_overrides
    from botnet.cli.run_args import run_config
    from botnet.detection.api import choose_recipe, random_backbone_hint
    from botnet.weights.pretrained import imagenet_cache_file

    ann = coco_file(tmp_path / "train.json", 12)
    parse = build_cli().parser.parse_args
    args = parse(["train", "det", "--data", str(tmp_path), "--ann", str(ann), "--model", "botnet50",
                  "--out", str(tmp_path / "run"), "--norm", "frozen"])
    cfg = run_config(DetectionConfig, args, train_overrides(args), choose_recipe)
    assert capsys.readouterr().err.startswith("recipe det_scratch_small: chosen from the data: 12 training images")
    assert cfg.model.norm == "frozen" and cfg.model.box_batch_size == 128  # the flag wins, the recipe fills the rest
    hint = random_backbone_hint(cfg.model)
    assert "--backbone-weights imagenet" in hint and str(imagenet_cache_file("botnet50")[0]) in hint
    args = parse(["train", "det", "--data", str(tmp_path), "--ann", str(ann), "--out", str(tmp_path / "run"),
                  "--config", "det_24ep"])
    assert run_config(DetectionConfig, args, train_overrides(args), choose_recipe).train.epochs == 24
    assert capsys.readouterr().err == ""
