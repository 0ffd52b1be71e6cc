"""Fixtures of the hostile-input tests: a small COCO set to corrupt, colour folders, a tiny
detector weights file."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.hostile.support import CocoSet


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; one avoids oversubscription on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def coco_set(tmp_path) -> CocoSet:
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("a.png", (200, 30, 30)), ("b.png", (30, 200, 30))):
        Image.new("RGB", (32, 24), colour).save(images / name)
    s = CocoSet(tmp_path, images, tmp_path / "ann.json")
    s.write()
    return s


@pytest.fixture(scope="session")
def det_weights(tmp_path_factory) -> Path:
    """A tiny untrained Mask R-CNN saved as ``botnet train det`` saves it (canvas 64)."""
    from botnet.detection.config import DetModelConfig
    from botnet.detection.maskrcnn import build_maskrcnn
    from botnet.weights import save_weights

    torch.manual_seed(0)
    model_cfg = DetModelConfig(name="botnet_tiny", norm="bn", fpn_channels=16, box_representation=32,
                               mask_head_channels=[16], rpn_pre_nms_test=50, rpn_post_nms_test=20,
                               detections_per_img=10, score_thresh=0.0)
    model = build_maskrcnn(model_cfg, num_classes=1, canvas=64)
    path = tmp_path_factory.mktemp("det_weights") / "model.safetensors"
    save_weights(model, path, {"task": "det", "class_names": ["thing"], "cat_ids": [1], "canvas": 64,
                               "detector": dataclasses.asdict(model_cfg)})
    return path


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory) -> Path:
    """4 classes x (16 train, 6 val) colour-blob images of 40 x 40 pixels (read-only)."""
    from botnet.data.cls_synthetic import make_image_folder

    return make_image_folder(tmp_path_factory.mktemp("colours"), num_classes=4, train_per_class=16,
                             val_per_class=6, size=40, seed=0)


@pytest.fixture
def colour_copy(colour_folder, tmp_path) -> Path:
    return Path(shutil.copytree(colour_folder, tmp_path / "data"))


@pytest.fixture(scope="session")
def cls_weights(tmp_path_factory) -> Path:
    """A tiny untrained classifier for the colour folders, saved as the classification task saves it."""
    from botnet.models import create_model
    from botnet.weights import save_weights

    torch.manual_seed(0)
    model = create_model("botnet_s1_tiny", num_classes=4, img_size=32)
    path = tmp_path_factory.mktemp("cls_weights") / "model.safetensors"
    save_weights(model, path, {"task": "cls", "class_names": ["blue", "green", "red", "yellow"],
                               "img_size": [32, 32], "crop_pct": 0.875, "mean": [0.5, 0.5, 0.5],
                               "std": [0.25, 0.25, 0.25]})
    return path
