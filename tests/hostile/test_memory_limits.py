"""Large photos in detection: prediction draws and encodes the masks of 100 detections on a
12-megapixel photo without image-sized float stacks, and evaluation reads a photo at the canvas
size rather than whole."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image

from tests.hostile.support import box_ann, run_cli

#: what ``write_predictions`` may peak at for 100 detections on a 3000 x 4000 photo: their bool
#: masks (1.2 GB) and the drawing; the float copies it made before were 9.6 GB more
PEAK_BUDGET = 4 * 2**30

_SCRIPT = textwrap.dedent('''
    import resource, sys, torch
    from torch import nn
    from PIL import Image
    from botnet.detection.masks import IMAGE_SIZE
    from botnet.detection.predict import write_predictions

    class ManyBigObjects(nn.Module):
        """100 detections covering most of the photo, masks left small (as with unpasted_masks)."""
        def forward(self, images):
            h, w = images[0].shape[-2:]
            n = 100
            boxes = torch.tensor([[10.0 + i, 10.0 + i, w - 10.0 - i, h - 10.0 - i] for i in range(n)])
            return [{"boxes": boxes, "scores": torch.linspace(1, 0.01, n), "labels": torch.ones(n, dtype=torch.int64),
                     "masks": torch.full((n, 1, 28, 28), 0.9), IMAGE_SIZE: (h, w)}]

    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(sys.argv[1] + "/photo.jpg", quality=50)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    doc = write_predictions(ManyBigObjects(), [sys.argv[1] + "/photo.jpg"], ["thing"], sys.argv[1] + "/out",
                            score_thresh=0.0)
    assert len(doc["annotations"]) == 100 and all("segmentation" in a for a in doc["annotations"])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
''')


@pytest.mark.slow
def test_predict_det_on_a_12mp_photo_with_100_detections_stays_bounded(tmp_path):
    # in a process of its own: its peak memory is then this prediction's
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < PEAK_BUDGET, f"peak grew by {grown / 2**30:.1f} GiB"
    assert (tmp_path / "out" / "photo.png").is_file()


def test_masks_are_painted_one_at_a_time_from_bool_or_probabilities():
    from botnet.detection.visualize import class_colour, draw_detections, paint_masks

    image = torch.full((3, 600, 800), 100, dtype=torch.uint8)
    masks = torch.zeros(2, 600, 800, dtype=torch.bool)
    masks[0, 100:200, 100:300] = True
    masks[1, 150:250, 200:400] = True  # overlaps the first: painted over it
    painted = paint_masks(image, masks, [(255, 0, 0), (0, 0, 255)])
    assert painted[:, 50, 50].tolist() == [100, 100, 100]
    assert painted[:, 120, 120].tolist() == [170, 55, 55]  # 100 * 0.55 + 255 * 0.45, rounded
    assert painted[0, 220, 350] == 55 and painted[2, 220, 350] == 170
    assert painted[0, 170, 250] > painted[0, 220, 350]  # the overlap keeps some of the first colour
    assert torch.equal(paint_masks(image, masks.float() * 0.9, [(255, 0, 0), (0, 0, 255)]), painted)
    output = {"boxes": torch.tensor([[100.0, 100, 300, 200], [200, 150, 400, 250]]),
              "scores": torch.tensor([0.9, 0.8]), "labels": torch.ones(2, dtype=torch.int64), "masks": masks[:, None]}
    expected = paint_masks(image, masks, [class_colour(1)] * 2)
    assert torch.equal(draw_detections(image, output, ["thing"], 0.0)[:, 120, 120], expected[:, 120, 120])


def test_eval_det_reads_a_large_photo_at_the_canvas_and_reports_in_its_pixels(capsys, coco_set, det_weights,
                                                                              tmp_path):
    from botnet.detection.config import DetectionConfig
    from botnet.detection.task import load_val_dataset

    Image.new("RGB", (640, 480), (90, 120, 150)).save(coco_set.images / "big.jpg")
    coco_set.write([box_ann(1), box_ann(2, image_id=3, bbox=(100, 100, 300, 200))],
                   images=[{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                           {"id": 3, "file_name": "big.jpg", "width": 640, "height": 480}])
    cfg = DetectionConfig()
    cfg.data.img_size = 64
    val = load_val_dataset(cfg, coco_set.images, coco_set.ann)
    image, target = val[val.ids.index(3)]
    assert tuple(image.shape[-2:]) == (48, 64) and target["orig_size"] == (480, 640)
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--weights",
                        det_weights, "--out", out, "--workers", "0", "--device", "cpu", "--amp", "fp32")
    assert code == 0, err
    boxes = [p["bbox"] for p in json.loads((out / "predictions.json").read_text()) if p["image_id"] == 3]
    assert boxes and max(x + w for x, _, w, _ in boxes) > 64  # in the photo's pixels, not the canvas'
    assert all(x >= 0 and y >= 0 and x + w <= 640.5 and y + h <= 480.5 for x, y, w, h in boxes)
