"""Every task's defaults are a shipped recipe, and a recipe chosen from the data still yields to
the user's settings (botnet.engine.recipes)."""
import pytest

from botnet.classification.config import ClassificationConfig
from botnet.detection.config import DetectionConfig
from botnet.engine.config import load_config, to_dict
from botnet.engine.recipes import RecipeChoice, choose_run_config


@pytest.mark.parametrize("cls", [ClassificationConfig, DetectionConfig])
def test_the_default_config_is_its_named_recipe(cls):
    assert cls.recipe
    assert to_dict(load_config(cls, cls.recipe)) == to_dict(cls())


def test_the_imagenet_default_scales_the_rate_and_warms_up():
    cfg = ClassificationConfig()
    assert cfg.optim.name == "sgd" and cfg.optim.base_batch == 256 and cfg.optim.lr == 0.1
    assert cfg.schedule.warmup_epochs == 5 and 0 < cfg.schedule.max_warmup_fraction < 1


def test_the_rule_sees_the_flags_and_the_flags_win_over_its_recipe():
    seen = []

    def rule(cfg):
        seen.append((cfg.data.root, cfg.model.name))
        return RecipeChoice("cls_small", "because")

    cfg, choice = choose_run_config(ClassificationConfig, ["data.root=D", "model.name=resnet_tiny",
                                                           "optim.lr=0.5"], rule)
    assert seen == [("D", "resnet_tiny")] and choice.name == "cls_small"
    small = load_config(ClassificationConfig, "cls_small")
    assert cfg.optim.name == small.optim.name == "adamw" and cfg.data.img_size == small.data.img_size
    assert cfg.optim.lr == 0.5 and cfg.model.name == "resnet_tiny" and cfg.data.root == "D"


def test_the_line_names_recipe_reason_and_flag():
    line = RecipeChoice("det_scratch_small", "12 training images", "docs/detection.md").line()
    assert line == ("recipe det_scratch_small: 12 training images; --config NAME picks another "
                    "(docs/detection.md)")
