"""Hostile image folders and image files (issue items 3 and 9): a directory link that loops back
into the tree, and 16-bit PNGs."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from botnet.data.coco import CocoDetection
from botnet.data.imagefolder import ImageFolderDataset, load_rgb, scan_image_folder, scan_split
from tests.hostile.support import CocoSet, box_ann


# -- item 3: directory links ---------------------------------------------------------------------


def test_symlink_loop_in_class_folder(colour_copy):
    red = colour_copy / "train" / "red"
    os.symlink("..", red / "loop")  # ln -s .. train/red/loop
    with pytest.warns(UserWarning, match=r"not followed.*red/loop") as record:
        classes, samples = scan_image_folder(colour_copy)
    assert "1 directory link" in str(record[0].message)
    train = samples["train"]
    assert len(train) == 4 * 16
    for path, label in train:  # every sample lies in its own class folder
        assert os.path.basename(os.path.dirname(path)) == classes[label]


def test_symlink_out_of_the_tree_in_class_folder(colour_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (40, 40), (0, 0, 255)).save(elsewhere / "stray.png")
    os.symlink(elsewhere, colour_copy / "train" / "red" / "more")
    with pytest.warns(UserWarning, match=r"not followed.*red/more"):
        _, samples = scan_split(colour_copy / "train")
    assert len(samples) == 4 * 16 and not any("stray" in p for p, _ in samples)


def test_class_folder_linking_back_to_the_split(colour_copy):
    os.symlink(".", colour_copy / "train" / "zloop")  # a "class" that is the split itself
    os.symlink(".", colour_copy / "val" / "zloop")
    with pytest.warns(UserWarning, match=r"not followed.*zloop"):
        classes, samples = scan_image_folder(colour_copy)
    assert classes == ["blue", "green", "red", "yellow"] and len(samples["train"]) == 4 * 16


def test_plain_folders_and_file_links_need_no_warning(colour_copy):
    red = colour_copy / "train" / "red"
    (red / "sub").mkdir()
    os.symlink(red / "0000.png", red / "sub" / "linked.png")  # a file link is an image like any other
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, samples = scan_split(colour_copy / "train")
    assert len(samples) == 4 * 16 + 1


# -- item 9: 16-bit PNGs -------------------------------------------------------------------------


def _gray16(path, level16: int, size=(32, 24)):
    Image.fromarray(np.full(size[::-1], level16, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    return path


@pytest.mark.parametrize("level8", [0, 60, 128, 255])
def test_16bit_grayscale_png_is_scaled_not_saturated(tmp_path, level8):
    path = _gray16(tmp_path / "g16.png", level8 * 257)
    image = np.asarray(load_rgb(str(path)))
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert (image == level8).all()


def test_16bit_png_in_training_and_detection_data(tmp_path):
    # ImageFolder: the sample the model sees
    path = _gray16(tmp_path / "g16.png", 100 * 257)
    item, _ = ImageFolderDataset([(str(path), 0)], ["a"])[0]
    assert np.asarray(item).max() == 100
    # COCO images are read by the same reader
    (tmp_path / "images").mkdir()
    _gray16(tmp_path / "images" / "a.png", 30 * 257)
    s = CocoSet(tmp_path, tmp_path / "images", tmp_path / "ann.json")
    s.write([box_ann(1)], images=[{"id": 1, "file_name": "a.png", "width": 32, "height": 24}])
    image, _ = CocoDetection(s.images, s.ann)[0]
    assert image.dtype == torch.uint8 and int(image.max()) == 30 and int(image.min()) == 30
