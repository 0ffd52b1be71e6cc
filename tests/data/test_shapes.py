"""The synthetic shapes dataset: valid COCO, exact masks, reproducible."""
import numpy as np
from PIL import Image

from botnet.data.coco import CocoDetection, decode_masks
from botnet.data.shapes import SHAPE_CLASSES, generate_image, make_shapes_dataset, shape_mask


def test_dataset_is_valid_coco_with_exact_masks(tmp_path):
    paths = make_shapes_dataset(tmp_path / "shapes", train=6, val=3, img_size=48, seed=3)
    train = CocoDetection(paths["train_images"], paths["train_ann"])  # validates
    val = CocoDetection(paths["val_images"], paths["val_ann"])
    assert len(train) == 6 and len(val) == 3
    assert train.class_names == list(SHAPE_CLASSES)
    anns = train.coco.dataset["annotations"]
    assert anns, "some objects expected in 6 images"
    for ann in anns:
        info = train.coco.imgs[ann["image_id"]]
        mask = decode_masks([ann], info["height"], info["width"])[0]
        ys, xs = np.nonzero(mask)
        # the box is the tight box of the mask, the area its pixel count
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == mask.sum()
    # masks of one image do not overlap: each pixel shows one shape
    for image_id in train.coco.imgs:
        image_anns = train.coco.imgToAnns[image_id]
        if image_anns:
            masks = decode_masks(image_anns, 48, 48)
            assert masks.sum(0).max() <= 1


def test_pixels_under_a_mask_have_the_shape_colour():
    rng = np.random.default_rng(0)
    pixels, objects = generate_image(rng, 64, max_objects=4)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    for _, mask in objects:
        if mask.sum() > 20:
            inside = pixels[mask].astype(float)
            # a shape is one colour under a soft horizontal gradient: far less spread than the image
            assert inside.std(0).mean() < pixels.reshape(-1, 3).astype(float).std(0).mean() + 1


def test_generation_is_reproducible(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", train=2, val=0, img_size=32, seed=5)
    b = make_shapes_dataset(tmp_path / "b", train=2, val=0, img_size=32, seed=5)
    assert a["train_ann"].read_text() == b["train_ann"].read_text()
    im_a = np.asarray(Image.open(a["train_images"] / "train_000001.png"))
    im_b = np.asarray(Image.open(b["train_images"] / "train_000001.png"))
    assert (im_a == im_b).all()
    assert not list((tmp_path / "a").rglob("*.tmp"))


def test_every_shape_kind_draws_inside_its_circle():
    for kind in SHAPE_CLASSES:
        m = shape_mask(kind, 40, 20, 20, 10, 0.3)
        ys, xs = np.nonzero(m)
        assert m.sum() > 50, kind
        assert ((xs - 20) ** 2 + (ys - 20) ** 2).max() <= 11 ** 2, kind
