"""COCO values at the edge: degenerate polygons, iscrowd, categories sharing or lacking a name,
boxes under a pixel (for data stats and --anchors auto)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from botnet.cli import main
from botnet.data.coco import CocoDetection, load_coco
from botnet.detection.anchors import MAX_ASPECT, BoxStats, auto_anchors, box_stats, fit_anchors
from botnet.errors import DataError, UserError
from tests.hostile.support import DET_FAST, box_ann, listing, run_cli


def _stats(capsys, ann, *argv):
    """Exit code and printed lines of ``botnet data stats --ann ANN ARGV``."""
    capsys.readouterr()
    code = main(["data", "stats", "--ann", str(ann), *map(str, argv)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out


def test_degenerate_polygons_keep_their_objects(coco_set):
    # collinear points and a repeated point: COCO tools rasterise them to nothing
    line = [[2, 3, 5, 3, 8, 3]]
    point = [[4, 4, 4, 4, 4, 4]]
    coco_set.write([box_ann(1, segmentation=line), box_ann(2, segmentation=point),
                    box_ann(3, image_id=2, segmentation=[[2, 3, 8, 3, 8, 8, 2, 8]])])
    with pytest.warns(UserWarning, match=r"2 annotation\(s\) whose polygons enclose no area .*annotation id 1, 2"):
        ds = CocoDetection(coco_set.images, coco_set.ann)
    for index, expected in ((0, 2), (1, 1)):
        _, target = ds[index]
        assert len(target["boxes"]) == expected and len(target["masks"]) == expected
        assert all(m.any() for m in target["masks"])  # the box stands in for the empty mask
    _, target = ds[0]
    x, y, w, h = box_ann(1)["bbox"]
    assert target["masks"][0].sum() == w * h  # exactly the box's pixels
    # and the training crop, which drops objects whose mask is empty, keeps them
    from botnet.data.det_transforms import ScaleJitterCanvas

    image, target = ds[0]
    _, jittered = ScaleJitterCanvas(canvas=64, scale_range=(1.0, 1.0))(image, target)
    assert len(jittered["boxes"]) == 2


@pytest.mark.parametrize("crowd", ["0", None, "abc", [1], 2, True])
def test_iscrowd_must_be_0_or_1(capsys, coco_set, tmp_path, crowd):
    coco_set.write([box_ann(1), box_ann(4, image_id=2, iscrowd=crowd)])
    with pytest.raises(DataError) as info:
        load_coco(coco_set.ann, coco_set.images)
    assert f"annotation id 4: iscrowd {crowd!r} must be 0 or 1" in str(info.value)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--out", out,
                        *DET_FAST)
    assert code == 2 and "iscrowd" in err and listing(out) == []


def test_iscrowd_0_and_1_pass(coco_set):
    coco_set.write([box_ann(1), box_ann(2, image_id=2, iscrowd=1)])
    assert len(load_coco(coco_set.ann, coco_set.images).anns) == 2


def test_data_stats_keeps_categories_sharing_a_name_apart(capsys, coco_set):
    coco_set.write([box_ann(1), box_ann(2, image_id=2, cat=2), box_ann(3, image_id=2, cat=2)],
                   categories=[{"id": 1, "name": "cell"}, {"id": 2, "name": "cell"}])
    assert box_stats(coco_set.ann, 64).class_counts == {"cell (id 1)": 1, "cell (id 2)": 2}
    code, printed = _stats(capsys, coco_set.ann, "--img-size", "64")
    assert code == 0 and "cell (id 1) 1, cell (id 2) 2" in printed


@pytest.mark.parametrize("categories", [[{"id": 1}], [{"id": 1, "name": ["a", "b"]}], [{"id": 1, "name": ""}]])
def test_data_stats_with_categories_without_a_usable_name(capsys, coco_set, tmp_path, categories):
    coco_set.write(categories=categories)
    assert box_stats(coco_set.ann, 64).class_counts == {"id 1": 2}
    code, _ = run_cli(capsys, "data", "stats", "--ann", coco_set.ann, "--img-size", "64", "--out", tmp_path / "s")
    assert code == 0 and (tmp_path / "s" / "box_sizes.png").is_file()


def test_data_stats_out_when_every_box_is_under_a_pixel(capsys, coco_set, tmp_path):
    coco_set.write([box_ann(1, bbox=(2, 3, 0.001, 0.01)), box_ann(2, image_id=2, bbox=(2, 3, 0.002, 0.004))])
    code, printed = _stats(capsys, coco_set.ann, "--img-size", "32", "--out", tmp_path / "s")
    assert code == 0 and (tmp_path / "s" / "box_sizes.png").is_file()
    assert "no box of at least 1x1 pixels" in printed


def test_anchors_auto_ignores_sub_pixel_boxes_and_bounds_the_aspect():
    wh = np.array([[0.001, 20.0]] * 50 + [[10.0, 12.0]] * 50 + [[2.0, 100.0]] * 50)
    fitted = auto_anchors(BoxStats(wh, np.array([150])))
    assert max(fitted["aspect_ratios"]) <= MAX_ASPECT and min(fitted["aspect_ratios"]) >= 1 / MAX_ASPECT
    assert all(np.isfinite(fitted["anchor_sizes"]))


def test_anchors_auto_on_sub_pixel_boxes_says_so(coco_set):
    from botnet.detection.config import DetectionConfig

    coco_set.write([box_ann(1, bbox=(2, 3, 0.001, 5)), box_ann(2, image_id=2, bbox=(2, 3, 8, 6))])
    cfg = DetectionConfig()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_ann=str(coco_set.ann), img_size=64))
    said = []
    fitted = fit_anchors(cfg, say=said.append)
    assert "1 of 2 training boxes are under a pixel" in said[0]
    assert max(fitted.model.aspect_ratios) <= MAX_ASPECT


@pytest.mark.parametrize("annotations", [
    [box_ann(1, iscrowd=1), box_ann(2, image_id=2, iscrowd=1)],  # no non-crowd box
    [box_ann(1, bbox=(2, 3, 0.001, 5)), box_ann(2, image_id=2, bbox=(2, 3, 0.001, 5))],  # all under a pixel
])
def test_anchors_auto_without_a_box_to_fit(capsys, coco_set, tmp_path, annotations):
    coco_set.write(annotations)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--out", out,
                        "--anchors", "auto", *DET_FAST)
    assert code == 2 and "--anchors auto: no (non-crowd) box of at least 1x1 pixels" in err
    assert str(coco_set.ann) in err and listing(out) == []
    with pytest.raises(UserError):
        auto_anchors(box_stats(coco_set.ann, 64))


def test_detector_of_a_resnet_without_backbone_weights_builds():
    # a TypeError was seen once building resnet_tiny with backbone_weights unset, when the builder
    # took the config's fields as keywords; it now takes the config itself
    from botnet.detection.config import DetModelConfig
    from botnet.detection.maskrcnn import build_maskrcnn

    cfg = DetModelConfig(name="resnet_tiny", norm="bn", fpn_channels=16, box_representation=32,
                         mask_head_channels=[16])
    assert cfg.backbone_weights is None
    model = build_maskrcnn(cfg, 2, canvas=64)
    assert model.backbone.out_channels == 16
