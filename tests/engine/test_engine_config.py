from pathlib import Path

import pytest
import yaml

from botnet.classification.config import ClassificationConfig
from botnet.engine.config import TrainConfig, load_config, parse_override, save_config, to_dict
from botnet.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "botnet" / "configs"


def test_layers_defaults_recipe_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim: {lr: 0.5, name: adamw}\nschedule: {milestones: [8, 11]}\n")
    cfg = load_config(TrainConfig, recipe, ["optim.lr=0.1", "train.clip_grad_norm=1", "schedule.name=step"])
    assert cfg.optim.lr == 0.1 and cfg.optim.name == "adamw"  # override beats recipe
    assert cfg.schedule.milestones == [8.0, 11.0] and cfg.schedule.name == "step"
    assert cfg.train.clip_grad_norm == 1.0 and isinstance(cfg.train.clip_grad_norm, float)
    assert cfg.optim.momentum == TrainConfig().optim.momentum  # untouched default


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(ClassificationConfig, overrides=["data.scale=[0.3, 1.0]", "model.options={act: silu}"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(ClassificationConfig, tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"task": "cls", **to_dict(cfg)}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "optim.lrr"),
    ("optim.lr=fast", "optim.lr"),
    ("nosection.x=1", "nosection"),
    ("optim.lr", "KEY=VALUE"),
    ("train.epochs=2.5", "train.epochs"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_config(TrainConfig, overrides=[override])


def test_unknown_key_in_recipe_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("schedule: {warmup: 3}\n")
    with pytest.raises(UserError, match=r"bad\.yaml.*schedule\.warmup"):
        load_config(TrainConfig, recipe)


def test_override_values_are_yaml():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=true") == (["a"], True)


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("cls_*.yaml")))
def test_shipped_classification_recipes_load(recipe):
    cfg = load_config(ClassificationConfig, recipe.removesuffix(".yaml"))  # by shipped name
    assert cfg.train.epochs >= 1 and cfg.model.name


def test_paper_recipes_match_the_spec():
    t = load_config(ClassificationConfig, "cls_s1_t_350ep")
    assert t.train.epochs == 350 and t.schedule.name == "cosine" and t.ema.enabled
    assert t.data.randaugment.layers > 0 and t.loss.label_smoothing > 0
    assert t.model.drop_rate > 0 and t.model.drop_path_rate > 0 and t.optim.weight_decay < 1e-4
    std100 = load_config(ClassificationConfig, "cls_standard_100ep")
    std200 = load_config(ClassificationConfig, "cls_standard_200ep")
    assert (std100.train.epochs, std200.train.epochs) == (100, 200)
    assert std100.data.randaugment.layers == 0 and std100.loss.label_smoothing == 0
    assert std200.data.randaugment.layers > 0 and std200.loss.label_smoothing > 0


def test_exponent_floats_without_a_dot():
    # YAML 1.1 reads 1e-3 as a string; float fields take it anyway
    cfg = load_config(TrainConfig, overrides=["optim.lr=1e-3", "optim.weight_decay=4e-5"])
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.weight_decay == pytest.approx(4e-5)


@pytest.mark.parametrize("override, message", [
    ("log.every_steps=0", r"log\.every_steps=0: must be at least 1"),
    ("optim.lr=-1", r"optim\.lr=-1\.0: must be above 0"),
    ("optim.betas=[0.9, 1.5]", r"optim\.betas=\(0\.9, 1\.5\): element 1"),
    ("schedule.name=linear", r"schedule\.name='linear': must be one of cosine, step, constant"),
    ("optim.betas=[0.9]", r"optim\.betas=\[0\.9\] must be a list of 2 values"),
])
def test_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(UserError, match=message):
        load_config(TrainConfig, overrides=[override])


def test_sections_built_in_code_are_checked_too():
    import dataclasses

    from botnet.classification.config import ClsDataConfig
    from botnet.engine.config import LogConfig

    with pytest.raises(UserError, match=r"img_size=-5: must be at least 1 and at most 4096"):
        ClsDataConfig(img_size=-5)
    with pytest.raises(UserError, match="every_steps=0"):
        dataclasses.replace(LogConfig(), every_steps=0)


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_recipe_is_in_range(recipe):
    from botnet.detection.config import DetectionConfig

    cls = DetectionConfig if recipe.startswith(("det_", "demo_")) else ClassificationConfig
    load_config(cls, recipe.removesuffix(".yaml"))
