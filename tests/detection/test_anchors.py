"""Anchor statistics and the --anchors auto rule."""
import json

import numpy as np
import pytest

from botnet.cli import main
from botnet.detection.anchors import BoxStats, anchor_shapes, auto_anchors, box_stats, coverage, fit_anchors


def test_coverage_is_the_best_centred_iou():
    anchors = anchor_shapes([32], [1.0], [1.0])
    assert anchors.tolist() == [[32.0, 32.0]]
    wh = np.array([[32.0, 32.0], [16.0, 16.0], [30.0, 30.0]])  # IoU 1, 0.25, 0.879
    assert coverage(wh, anchors) == pytest.approx(2 / 3)
    # torchvision's shapes: h / w = ratio at the anchor's area
    w, h = anchor_shapes([32], [1.0], [2.0])[0]
    assert h / w == pytest.approx(2.0) and w * h == pytest.approx(32 * 32)


def test_auto_rule_fits_small_objects_the_paper_anchors_miss():
    rng = np.random.default_rng(0)
    sizes = rng.uniform(15, 60, 500)  # aerial-tile objects on a 400 canvas
    aspect = np.exp(rng.normal(0, 0.3, 500))
    wh = np.stack([sizes / np.sqrt(aspect), sizes * np.sqrt(aspect)], 1)
    stats = BoxStats(wh, np.full(25, 20))
    paper = coverage(wh, anchor_shapes([32, 64, 128, 256, 512], [1.0], [0.5, 1.0, 2.0]))
    fit = auto_anchors(stats)
    sizes_fit = fit["anchor_sizes"]
    assert sizes_fit[0] == round(np.percentile(stats.sizes, 5)) and sizes_fit == [sizes_fit[0] * 2**k for k in range(5)]
    fitted = coverage(wh, anchor_shapes(sizes_fit, fit["anchor_scales"], fit["aspect_ratios"]))
    assert paper < 0.5 and fitted > 0.9


def _coco(tmp_path, boxes, size=(400, 200)):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
           "categories": [{"id": 1, "name": "car"}],
           "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                           for i, b in enumerate(boxes)]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def test_box_sizes_are_measured_at_the_canvas(tmp_path):
    ann = _coco(tmp_path, [[0, 0, 20, 10], [50, 50, 40, 40]])
    stats = box_stats(ann, canvas=800)  # longer side 400 -> 800: every box twice as large
    assert stats.wh.tolist() == [[40.0, 20.0], [80.0, 80.0]]
    assert stats.class_counts == {"car": 2} and stats.boxes_per_image.tolist() == [2]


def test_fit_anchors_changes_the_config_and_says_what_it_gained(tmp_path):
    from botnet.detection.config import DetDataConfig, DetectionConfig

    ann = _coco(tmp_path, [[10 * i, 5 * i, 12 + i % 5, 10 + i % 7] for i in range(1, 30)])
    cfg = DetectionConfig(data=DetDataConfig(train_ann=str(ann), train_images=str(tmp_path), img_size=400))
    said = []
    fitted = fit_anchors(cfg, say=said.append)
    assert fitted.model.anchor_sizes != cfg.model.anchor_sizes and fitted.model.anchor_sizes[0] < 32
    assert "->" in said[0] and "IoU >= 0.7" in said[0]


def test_data_stats_command(tmp_path, capsys):
    ann = _coco(tmp_path, [[0, 0, 20, 10], [50, 50, 40, 40]])
    assert main(["data", "stats", "--ann", str(ann), "--img-size", "400", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "boxes: 2" in out and "--anchors auto would use" in out
    assert (tmp_path / "o" / "box_sizes.png").stat().st_size > 1000
    assert main(["data", "stats", "--ann", str(tmp_path / "missing.json")]) == 2


def test_anchor_sizes_auto_in_the_config_is_fitted_by_the_library(tmp_path, monkeypatch):
    """``model.anchor_sizes: auto`` (what ``--anchors auto`` sets): accepted by the config, refused by
    a model builder, fitted by ``train_detector`` before the run starts, so the run's config holds
    the fitted sizes."""
    from botnet.detection import api
    from botnet.detection.maskrcnn import build_maskrcnn
    from botnet.detection.config import DetDataConfig, DetectionConfig, DetModelConfig
    from botnet.errors import UserError

    assert DetModelConfig(anchor_sizes="auto").anchor_sizes == "auto"
    with pytest.raises(UserError, match="anchor_sizes"):
        DetModelConfig(anchor_sizes="automatic")
    with pytest.raises(UserError, match="anchor_sizes=auto"):
        build_maskrcnn(DetModelConfig(anchor_sizes="auto"), 1)
    ann = _coco(tmp_path, [[10 * i, 5 * i, 12 + i % 5, 10 + i % 7] for i in range(1, 30)])
    cfg = DetectionConfig(model=DetModelConfig(anchor_sizes="auto"),
                          data=DetDataConfig(train_ann=str(ann), train_images=str(tmp_path), img_size=400))
    seen = {}
    monkeypatch.setattr(api, "train", lambda task, cfg, out, resume=None, hooks=(): seen.setdefault("cfg", cfg))
    monkeypatch.setattr(api.DetectionTask, "for_training", classmethod(lambda cls, cfg: None))
    api.train_detector(cfg, tmp_path / "run")
    sizes = seen["cfg"].model.anchor_sizes
    assert isinstance(sizes, list) and sizes == fit_anchors(cfg, say=lambda _: None).model.anchor_sizes and sizes[0] < 32


@pytest.mark.parametrize("name, weights, resume, hinted", [
    ("botnet50", None, None, True),          # ImageNet weights exist, the run starts random: say so
    ("resnet101", None, None, True),
    ("botnet50", "imagenet", None, False),
    ("botnet_tiny", None, None, False),      # no ImageNet weights for it
    ("botnet50", None, "run/last.pt", False),  # a resumed run has its weights
])
def test_training_a_random_backbone_says_the_paper_starts_from_imagenet(monkeypatch, capsys, tmp_path,
                                                                        name, weights, resume, hinted):
    from botnet.detection import api
    from botnet.detection.config import DetectionConfig, DetModelConfig

    monkeypatch.setattr(api, "train", lambda task, cfg, out, resume=None, hooks=(): None)
    monkeypatch.setattr(api.DetectionTask, "for_training", classmethod(lambda cls, cfg: None))
    api.train_detector(DetectionConfig(model=DetModelConfig(name=name, backbone_weights=weights)), tmp_path, resume)
    said = capsys.readouterr().err
    assert (f"backbone {name} starts from random weights" in said and "--backbone-weights imagenet" in said) == hinted


@pytest.mark.parametrize("w, h", [(10, 40), (40, 10)])
def test_auto_aspect_ratio_is_height_over_width(w, h):
    # boxes four times taller than wide (or wider than tall): anchors of that very shape cover them all
    wh = np.tile([float(w), float(h)], (50, 1))
    fit = auto_anchors(BoxStats(wh, np.full(5, 10)))
    assert fit["aspect_ratios"] == [h / w]
    (aw, ah), = anchor_shapes(fit["anchor_sizes"][:1], [1.0], fit["aspect_ratios"])
    assert (aw, ah) == pytest.approx((w, h))
    assert coverage(wh, anchor_shapes(fit["anchor_sizes"], fit["anchor_scales"], fit["aspect_ratios"])) == 1.0


def test_data_stats_figures(tmp_path, capsys):
    # at canvas 400 a 400 x 200 image keeps its size: the figures are those of the boxes as written.
    # sizes sqrt(w h): 32, 64, 128 (squares), 10 (20 x 5) and 20 (40 x 10); sorted 10, 20, 32, 64, 128,
    # so the percentiles 5 / 25 / 50 / 75 / 95 (linear, at positions 0.2, 1, 2, 3, 3.8) are
    # 12.0 / 20.0 / 32.0 / 64.0 / 115.2. Aspect h / w: 1, 1, 1, 0.25, 0.25 (median 1).
    # The default anchors (32 .. 512, ratios 0.5, 1, 2) fit the squares exactly; the best for 20 x 5
    # is 45.3 x 22.6 (IoU 100 / 1024) and for 40 x 10 the same (IoU 400 / 1024): 3 of 5 covered.
    boxes = [[0, 0, 32, 32], [40, 0, 64, 64], [110, 0, 128, 128], [0, 150, 20, 5], [50, 150, 40, 10]]
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 400, "height": 200},
                      {"id": 2, "file_name": "b.png", "width": 400, "height": 200}],
           "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
           "annotations": [{"id": i + 1, "image_id": 1 if i < 3 else 2, "category_id": 1 if i else 2, "bbox": b,
                            "area": b[2] * b[3], "iscrowd": 0} for i, b in enumerate(boxes)]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    assert main(["data", "stats", "--ann", str(ann), "--img-size", "400"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "images: 2, boxes: 5 (2.5 per image, max 3)"
    assert lines[1].endswith(": 12.0 / 20.0 / 32.0 / 64.0 / 115.2 px")
    assert lines[2] == "aspect h / w, median 1.00"
    assert lines[3] == "classes: car 4, bus 1"
    assert lines[4].endswith(": 60% of boxes have one of IoU >= 0.7")
