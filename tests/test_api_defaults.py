"""The Python API and the command line default to the same settings: a function called with no
options does what the command does with no flags."""
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
from botnet.export import export_model
from botnet.weights.builder import convert_weights

EVAL_CLS = ["eval", "cls", "--data", "d", "--weights", "w"]
EVAL_DET = ["eval", "det", "--data", "d", "--ann", "a.json", "--weights", "w"]

# (a command line that parses, the function it calls, {flag destination: parameter})
PAIRS = [
    (EVAL_CLS, evaluate_classifier, {"batch_size": "batch_size", "workers": "workers", "device": "device",
                                     "amp": "amp", "split": "split", "strict": "strict", "img_size": "img_size"}),
    (EVAL_DET, evaluate_detector, {"batch_size": "batch_size", "workers": "workers", "device": "device",
                                   "amp": "amp", "strict": "strict", "img_size": "canvas"}),
    (EVAL_CLS, evaluate, {"amp": "amp"}),
    (["predict", "det", "x.png", "--weights", "w", "--out", "o"], predict_images,
     {"score_thresh": "score_thresh", "device": "device", "img_size": "canvas"}),
    (["predict", "det", "x.png", "--weights", "w", "--out", "o"], Predictor.predict, {"score_thresh": "score_thresh"}),
    (["predict", "cls", "x.png", "--weights", "w"], Predictor.predict, {"topk": "topk"}),
    (["predict", "cls", "x.png", "--weights", "w"], botnet.load, {"device": "device", "img_size": "img_size"}),
    (["export", "m", "--out", "m.onnx"], export_model, {
        "format": "format", "dynamic": "dynamic", "features": "features", "model": "model",
        "num_classes": "num_classes", "opset": "opset", "img_size": "size"}),
    (["convert", "w.pth", "--model", "m", "--out", "o"], convert_weights, {
        "source": "source", "num_classes": "num_classes", "img_size": "img_size",
        "scale_pos_embed": "scale_pos_embed", "strict": "strict"}),
    (["data", "shapes", "out"], make_shapes_dataset, {"train": "train", "val": "val", "img_size": "size",
                                                      "seed": "seed"}),
    (["demo"], run_demo, {"out": "out", "train": "train", "val": "val", "epochs": "epochs", "workers": "workers",
                          "pictures": "pictures"}),
]


@pytest.mark.parametrize("argv, function, names", PAIRS, ids=[f"{' '.join(a[:2])}->{f.__qualname__}" for a, f, _ in PAIRS])
def test_python_defaults_equal_the_command_line_defaults(argv, function, names):
    args = build_cli().parser.parse_args(argv)
    params = inspect.signature(function).parameters
    for dest, param in names.items():
        assert params[param].default == getattr(args, dest), f"{function.__qualname__}({param}=) vs --{dest}"


def test_export_checks_by_default_as_the_command_does():
    args = build_cli().parser.parse_args(["export", "m", "--out", "m.onnx"])
    assert inspect.signature(export_model).parameters["check"].default is (not args.no_check)
