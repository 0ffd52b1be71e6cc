"""Images with extreme aspect ratios (issue item 13): a 4000 x 20 image resized so that its longer
side fits the canvas keeps at least one pixel on its shorter side, so evaluation and prediction
work on it instead of failing inside the detector."""
import json

import pytest
import torch
from PIL import Image

from tests.hostile.support import box_ann, listing, run_cli


@pytest.fixture(params=[(4000, 20), (20, 4000), (3000, 1)], ids=["4000x20", "20x4000", "3000x1"])
def thin_set(coco_set, request):
    w, h = request.param
    Image.new("RGB", (w, h), (90, 120, 150)).save(coco_set.images / "thin.png")
    bw, bh = min(w, 50), min(h, 50)
    coco_set.write([box_ann(1, bbox=(2, 3, 6, 5)), box_ann(2, image_id=3, bbox=(0, 0, bw, bh))],
                   images=[{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                           {"id": 3, "file_name": "thin.png", "width": w, "height": h}])
    return coco_set


def test_4000x20_image_in_eval_det(thin_set, det_weights, tmp_path, capsys):
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "det", "--data", thin_set.images, "--ann", thin_set.ann,
                        "--weights", det_weights, "--out", out, "--workers", "0", "--device", "cpu", "--amp", "fp32")
    assert code == 0, err
    assert json.loads((out / "eval.json").read_text())["num_images"] == 2


def test_4000x20_image_in_predict_det(thin_set, det_weights, tmp_path, capsys):
    out = tmp_path / "pred"
    code, err = run_cli(capsys, "predict", "det", thin_set.images / "thin.png", "--weights", det_weights,
                        "--out", out, "--device", "cpu", "--score-thresh", "0")
    assert code == 0, err
    assert listing(out) == ["detections.json", "thin.png"]
    doc = json.loads((out / "detections.json").read_text())
    w, h = Image.open(thin_set.images / "thin.png").size
    assert (doc["images"][0]["width"], doc["images"][0]["height"]) == (w, h)
    for det in doc["annotations"]:  # boxes stay inside the image
        x, y, bw, bh = det["bbox"]
        assert -1e-3 <= x and x + bw <= w + 1e-3 and -1e-3 <= y and y + bh <= h + 1e-3


def test_resize_keeps_one_pixel_and_leaves_ordinary_images_alone():
    from botnet.detection.maskrcnn import build_maskrcnn

    model = build_maskrcnn("botnet_tiny", num_classes=1, canvas=64, fpn_channels=16, box_representation=32,
                           mask_head_channels=[16]).eval()
    thin, _ = model.transform.resize(torch.rand(3, 20, 4000))
    assert thin.shape[-2:] == (1, 64)
    ordinary = torch.rand(3, 48, 80)
    resized, _ = model.transform.resize(ordinary)
    expected = torch.nn.functional.interpolate(ordinary[None], scale_factor=64 / 80, mode="bilinear",
                                               recompute_scale_factor=True, align_corners=False)[0]
    torch.testing.assert_close(resized, expected, rtol=0, atol=0)
