"""Attention pictures: the maps are the layer's own softmax, per head and query; the command draws
them for classification and detection weights."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import botnet
from botnet.cli import main
from botnet.layers.pos_embed import rel_table_for_length
from botnet.models import create_model
from botnet.viz import attention_layers, attention_maps, layer_attention
from botnet.weights import save_weights


def _model():
    torch.manual_seed(0)
    model = create_model("botnet_s1_tiny", num_classes=3, img_size=64).eval()
    for m in attention_layers(model):
        with torch.no_grad():  # unit-scale projections and tables: maps far from uniform
            m.qkv.weight.normal_(std=m.dim ** -0.5)
            m.rel_h.normal_()
            m.rel_w.normal_()
    return model


def _by_hand(layer, x, r, c, term):
    # the paper's logits for one query, from the layer's own q, k and tables, as plain loops
    height, width = x.shape[-2:]
    qkv = torch.nn.functional.conv2d(x, layer.qkv.weight)[0].reshape(3, layer.heads, layer.dim_head, height, width)
    rh, rw = rel_table_for_length(layer.rel_h, height), rel_table_for_length(layer.rel_w, width)
    out = torch.zeros(layer.heads, height, width)
    for h in range(layer.heads):
        q = qkv[0, h, :, r, c]
        logits = torch.zeros(height, width)
        for a in range(height):
            for b in range(width):
                pos = q @ (rh[a - r + height - 1] + rw[b - c + width - 1]) * layer.pos_scale
                logits[a, b] = pos + (layer.scale * q @ qkv[1, h, :, a, b] if term == "full" else 0.0)
        out[h] = logits.flatten().softmax(0).reshape(height, width)
    return out


@pytest.mark.parametrize("term", ["full", "position"])
def test_maps_are_the_layers_softmax_and_sum_to_one(term):
    model = _model()
    image = torch.randn(3, 64, 48)
    maps, points = attention_maps(model, image, [(5.0, 7.0), (40.0, 60.0)], layer=0, term=term)
    layer = attention_layers(model)[0]
    captured = []
    handle = layer.register_forward_hook(lambda m, a, o: captured.append(a[0]))
    with torch.no_grad():
        model.forward_features(image[None])
    handle.remove()
    x = captured[0]
    height, width = x.shape[-2:]
    assert maps.shape == (2, layer.heads, height, width)
    torch.testing.assert_close(maps.sum((-1, -2)), torch.ones(2, layer.heads))
    for i, (px, py) in enumerate(points):
        r, c = int(py * height / 64), int(px * width / 48)
        torch.testing.assert_close(maps[i], _by_hand(layer, x, r, c, term), rtol=1e-4, atol=1e-5)


def test_position_term_alone_differs_from_the_full_softmax():
    model = _model()
    layer = attention_layers(model)[-1]
    x = torch.randn(1, layer.dim, 4, 4)
    full = layer_attention(layer, x, [(1, 2)], "full")
    position = layer_attention(layer, x, [(1, 2)], "position")
    assert not torch.allclose(full, position, atol=1e-3)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(0)
    image = np.zeros((90, 120, 3), np.uint8)
    image[20:60, 30:90] = (220, 40, 40)
    image += rng.integers(0, 30, image.shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(image).save(path)
    return path


def _check_picture(out, stem):
    picture = np.asarray(Image.open(out / f"{stem}_attention.png").convert("L"), dtype=np.float32)
    assert picture.shape[0] > 100 and picture.std() > 10  # drawn, not blank
    return json.loads((out / f"{stem}_attention.json").read_text())


def test_attention_command_with_classification_weights(photo, tmp_path):
    weights = tmp_path / "cls.safetensors"
    save_weights(_model(), weights, {"task": "cls", "class_names": ["a", "b", "c"], "img_size": [64, 64]})
    assert main(["attention", str(photo), "--weights", str(weights), "--out", str(tmp_path / "o")]) == 0
    info = _check_picture(tmp_path / "o", "photo")
    assert info["term"] == "full" and len(info["points"]) >= 1
    assert main(["attention", str(photo), "--weights", str(weights), "--points", "10,20", "30,40", "--position",
                 "--layer", "0", "--out", str(tmp_path / "p")]) == 0
    assert _check_picture(tmp_path / "p", "photo")["points"] == [[10.0, 20.0], [30.0, 40.0]]
    assert main(["attention", str(photo), "--weights", str(weights), "--points", "500,20",
                 "--out", str(tmp_path / "q")]) == 2  # outside the model input: refused by name
    assert main(["attention", str(photo), "--weights", str(weights), "--layer", "9",
                 "--out", str(tmp_path / "q")]) == 2


def test_attention_command_with_detection_weights(photo, tmp_path):
    from botnet.detection.config import DetModelConfig
    from botnet.detection.maskrcnn import build_maskrcnn
    from botnet.engine.config import to_dict

    cfg = DetModelConfig(name="botnet_tiny", fpn_channels=32, box_representation=64, mask_head_channels=[32])
    model = build_maskrcnn(cfg, 2, canvas=96)
    weights = tmp_path / "det.safetensors"
    save_weights(model, weights, {"task": "det", "class_names": ["x", "y"], "canvas": 96, "detector": to_dict(cfg)})
    assert main(["attention", str(photo), "--weights", str(weights), "--out", str(tmp_path / "o")]) == 0
    _check_picture(tmp_path / "o", "photo")
    predictor = botnet.load(weights)
    from botnet.viz import model_input

    x, picture = model_input(predictor, photo)
    assert x.shape == (3, 72, 96) and picture.dtype == torch.uint8  # longer side resized to the canvas


def test_attention_help_names_the_files_written(capsys):
    with pytest.raises(SystemExit):
        main(["attention", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<image>_attention.json" in text and "<image>_attention.png" in text
