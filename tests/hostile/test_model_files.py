"""Weights files, image tensors and checkpoints that do not fit: refused by name, before any work."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

import botnet
from botnet.cli import main
from botnet.errors import UserError
from botnet.models import create_model
from botnet.weights import save_weights


@pytest.fixture
def cls_weights(tmp_path):
    model = create_model("resnet_tiny", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, {"task": "cls", "class_names": ["a", "b", "c"], "img_size": [64, 64]})
    return path


def _rewrite_metadata(path, **changes):
    # a header crafted by hand: same tensors, another description
    from safetensors.torch import load_file, save_file

    from botnet.weights import read_metadata

    meta = read_metadata(path)
    meta["config"].update(changes)
    save_file(load_file(str(path)), str(path), metadata={"botnet": json.dumps(meta)})


def test_crafted_safetensors_metadata_with_huge_widths(cls_weights):
    # widths=[2**20]*4 described a model of ~39 TB: refused from the header by its range, before allocating
    _rewrite_metadata(cls_weights, widths=[2**20] * 4)
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"metadata is not usable \(model option widths=.*at most 16384"):
            botnet.load(cls_weights)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20
    assert main(["predict", "cls", str(cls_weights), "--weights", str(cls_weights)]) == 2


def test_crafted_metadata_with_widths_in_range_but_not_the_files(cls_weights):
    # within every range, yet another model than the tensors: compared on the meta device
    _rewrite_metadata(cls_weights, widths=[2048] * 4)
    with pytest.raises(UserError, match=r"(?s)does not fit the tensors in the file.*layer1\.0\.conv1\.weight"):
        botnet.load(cls_weights)


def test_crafted_metadata_with_another_depth(cls_weights):
    _rewrite_metadata(cls_weights, layers=[1, 1, 1, 2])
    with pytest.raises(UserError, match="does not fit|missing"):
        botnet.load(cls_weights)


@pytest.mark.parametrize("tensor, message", [
    (torch.full((3, 32, 32), 200.0), r"finite values in \[0, 1\], got 200\.\.200"),
    (torch.full((3, 32, 32), -0.5), r"finite values in \[0, 1\]"),
    (torch.full((3, 32, 32), float("nan")), "NaN"),
    (torch.full((3, 32, 32), 7, dtype=torch.int64), "uint8 .* or floating point .*got torch.int64"),
])
def test_predictor_image_tensor_outside_the_contract(cls_weights, tensor, message):
    predictor = botnet.load(cls_weights)
    with pytest.raises(UserError, match=message):
        predictor.predict(tensor)


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 32, 32), np.uint8), r"\(H, W\) or \(H, W, C\) with 1 or 3 channels, got shape \(3, 32, 32\)"),
    (np.zeros((32, 32, 3), np.int64), "numpy image must be uint8 .* or floating point .*got int64"),
    (np.full((32, 32, 3), 200.0), r"finite values in \[0, 1\], got 200\.\.200"),
])
def test_predictor_and_letterbox_numpy_image_outside_the_contract(cls_weights, array, message):
    from botnet.api import letterbox

    predictor = botnet.load(cls_weights)
    with pytest.raises(UserError, match=message):
        predictor.predict(array)
    with pytest.raises(UserError, match=message):
        letterbox(array, 64)


def test_predictor_uint8_and_float_tensors_of_one_image_agree(cls_weights):
    predictor = botnet.load(cls_weights)
    pixels = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    a, b = predictor.predict([pixels, pixels.float() / 255], topk=3)
    assert a.indices == b.indices and a.probs == pytest.approx(b.probs, abs=5e-3)  # 8-bit resize rounding


def test_resuming_a_detection_run_as_classification(tmp_path):
    from botnet.detection.config import DetectionConfig
    from botnet.engine.checkpoint import step_path
    from botnet.engine.config import save_config

    run = tmp_path / "det_run"
    save_config(DetectionConfig(), run / "config.yaml")
    step_path(run, 8).parent.mkdir(parents=True)
    step_path(run, 8).write_bytes(b"")  # never read: the config is refused first
    with pytest.raises(UserError, match=r"config of a 'det' run.*botnet train det"):
        from botnet.classification.config import ClassificationConfig
        from botnet.engine.config import resolve_run_config

        resolve_run_config(ClassificationConfig, resume=run)
    assert main(["train", "cls", "--resume", str(run)]) == 2
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "config.yaml", "step_00000008.pt"]
