"""Files that are not what their names say: FIFOs named *.jpg, decompression bombs, text that is
not UTF-8, YAML nested thousands deep, images without a pixel; and settings that do not parse
(environment variables, seeds, a damaged amp cache)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

import botnet
from botnet.errors import UserError
from tests.hostile.support import CLS_FAST, DET_FAST, box_ann, listing, run_cli

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")


# -- FIFOs and other files that are not regular files (they would block the reader forever) ---------


@needs_fifo
def test_fifo_named_jpg_in_a_predict_folder_is_skipped_by_name(capsys, cls_weights, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / "a.png")
    os.mkfifo(folder / "pipe.jpg")
    code, err = run_cli(capsys, "predict", "cls", folder, "--weights", cls_weights)
    assert code == 2 and "pipe.jpg: this is a FIFO (named pipe), not a regular file" in err
    assert "1 of 2 images could not be read" in err


@needs_fifo
def test_fifo_in_an_image_folder_class_is_skipped(colour_copy, tmp_path):
    from botnet.data.imagefolder import ImageFolderDataset, scan_image_folder

    os.mkfifo(colour_copy / "train" / "red" / "pipe.jpg")
    classes, splits = scan_image_folder(colour_copy)
    samples = splits["train"]
    index = [p for p, _ in samples].index(str(colour_copy / "train" / "red" / "pipe.jpg"))
    item = ImageFolderDataset(samples, classes)[index]  # would block on open()
    assert "not a regular file" in str(item)


@needs_fifo
def test_fifo_as_weights_coco_json_recipe_or_class_list(capsys, coco_set, tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    from botnet.data.coco import load_coco
    from botnet.weights import read_metadata

    with pytest.raises(UserError, match="pipe: this is a FIFO"):
        read_metadata(pipe)
    with pytest.raises(UserError, match="pipe: this is a FIFO .*a weights file must be a file"):
        botnet.load(pipe)
    with pytest.raises(UserError, match="pipe: this is a FIFO"):
        load_coco(pipe, coco_set.images)
    code, err = run_cli(capsys, "train", "cls", "--config", pipe, "--data", tmp_path, "--out", tmp_path / "run")
    assert code == 2 and "this is a FIFO" in err and not (tmp_path / "run").exists()


@needs_fifo
def test_fifo_among_coco_images_is_refused_by_name(capsys, coco_set, tmp_path):
    os.remove(coco_set.images / "b.png")
    os.mkfifo(coco_set.images / "b.png")
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--out", out,
                        *DET_FAST)
    assert code == 2 and "b.png: this is a FIFO (named pipe)" in err and listing(out) == []


# -- decompression bombs -------------------------------------------------------------------------


@pytest.fixture
def bomb_set(coco_set):
    # 20000 x 10000 one-bit pixels: a PNG of a few KB that decodes to 200 million pixels, past PIL's limit
    w, h = 20000, 10000
    Image.new("1", (w, h)).save(coco_set.images / "bomb.png")
    assert (coco_set.images / "bomb.png").stat().st_size < 2**20
    coco_set.write([box_ann(1), box_ann(2, image_id=3, bbox=(10, 10, 50, 50))],
                   images=[{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                           {"id": 3, "file_name": "bomb.png", "width": w, "height": h}])
    return coco_set


def test_decompression_bomb_in_train_det(capsys, bomb_set, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "det", "--data", bomb_set.images, "--ann", bomb_set.ann, "--out", out,
                        *DET_FAST)
    assert code == 2 and "bomb.png: Image size (200000000 pixels) exceeds limit" in err and "image id 3" in err
    assert listing(out) == []


def test_decompression_bomb_in_eval_det(capsys, bomb_set, det_weights, tmp_path):
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "det", "--data", bomb_set.images, "--ann", bomb_set.ann,
                        "--weights", det_weights, "--out", out, "--workers", "0", "--device", "cpu")
    assert code == 2 and "bomb.png: Image size (200000000 pixels) exceeds limit" in err
    assert listing(out) == []


def test_decompression_bomb_given_to_predict_is_named(cls_weights, tmp_path):
    Image.new("1", (20000, 10000)).save(tmp_path / "bomb.png")
    with pytest.raises(UserError, match="bomb.png: unreadable image .*DecompressionBombError"):
        botnet.load(cls_weights).predict(tmp_path / "bomb.png")


# -- text and YAML ---------------------------------------------------------------------------------


def test_recipe_not_utf8(capsys, colour_copy, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"optim:\n  lr: \xff\xfe0.1\n")
    code, err = run_cli(capsys, "train", "cls", "--config", recipe, "--data", colour_copy, "--out", tmp_path / "run")
    assert code == 2 and "r.yaml: this config file is not UTF-8 text (byte 0xff at position 13)" in err
    assert not (tmp_path / "run").exists()


def test_recipe_nested_5000_deep(capsys, colour_copy, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    code, err = run_cli(capsys, "train", "cls", "--config", recipe, "--data", colour_copy, "--out", tmp_path / "run")
    assert code == 2 and "r.yaml: nested deeper than 100 levels" in err
    code, err = run_cli(capsys, "train", "cls", "--data", colour_copy, "--out", tmp_path / "run",
                        "--set", "model.options=" + "[" * 5000 + "]" * 5000)
    assert code == 2 and "nested deeper than 100 levels" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["data: 5\n", "data:\n", "data: [a, b]\n", "train_ann: {x: 1}\n"])
def test_dataset_yaml_without_a_mapping_of_paths(capsys, tmp_path, text):
    spec = tmp_path / "ds.yaml"
    spec.write_text(text)
    code, err = run_cli(capsys, "train", "det", "--dataset", spec, "--out", tmp_path / "run")
    assert code == 2 and "ds.yaml: 'data' must be a mapping of train_images" in err


def test_huge_seed(capsys, colour_copy, tmp_path):
    code, err = run_cli(capsys, "train", "cls", "--data", colour_copy, "--out", tmp_path / "run", *CLS_FAST,
                        "--set", "train.seed=99999999999999999999999")
    assert code == 2 and "train.seed=99999999999999999999999: must be at least 0 and at most 4294967295" in err


def test_convert_class_list_not_utf8(capsys, cls_weights, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_bytes(b"blue\ngr\xffeen\nred\nyellow\n")
    out = tmp_path / "c.safetensors"
    code, err = run_cli(capsys, "convert", cls_weights, "--model", "botnet_s1_tiny", "--classes", names, "--out", out)
    assert code == 2 and "classes.txt: this class names file is not UTF-8 text (byte 0xff at position 7)" in err
    assert not out.exists()


# -- environment and caches ------------------------------------------------------------------------


@pytest.mark.parametrize("env, message", [
    ({"BOTNET_DOWNLOAD_TIMEOUT": "abc"}, "BOTNET_DOWNLOAD_TIMEOUT='abc': must be a number of seconds"),
    ({"BOTNET_DOWNLOAD_TIMEOUT": "-1"}, "BOTNET_DOWNLOAD_TIMEOUT='-1': must be a number of seconds"),
    ({"HTTPS_PROXY": "http://[::1"}, "HTTPS_PROXY='http://[::1': not a usable proxy address"),
])
def test_download_settings_that_do_not_parse(capsys, monkeypatch, tmp_path, env, message):
    monkeypatch.delenv("BOTNET_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import socket

    def no_network(*args, **kwargs):  # nothing may reach the network in tests
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    code, err = run_cli(capsys, "convert", "torchvision:ResNet50_Weights.IMAGENET1K_V2", "--model", "resnet50",
                        "--out", tmp_path / "c.safetensors")
    assert code == 2 and message in err


def test_wrong_typed_amp_cache_entry_is_ignored_and_rewritten(monkeypatch, tmp_path):
    import importlib

    from tests.engine.toy_task import ToyTask, toy_config

    ev = importlib.import_module("botnet.engine.evaluate")
    ac = importlib.import_module("botnet.engine.amp_choice")
    monkeypatch.setattr(ev, "native_bf16", lambda device: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ac, "step_times", lambda *a, **k: {"fp32": 0.2, "bf16": 0.1})
    task, cfg = ToyTask(), toy_config(**{"amp.dtype": "auto"})
    key = ac.cache_key(task, cfg)
    for bad in ({"amp": "bf16", "bf16": "x"}, {"amp": "bf16", "bf16": None, "fp32": 0.1}, "bf16", [1]):
        ac.cache_path().parent.mkdir(parents=True, exist_ok=True)
        ac.cache_path().write_text(json.dumps({key: bad}))
        amp, note = ac.choose_training_amp(task, task.build_model(), task.build_datasets()[0], cfg,
                                           torch.device("cpu"))
        assert amp == "bf16" and "measured:" in note
        assert json.loads(ac.cache_path().read_text())[key] == {"amp": "bf16", "fp32": 0.2, "bf16": 0.1}


# -- images without a pixel ------------------------------------------------------------------------


@pytest.mark.parametrize("item", [Image.new("RGB", (0, 0)), torch.zeros(3, 0, 0, dtype=torch.uint8),
                                  torch.zeros(3, 0, 5), torch.zeros(1, 7, 0)], ids=["pil0x0", "u8", "0x5", "7x0"])
def test_predict_on_an_image_without_a_pixel(cls_weights, det_weights, item):
    for weights in (cls_weights, det_weights):
        with pytest.raises(UserError, match=r"an image needs at least one pixel, got \d+ x \d+"):
            botnet.load(weights).predict(item)


def test_predict_on_a_meta_tensor(cls_weights, det_weights):
    for weights in (cls_weights, det_weights):
        with pytest.raises(UserError, match="a meta tensor holds no pixels"):
            botnet.load(weights).predict(torch.zeros(3, 8, 8, device="meta"))
