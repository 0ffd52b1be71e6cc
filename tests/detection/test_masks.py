"""Masks pasted one detection at a time: the same pixels and COCO codes as torchvision's paste of
all of them into image-sized tensors, which evaluation and prediction no longer make."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

from botnet.detection.evaluator import detections_to_coco
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.detection import masks as masks_module
from botnet.detection.masks import IMAGE_SIZE, encode_masks, mask_rles, paste_masks, unpasted_masks
from botnet.detection.predict import detect


def _detections(n, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 1, 28, 28, generator=g)
    corner = torch.rand(n, 2, generator=g) * torch.tensor([width + 20.0, height + 20.0]) - 10
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 40 + 0.3], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # the detector clips its boxes to the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    boxes[0] = torch.tensor([0.0, 0, width, height])  # the whole image
    boxes[1] = torch.tensor([width - 0.5, 3, width, 4])  # a sliver at the right edge
    return masks, boxes


@pytest.mark.parametrize("budget", [0, 2**30])  # one at a time; all at once
def test_one_at_a_time_equals_torchvisions_paste_and_coco_encoding(monkeypatch, budget):
    monkeypatch.setattr(masks_module, "PASTE_BUDGET", budget)
    height, width = 37, 53
    masks, boxes = _detections(80, height, width)
    full = paste_masks_in_image(masks, boxes, (height, width))[:, 0] > 0.5
    assert full.any() and torch.equal(paste_masks(masks, boxes, (height, width)), full)
    want = mask_utils.encode(np.asfortranarray(full.numpy().astype(np.uint8).transpose(1, 2, 0)))
    got = mask_rles(masks, boxes, (height, width))
    assert [r["counts"] for r in got] == [r["counts"].decode("ascii") for r in want]
    assert all(r["size"] == [height, width] for r in got)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = build_maskrcnn("botnet_tiny", 3, canvas=64).eval()
    model.roi_heads.score_thresh = 0.0  # every image gets its 100 detections
    return model


@pytest.mark.parametrize("budget", [0, 2**30])
def test_evaluation_and_prediction_give_what_the_pasted_masks_give(detector, tmp_path, monkeypatch, budget):
    monkeypatch.setattr(masks_module, "PASTE_BUDGET", budget)
    image = (torch.rand(3, 45, 70, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    with torch.no_grad():
        pasted = detector([image.float() / 255])[0]
        with unpasted_masks(detector):
            small = detector([image.float() / 255])[0]
    assert detector.transform.paste_masks  # restored
    assert pasted["masks"].shape[-2:] == (45, 70) and small["masks"].shape[-2:] == (28, 28)
    assert tuple(small[IMAGE_SIZE]) == (45, 70) and len(small["masks"]) == 100
    cats = {1: 1, 2: 2, 3: 3}
    assert detections_to_coco(small, 7, cats) == detections_to_coco(pasted, 7, cats)
    from PIL import Image

    Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "x.png")
    found = detect(detector, tmp_path / "x.png", ["a", "b", "c"], score_thresh=0.2)
    keep = pasted["scores"] >= 0.2
    assert torch.equal(found.masks, pasted["masks"][keep][:, 0] > 0.5)


def test_a_model_without_the_switch_is_left_as_it_is():
    model = torch.nn.Linear(2, 2)
    with unpasted_masks(model):
        assert not hasattr(model, "transform")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("budget", [0, 2**30])
def test_cuda_masks_pasted_on_the_device_equal_torchvisions_paste_there(monkeypatch, budget):
    # evaluation on a GPU pastes on the device: the pixels and codes of torchvision's paste on it
    monkeypatch.setattr(masks_module, "PASTE_BUDGET", budget)
    masks, boxes = (t.cuda() for t in _detections(40, 61, 47, seed=3))
    size = (61, 47)
    full = (paste_masks_in_image(masks, boxes, size)[:, 0] > 0.5).cpu()
    assert full.any() and torch.equal(paste_masks(masks, boxes, size), full)
    assert mask_rles(masks, boxes, size) == encode_masks(full)
