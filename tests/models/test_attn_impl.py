"""``attn_impl`` is a model option: ``create_model(name, attn_impl=X)``, a run config's
``model.attn_impl`` (``--set model.attn_impl=X``) and ``model.options`` all reach every MHSA2d
layer, for every path name; the result does not depend on it."""
import pytest
import torch

import botnet
from botnet.engine.config import load_config
from botnet.errors import UserError
from botnet.layers import MHSA2d
from botnet.layers.attention import ATTN_IMPLS
from botnet.models import ModelConfig, get_model_config


def _impls(model) -> set[str]:
    return {m.attn_impl for m in model.modules() if isinstance(m, MHSA2d)}


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_create_model_sets_every_layer_and_keeps_the_result(impl):
    torch.manual_seed(0)
    reference = botnet.create_model("botnet_tiny", num_classes=3, attn_impl="bias").double().eval()
    model = botnet.create_model("botnet_tiny", num_classes=3, attn_impl=impl).double().eval()
    model.load_state_dict(reference.state_dict())
    assert _impls(model) == {impl} and len([m for m in model.modules() if isinstance(m, MHSA2d)]) > 0
    for m in reference.modules():
        if isinstance(m, MHSA2d):
            with torch.no_grad():
                m.rel_h.mul_(4)  # a position term that matters
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-9, atol=1e-9)


def test_attn_impl_is_not_part_of_the_architecture():
    cfg = get_model_config("botnet_tiny")
    flex = cfg.replace(attn_impl="flex")
    assert flex == cfg and flex.attn_impl == "flex"
    assert "attn_impl" not in flex.to_dict()  # not saved with the weights: a run-time choice
    assert ModelConfig.from_dict(flex.to_dict()).attn_impl == "auto"
    with pytest.raises(UserError, match="attn_impl 'fast': must be one of auto, chunked"):
        botnet.create_model("resnet_tiny", attn_impl="fast")


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_classification_run_config_reaches_the_layers(impl):
    from botnet.classification.config import ClassificationConfig
    from botnet.classification.task import build_classifier

    cfg = load_config(ClassificationConfig, overrides=["model.name=botnet_tiny", f"model.attn_impl={impl}"])
    assert _impls(build_classifier(cfg.model, 3, (64, 64))) == {impl}


@pytest.mark.parametrize("impl", ATTN_IMPLS)
def test_detection_run_config_reaches_the_backbone_layers(impl):
    from botnet.detection.config import DetectionConfig
    from botnet.detection.maskrcnn import build_maskrcnn

    cfg = load_config(DetectionConfig, overrides=["model.name=botnet_tiny", f"model.attn_impl={impl}",
                                                  "model.fpn_channels=16", "model.box_representation=16",
                                                  "model.mask_head_channels=[16]"])
    model = build_maskrcnn(cfg.model, 2, canvas=64)
    assert _impls(model) == {impl}


@pytest.mark.parametrize("section", ["ClassificationConfig", "DetectionConfig"])
def test_run_config_refuses_an_unknown_path_and_a_second_key(section):
    from botnet.classification.config import ClassificationConfig
    from botnet.detection.config import DetectionConfig

    cls = {"ClassificationConfig": ClassificationConfig, "DetectionConfig": DetectionConfig}[section]
    with pytest.raises(UserError, match="model.attn_impl='fast': must be one of auto, chunked, fold, bias, flex"):
        load_config(cls, overrides=["model.attn_impl=fast"])
    with pytest.raises(UserError, match="model.options=.*must not hold attn_impl: it is set as model.attn_impl"):
        load_config(cls, overrides=["model.options={attn_impl: flex}"])


def test_detection_weights_file_leaves_attn_impl_out():
    from botnet.detection.config import DetectionConfig
    from botnet.detection.task import DetectionTask

    cfg = load_config(DetectionConfig, overrides=["model.attn_impl=flex"])
    task = DetectionTask.__new__(DetectionTask)  # metadata reads only the config and the classes
    task.cfg, task.class_names, task.cat_ids = cfg, ["a"], [1]
    meta = task.metadata()
    assert "attn_impl" not in meta["detector"] and meta["detector"]["name"] == cfg.model.name
