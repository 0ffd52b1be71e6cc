"""Hostile COCO instances files (issue items 1, 4, 5, 6, 11): each one is refused before any
library sees it, with a message naming the file, the id and the problem, exit code 2, and nothing
written to --out; or, where COCO tools define a value (a missing ``area``), it is computed."""
import json
import math

import numpy as np
import pytest
from tests.hostile.support import DET_FAST, box_ann, listing, run_cli
from PIL import Image

from botnet.data.coco import load_coco
from botnet.errors import DataError


def _train_det(capsys, coco_set, out):
    return run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--out", out, *DET_FAST)


def _refused(capsys, coco_set, tmp_path, *expected):
    """load_coco raises naming every ``expected`` piece; train det exits 2 and writes nothing."""
    with pytest.raises(DataError) as info:
        load_coco(coco_set.ann, coco_set.images)
    for piece in expected:
        assert piece in str(info.value)
    out = tmp_path / "run"
    code, err = _train_det(capsys, coco_set, out)
    assert code == 2
    for piece in expected:
        assert piece in err
    assert listing(out) == []


# -- item 1: NaN / infinite numbers ------------------------------------------------------------


def test_nan_polygon_coordinate(coco_set, tmp_path, capsys):
    poly = [[2, 3, 8, math.nan, 8, 8, 2, 8]]
    coco_set.write([box_ann(1), box_ann(5, image_id=2, segmentation=poly)])
    _refused(capsys, coco_set, tmp_path, str(coco_set.ann), "annotation id 5", "segmentation", "not a finite number")


def test_nan_bbox(coco_set, tmp_path, capsys):
    coco_set.write([box_ann(1), box_ann(6, image_id=2, bbox=(2, math.nan, 6, 5))])
    _refused(capsys, coco_set, tmp_path, "annotation id 6", "bbox", "not a finite number")


@pytest.mark.parametrize("area", [math.inf, math.nan, -3, "big"])
def test_non_finite_or_negative_area(coco_set, tmp_path, capsys, area):
    coco_set.write([box_ann(1), box_ann(7, image_id=2, area=area)])
    _refused(capsys, coco_set, tmp_path, "annotation id 7", "area")


def test_infinite_polygon_coordinate_in_json_text(coco_set, tmp_path, capsys):
    # the literal as it appears in a file written by a careless tool
    poly = [[2, 3, 8, 3, 8, 8, 2, 8]]
    coco_set.write([box_ann(1), box_ann(8, image_id=2, segmentation=poly)])
    coco_set.ann.write_text(coco_set.ann.read_text().replace("[2, 3, 8, 3, 8, 8, 2, 8]", "[2, 3, Infinity, 3, 8, 8, 2, 8]"))
    _refused(capsys, coco_set, tmp_path, "annotation id 8", "not a finite number")


# -- item 4: no area -----------------------------------------------------------------------------


def test_annotations_without_area(coco_set, det_weights, tmp_path, capsys):
    poly = [[2, 3, 12, 3, 12, 13, 2, 13]]  # a 10 x 10 square
    anns = [box_ann(1, bbox=(2, 3, 10, 10), segmentation=poly), box_ann(2, image_id=2, bbox=(4, 4, 8, 6))]
    for a in anns:
        del a["area"]
    coco_set.write(anns)
    coco = load_coco(coco_set.ann, coco_set.images)
    # as the COCO tools compute it: the mask's pixel count, or the box's area without a mask
    assert coco.anns[1]["area"] == pytest.approx(100, abs=12)
    assert coco.anns[2]["area"] == pytest.approx(48)
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "det", "--data", coco_set.images, "--ann", coco_set.ann,
                        "--weights", det_weights, "--out", out, "--workers", "0", "--device", "cpu", "--amp", "fp32")
    assert code == 0, err
    assert "box_ap" in json.loads((out / "eval.json").read_text())


# -- item 5: RLE that does not decode ------------------------------------------------------------


@pytest.mark.parametrize("counts", ["!!!garbage~~~", "0", "PPPPPPPPPPPPPPPP", "e0"])
def test_garbage_compressed_rle(coco_set, tmp_path, capsys, counts):
    rle = {"size": [24, 32], "counts": counts}
    coco_set.write([box_ann(1), box_ann(9, image_id=2, segmentation=rle)])
    _refused(capsys, coco_set, tmp_path, "annotation id 9", "RLE")


def test_valid_compressed_rle_still_passes(coco_set):
    from pycocotools import mask as mask_utils

    m = np.zeros((24, 32), np.uint8)
    m[3:9, 4:20] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    seg = {"size": [24, 32], "counts": rle["counts"].decode()}
    coco_set.write([box_ann(1, bbox=(4, 3, 16, 6), segmentation=seg)])
    coco = load_coco(coco_set.ann, coco_set.images)
    assert coco.anns[1]["segmentation"]["counts"] == seg["counts"]


# -- item 6: one category id twice ---------------------------------------------------------------


def test_duplicate_category_ids(coco_set, tmp_path, capsys):
    coco_set.write(categories=[{"id": 1, "name": "thing"}, {"id": 1, "name": "other"}])
    _refused(capsys, coco_set, tmp_path, str(coco_set.ann), "category id 1", "twice")


# -- item 11: file names that leave the image folder --------------------------------------------


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "ABSOLUTE"])
def test_file_name_leaving_the_image_folder(coco_set, tmp_path, capsys, name):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (32, 24)).save(outside)
    if name == "ABSOLUTE":
        name = str(outside)
    images = [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
              {"id": 2, "file_name": name, "width": 32, "height": 24}]
    coco_set.write(images=images)
    _refused(capsys, coco_set, tmp_path, "image id 2", name, "outside the image folder")


def test_file_name_in_a_subfolder_is_fine(coco_set):
    (coco_set.images / "sub").mkdir()
    Image.new("RGB", (32, 24)).save(coco_set.images / "sub" / "c.png")
    images = [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
              {"id": 2, "file_name": "sub/./c.png", "width": 32, "height": 24}]
    coco_set.write(images=images)
    assert len(load_coco(coco_set.ann, coco_set.images).imgs) == 2


# -- image sizes written as floats ----------------------------------------------------------------


def test_integral_float_sizes_are_read_as_integers(coco_set, tmp_path, capsys):
    b = {"id": 2, "file_name": "b.png", "width": 32, "height": 24}
    coco_set.write(images=[{"id": 1, "file_name": "a.png", "width": 32.0, "height": 24.0}, b])
    width = load_coco(coco_set.ann, coco_set.images).imgs[1]["width"]
    assert width == 32 and isinstance(width, int)  # an int, as pycocotools wants
    coco_set.write(images=[{"id": 1, "file_name": "a.png", "width": 32.5, "height": 24}, b])
    _refused(capsys, coco_set, tmp_path, "image id 1", "'width' and 'height' must be positive integers")
