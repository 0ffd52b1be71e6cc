"""One key per setting: each old key still loads into its one home, from a recipe file and from an
override, with one deprecation line; an earlier run's saved config loads without a word."""
from __future__ import annotations

import pytest
import yaml

from botnet.classification.config import ClassificationConfig, ClsModelConfig
from botnet.classification.task import ClassificationTask
from botnet.detection.config import DetectionConfig
from botnet.detection.task import DetectionTask
from botnet.engine.config import load_config, save_config, to_dict
from botnet.engine.renamed_keys import deprecated_key_line
from botnet.errors import UserError

# (config class, old key, its value, new key, the value the new key gets)
RENAMES = [
    (ClassificationConfig, "model.options.input_size", [96, 96], "data.img_size", 96),
    (ClassificationConfig, "model.options.input_size", 96, "data.img_size", 96),
    (ClassificationConfig, "model.options.drop_rate", 0.3, "model.drop_rate", 0.3),
    (ClassificationConfig, "model.options.drop_path_rate", 0.2, "model.drop_path_rate", 0.2),
    (ClassificationConfig, "dist.sync_bn", True, "model.norm", "syncbn"),
    (DetectionConfig, "dist.sync_bn", True, "model.norm", "syncbn"),
    (DetectionConfig, "data.canvas", 640, "data.img_size", 640),
]
IDS = [f"{c.task}:{old}={v}" for c, old, v, _, _ in RENAMES]


def nested(dotted: str, value) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def start_from_bn(cls) -> list[str]:
    # a detector's default is already syncbn: start from bn so that the old key has something to do
    return ["model.norm=bn"] if cls is DetectionConfig else []


@pytest.mark.parametrize("cls, old, value, new, expected", RENAMES, ids=IDS)
def test_new_key_loads_silently(tmp_path, capsys, cls, old, value, new, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(nested(new, expected)))
    cfg = load_config(cls, recipe, start_from_bn(cls) if new != "model.norm" else [])
    assert get(cfg, new) == expected
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cls, old, value, new, expected", RENAMES, ids=IDS)
def test_old_key_in_a_recipe_loads_with_one_line(tmp_path, capsys, cls, old, value, new, expected):
    recipe = tmp_path / "r.yaml"
    base = {"model": {"norm": "bn"}} if cls is DetectionConfig else {}
    data = nested(old, value)
    data.setdefault("model", {}).update(base.get("model", {}))
    recipe.write_text(yaml.safe_dump(data))
    assert get(load_config(cls, None, start_from_bn(cls)), new) != expected  # the old key is what changes it
    cfg = load_config(cls, recipe)
    assert get(cfg, new) == expected
    assert capsys.readouterr().err.splitlines() == [deprecated_key_line(old, new)]


@pytest.mark.parametrize("cls, old, value, new, expected", RENAMES, ids=IDS)
def test_old_key_as_an_override_loads_with_one_line(capsys, cls, old, value, new, expected):
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    cfg = load_config(cls, None, start_from_bn(cls) + [f"{old}={text}"])
    assert get(cfg, new) == expected
    assert capsys.readouterr().err.splitlines() == [deprecated_key_line(old, new)]


@pytest.mark.parametrize("cls", [ClassificationConfig, DetectionConfig])
def test_a_saved_config_of_an_earlier_version_loads_silently(tmp_path, capsys, cls):
    saved = to_dict(cls())
    saved["dist"]["sync_bn"] = False  # every earlier run wrote it
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"task": cls.task, **saved}))
    assert load_config(cls, path) == cls()
    assert capsys.readouterr().err == ""
    save_config(load_config(cls, path), tmp_path / "again.yaml")
    assert "sync_bn" not in (tmp_path / "again.yaml").read_text()  # written with the new keys only


def test_the_old_sync_bn_key_leaves_a_frozen_backbone_frozen(capsys):
    cfg = load_config(DetectionConfig, None, ["model.norm=frozen", "dist.sync_bn=true"])
    assert cfg.model.norm == "frozen"


def test_syncbn_is_the_model_norm_for_both_tasks():
    cls_cfg = load_config(ClassificationConfig, None, ["model.norm=syncbn"])
    assert ClassificationTask(cls_cfg, ["a", "b"]).sync_batchnorm
    assert not ClassificationTask(ClassificationConfig(), ["a", "b"]).sync_batchnorm
    assert DetectionTask(DetectionConfig(), ["a"]).sync_batchnorm  # the paper's detector default


def test_a_key_with_its_own_home_is_refused_in_model_options():
    with pytest.raises(UserError, match="data.img_size"):
        ClsModelConfig(options={"input_size": [64, 64]})
    with pytest.raises(UserError, match="model.drop_rate"):
        ClsModelConfig(options={"drop_rate": 0.1})


def test_a_non_square_input_size_names_the_new_key():
    with pytest.raises(UserError, match="data.img_size"):
        load_config(ClassificationConfig, None, ["model.options.input_size=[64, 96]"])


def test_the_old_detector_input_size_says_the_canvas_sizes_the_backbone(capsys):
    cfg = load_config(DetectionConfig, None, ["model.options={input_size: [64, 64], stem_width: 16}"])
    assert cfg.model.options == {"stem_width": 16} and cfg.data.img_size == DetectionConfig().data.img_size
    assert capsys.readouterr().err.splitlines() == [deprecated_key_line("model.options.input_size", "data.img_size")]
