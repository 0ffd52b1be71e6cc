"""Scale jitter + crop/pad: image, boxes and masks move together; cut-away objects go."""
import pytest
import torch
from torchvision import tv_tensors

from botnet.data.det_transforms import (
    RandomHorizontalFlip,
    ScaleJitterCanvas,
    detection_train_transforms,
    parse_scale_range,
)


def _sample(h=40, w=60):
    image = tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 5:15, 10:30] = 1
    masks[1, 30:38, 50:58] = 1
    image[:, masks[0].bool()] = 200
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10, 5, 30, 15], [50, 30, 58, 38]], dtype=torch.float32),
                                     format="XYXY", canvas_size=(h, w))
    return image, {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": tv_tensors.Mask(masks), "image_id": 4}


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("scale_range", [(0.8, 1.25), (0.5, 2.0), (0.1, 2.0)])
def test_output_is_the_canvas_and_boxes_follow_masks(scale_range):
    t = ScaleJitterCanvas(64, scale_range)
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = t(*_sample())
        assert image.shape == (3, 64, 64)
        assert target["masks"].shape[-2:] == (64, 64)
        assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"])
        assert target["image_id"] == 4
        for box, mask in zip(target["boxes"], target["masks"]):
            assert mask.any()
            # nearest-neighbour masks and exact boxes agree to about a pixel
            assert (box - _mask_box(mask)).abs().max() <= 2.0
        # the bright object's pixels line up with its mask (unless shrunk to a blur of a few pixels)
        if 1 in target["labels"].tolist():
            m = target["masks"][target["labels"].tolist().index(1)].bool()
            if m.sum() >= 20:
                assert image[0][m].float().mean() > 150


def test_small_scale_pads_bottom_right_with_zeros():
    torch.manual_seed(0)
    image, target = ScaleJitterCanvas(128, (0.5, 0.5))(*_sample(40, 64))
    # longer side 64 -> 128 * 0.5 = 64: the image keeps its size, placed top-left
    assert image.shape == (3, 128, 128)
    assert image[:, 40:, :].abs().sum() == 0 and image[:, :, 64:].abs().sum() == 0
    assert target["boxes"].tolist()[0] == [10.0, 5.0, 30.0, 15.0]


def test_objects_cropped_away_are_dropped():
    t = ScaleJitterCanvas(32, (2.0, 2.0))  # 60 x 40 -> 64 x 43: a random 32 x 32 window misses some objects
    dropped = False
    for seed in range(30):
        torch.manual_seed(seed)
        _, target = t(*_sample())
        assert len(target["labels"]) == len(target["masks"]) == len(target["boxes"])
        dropped |= len(target["labels"]) < 2
    assert dropped


def test_flip_mirrors_boxes_and_masks():
    image, target = _sample()
    flipped, ft = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped, image.flip(-1))
    assert ft["boxes"].tolist()[0] == [60 - 30, 5, 60 - 10, 15]
    assert torch.equal(ft["masks"], target["masks"].flip(-1))


def test_parse_scale_range():
    assert parse_scale_range("standard") == (0.8, 1.25)
    assert parse_scale_range("xlarge") == (0.1, 2.0)
    assert parse_scale_range("0.5,2") == (0.5, 2.0)
    with pytest.raises(ValueError, match="scale jitter"):
        parse_scale_range("huge")
    assert len(detection_train_transforms(64, "large", hflip=0).transforms) == 1
