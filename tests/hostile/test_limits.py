"""Sizes and descriptions out of range: model options, crafted metadata and size flags are refused by
name before anything is allocated or written (botnet.limits)."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

import botnet
from botnet.errors import UserError
from botnet.limits import MAX_ACTIVATION_BYTES, MAX_PARAMETERS, estimate_model
from botnet.models import create_model, get_model_config, list_models
from botnet.weights import read_metadata, save_weights
from tests.hostile.support import CLS_FAST, listing, run_cli


@pytest.fixture
def tiny_weights(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(create_model("resnet_tiny", num_classes=3), path,
                 {"task": "cls", "class_names": ["a", "b", "c"], "img_size": [64, 64]})
    return path


def _crafted(path, out, change=None, config=None, whole=None):
    meta = read_metadata(path)
    meta.update(change or {})
    meta["config"].update(config or {})
    save_file(load_file(str(path)), str(out), metadata={"botnet": json.dumps(meta if whole is None else whole)})
    return out


def test_every_preset_fits_the_budget():
    for name in list_models():
        params, activations = estimate_model(get_model_config(name))
        assert 0 < params < MAX_PARAMETERS and 0 < activations < MAX_ACTIVATION_BYTES, name


@pytest.mark.parametrize("options, message", [
    ("{widths: [1048576, 1048576, 1048576, 1048576]}", r"model\.options\.widths=.*at most 16384"),
    ("{layers: [100000, 1, 1, 1]}", r"model\.options\.layers=.*at most 1000"),
    ("{heads: 0}", r"model\.options\.heads=0: must be at least 1"),
    ("{heads: 3}", r"model\.options\.heads=3: the attention width 128 of stage 3 must be a multiple"),
    ("{act: swish}", r"model\.options\.act='swish': must be one of relu, silu, gelu"),
    # the input size is data.img_size (bounded there), one key per setting
    ("{img_size: [100000, 100000]}", r"model\.options=.*must not hold img_size: it is set as data\.img_size"),
    ("{layers: abc}", r"model\.options=.*layers='abc': must be a list of integers"),
    ("{widths: [640, 640, 640, 640], layers: [900, 900, 900, 900]}", r"parameters, over the budget"),
])
def test_model_options_out_of_range_are_refused_before_training(capsys, colour_copy, tmp_path, options, message):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "cls", "--data", colour_copy, "--out", out, *CLS_FAST,
                        "--set", f"model.options={options}")
    assert code == 2 and __import__("re").search(message, err), err
    assert listing(out) == []


def test_recipe_with_model_options_out_of_range_names_the_file(capsys, colour_copy, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name: botnet_s1_tiny\n  options: {heads: -4}\n")
    code, err = run_cli(capsys, "train", "cls", "--config", recipe, "--data", colour_copy, "--out", tmp_path / "run")
    assert code == 2 and "r.yaml" in err and "model.options.heads=-4" in err


def test_detector_options_are_checked_too():
    from botnet.detection.config import DetModelConfig

    with pytest.raises(UserError, match=r"options\.c5_stride=0: must be one of 1, 2"):
        DetModelConfig(name="botnet_tiny", options={"c5_stride": 0})


def test_convert_option_out_of_range(capsys, tiny_weights, tmp_path):
    for option, message in (("layers=abc", "layers='abc': must be a list of integers"),
                            ("heads=0", "heads=0: must be at least 1"), ("widths=[2,2]", "must be a list of 4")):
        code, err = run_cli(capsys, "convert", tiny_weights, "--model", "botnet_tiny", "--set", option,
                            "--out", tmp_path / "c.safetensors")
        assert code == 2 and message in err, err
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("config", [
    {"heads": 0}, {"heads": 3, "bot_layers": [0, 0, 0, 1]}, {"heads": -4}, {"act": "nope"}, {"stem": "9x9"},
    {"group_size": 7}, {"bot_blocks": [[5], [], [], []]}, {"c5_stride": 0}, {"layers": [10**6, 1, 1, 1]},
    {"img_size": [100000, 100000]}, {"img_size": "abc"},
])
def test_crafted_model_description_in_metadata(tiny_weights, tmp_path, config):
    bad = _crafted(tiny_weights, tmp_path / "bad.safetensors", config=config)
    with pytest.raises(UserError, match=r"bad\.safetensors: the model config in the metadata is not usable "
                                        r"\(model option " + next(iter(config))):
        botnet.load(bad)


@pytest.mark.parametrize("change, message", [
    ({"crop_pct": 0}, r"crop_pct=0: must be above 0"), ({"crop_pct": float("nan")}, "crop_pct=nan: must be a finite"),
    ({"std": [0, 0, 0]}, r"std=\[0, 0, 0\]: element 0 \(0\) must be above 0"),
    ({"img_size": [0, 0]}, r"img_size=\[0, 0\]: element 0"), ({"img_size": "abc"}, "img_size='abc': must be a list"),
    ({"num_classes": "3"}, "num_classes='3': must be an integer"), ({"class_names": 5}, "class_names=5: must be a list"),
    ({"cat_ids": [1]}, "1 cat_ids for 3 class names"),
])
def test_crafted_metadata_values(capsys, tiny_weights, tmp_path, change, message):
    bad = _crafted(tiny_weights, tmp_path / "bad.safetensors", change=change)
    with pytest.raises(UserError, match="bad.safetensors: corrupt botnet metadata: " + message):
        botnet.load(bad)
    code, err = run_cli(capsys, "export", bad, "--out", tmp_path / "e.onnx", "--no-check")
    assert code == 2 and "corrupt botnet metadata" in err and not (tmp_path / "e.onnx").exists()


def test_metadata_that_is_a_list(tiny_weights, tmp_path):
    bad = _crafted(tiny_weights, tmp_path / "bad.safetensors", whole=[1, 2])
    with pytest.raises(UserError, match="corrupt botnet metadata: a list, not a mapping"):
        botnet.load(bad)


def test_crafted_detector_metadata(det_weights, tmp_path):
    meta = read_metadata(det_weights)
    cases = [({"canvas": 0}, r"canvas=0: must be at least 32"), ({"canvas": 100000}, r"canvas=100000: .*at most 4096"),
             ({"cat_ids": []}, "0 cat_ids for 1 class names"),
             ({"detector": {**meta["detector"], "options": {"heads": 0}}}, r"options\.heads=0")]
    for change, message in cases:
        bad = tmp_path / "bad.safetensors"
        save_file(load_file(str(det_weights)), str(bad), metadata={"botnet": json.dumps({**meta, **change})})
        with pytest.raises(UserError, match=message):
            botnet.load(bad)


@pytest.mark.parametrize("argv, message", [
    (["--opset", "99"], "argument --opset: must be at least 11 and at most 23, got 99"),
    (["--opset", "1"], "argument --opset: must be at least 11"),
    (["--num-classes", "-1"], "argument --num-classes: must be at least 1 and at most 100000, got -1"),
    (["--num-classes", "1000000000"], "argument --num-classes: must be at least 1 and at most 100000"),
    (["--img-size", "20000", "20000"], "argument --img-size: must be at least 1 and at most 4096, got 20000"),
    (["--img-size", "8", "100000"], "argument --img-size: must be at least 1 and at most 4096, got 100000"),
])
def test_export_flags_out_of_range(capsys, tmp_path, argv, message):
    code, err = run_cli(capsys, "export", "resnet_tiny", "--out", tmp_path / "m.onnx", *argv)
    assert code == 2 and message in err
    assert listing(tmp_path) == []


def test_export_opset_for_the_wrong_exporter_is_refused_by_the_library(tmp_path):
    pytest.importorskip("onnx")
    from botnet.export import export_model

    with pytest.raises(UserError, match="--opset 17: classifiers and backbones export to ONNX opsets 18 to 23"):
        export_model("resnet_tiny", tmp_path / "m.onnx", opset=17, check=False)
    with pytest.raises(UserError, match="--num-classes -1"):
        export_model("resnet_tiny", tmp_path / "m.onnx", num_classes=-1)
    assert listing(tmp_path) == []


def test_convert_negative_num_classes(capsys, tiny_weights, tmp_path):
    code, err = run_cli(capsys, "convert", tiny_weights, "--model", "resnet_tiny", "--num-classes", "-3",
                        "--out", tmp_path / "c.safetensors")
    assert code == 2 and "argument --num-classes: must be at least 0" in err
    assert not (tmp_path / "c.safetensors").exists()


def test_data_shapes_size_upper_bound(capsys, tmp_path):
    code, err = run_cli(capsys, "data", "shapes", tmp_path / "d", "--img-size", "60000")
    assert code == 2 and "argument --img-size: must be at least 32 and at most 4096, got 60000" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("argv, message", [
    (["data", "stats", "--ann", "x.json", "--img-size", "100000"],
     "argument --img-size: must be at least 32 and at most 4096"),
    (["profile", "resnet_tiny", "--img-size", "100000"], "argument --img-size: must be at least 1 and at most 4096"),
    (["profile", "resnet_tiny", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
])
def test_other_size_flags_have_bounds(capsys, argv, message):
    code, err = run_cli(capsys, *argv)
    assert code == 2 and message in err
