"""The Python API names a setting as the command line does and defaults to the same value: a
function called with no options does what the command does with no flags. Old keywords still work
with a FutureWarning; files written by earlier versions load silently."""
from __future__ import annotations

import inspect

import pytest

import botnet
from botnet.api import Predictor
from botnet.classification.api import evaluate_classifier
from botnet.cli import build_cli
from botnet.data.shapes import make_shapes_dataset
from botnet.detection.api import evaluate_detector, predict_images
from botnet.detection.demo import run_demo
from botnet.engine.evaluate import evaluate
from botnet.errors import UserError
from botnet.export import export_model
from botnet.weights.builder import convert_weights

EVAL_CLS = ["eval", "cls", "--data", "d", "--weights", "w"]
EVAL_DET = ["eval", "det", "--data", "d", "--ann", "a.json", "--weights", "w"]

# (a command line that parses, the function it calls, {flag destination: parameter})
PAIRS = [
    (EVAL_CLS, evaluate_classifier, {"batch_size": "batch_size", "workers": "workers", "device": "device",
                                     "amp": "amp", "split": "split", "strict": "strict", "img_size": "img_size"}),
    (EVAL_DET, evaluate_detector, {"batch_size": "batch_size", "workers": "workers", "device": "device",
                                   "amp": "amp", "strict": "strict", "img_size": "img_size"}),
    (EVAL_CLS, evaluate, {"amp": "amp"}),
    (["predict", "det", "x.png", "--weights", "w", "--out", "o"], predict_images,
     {"score_thresh": "score_thresh", "device": "device", "img_size": "img_size"}),
    (["predict", "det", "x.png", "--weights", "w", "--out", "o"], Predictor.predict, {"score_thresh": "score_thresh"}),
    (["predict", "cls", "x.png", "--weights", "w"], Predictor.predict, {"topk": "topk"}),
    (["predict", "cls", "x.png", "--weights", "w"], botnet.load, {"device": "device", "img_size": "img_size"}),
    (["export", "m", "--out", "m.onnx"], export_model, {
        "format": "format", "dynamic": "dynamic", "features": "features", "model": "model",
        "num_classes": "num_classes", "opset": "opset", "img_size": "img_size"}),
    (["convert", "w.pth", "--model", "m", "--out", "o"], convert_weights, {
        "source": "source", "num_classes": "num_classes", "img_size": "img_size",
        "scale_pos_embed": "scale_pos_embed", "strict": "strict"}),
    (["data", "shapes", "out"], make_shapes_dataset, {"train": "train", "val": "val", "img_size": "img_size",
                                                      "seed": "seed"}),
    (["demo"], run_demo, {"out": "out", "train": "train", "val": "val", "epochs": "epochs", "workers": "workers",
                          "pictures": "pictures"}),
]


@pytest.mark.parametrize("argv, function, names", PAIRS,
                         ids=[f"{' '.join(a[:2])}->{f.__qualname__}" for a, f, _ in PAIRS])
def test_python_defaults_equal_the_command_line_defaults(argv, function, names):
    args = build_cli().parser.parse_args(argv)
    params = inspect.signature(function).parameters
    for dest, param in names.items():
        assert params[param].default == getattr(args, dest), f"{function.__qualname__}({param}=) vs --{dest}"


def test_export_checks_by_default_as_the_command_does():
    args = build_cli().parser.parse_args(["export", "m", "--out", "m.onnx"])
    assert inspect.signature(export_model).parameters["check"].default is (not args.no_check)


# (function, its required arguments, old keyword, new keyword)
OLD_KEYWORDS = [
    (evaluate_detector, ("images", "ann.json", "missing.safetensors"), "canvas", "img_size"),
    (predict_images, (["x.png"], "missing.safetensors", "out"), "canvas", "img_size"),
]


@pytest.mark.parametrize("function, required, old, new", OLD_KEYWORDS, ids=[f.__name__ for f, *_ in OLD_KEYWORDS])
def test_an_old_python_keyword_still_works_with_a_warning_naming_the_new_one(function, required, old, new):
    assert new in inspect.signature(function).parameters
    with pytest.warns(FutureWarning, match=f"{old}=.*use {new}="):
        with pytest.raises(UserError, match="missing.safetensors"):  # the file is read after the keyword
            function(*required, **{old: 256})


def test_export_takes_img_size_and_its_old_name(tmp_path):
    new = export_model("resnet_tiny", tmp_path / "new.onnx", img_size=64, check=False)
    with pytest.warns(FutureWarning, match="size=.*use img_size="):
        old = export_model("resnet_tiny", tmp_path / "old.onnx", size=(64, 64), check=False)
    assert new.input_shape == old.input_shape == [1, 3, 64, 64]


def test_the_model_input_size_is_img_size_and_its_old_name_still_works():
    import warnings

    from botnet.models import ModelConfig, create_model, get_model_config

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name: no warning
        assert create_model("resnet_tiny", num_classes=2, img_size=96).cfg.img_size == (96, 96)
    with pytest.warns(FutureWarning, match="input_size is deprecated; use img_size"):
        assert create_model("resnet_tiny", num_classes=2, input_size=(96, 80)).cfg.img_size == (96, 80)
    old = {**get_model_config("resnet_tiny").to_dict(), "input_size": [80, 80]}
    old.pop("img_size")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config of a file written by an earlier version: silent
        assert ModelConfig.from_dict(old).img_size == (80, 80)


def test_the_shapes_generator_takes_img_size_and_its_old_name(tmp_path):
    import json

    with pytest.warns(FutureWarning, match="size=.*use img_size="):
        old = make_shapes_dataset(tmp_path / "old", train=1, val=0, size=40)
    new = make_shapes_dataset(tmp_path / "new", train=1, val=0, img_size=40)
    for paths in (old, new):
        images = json.loads(paths["train_ann"].read_text())["images"]
        assert [(im["height"], im["width"]) for im in images] == [(40, 40)]


def test_a_weights_file_of_an_earlier_version_loads_silently(tmp_path):
    # its config names the input size input_size: read as img_size without a warning
    import json
    import warnings

    from safetensors.torch import load_file, save_file

    from botnet.models import create_model
    from botnet.weights import read_metadata, save_weights

    path = tmp_path / "old.safetensors"
    save_weights(create_model("resnet_tiny", num_classes=2, img_size=48), path,
                 {"task": "cls", "class_names": ["a", "b"]})
    meta = read_metadata(path)
    meta["config"]["input_size"] = meta["config"].pop("img_size")
    save_file(load_file(str(path)), str(path), metadata={"botnet": json.dumps(meta)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor = botnet.load(path, device="cpu")
    assert predictor.config.img_size == (48, 48) and predictor.img_size == (48, 48)
