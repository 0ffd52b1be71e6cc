"""Photos with an EXIF orientation: read upright, or as stored when the COCO file says so."""
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from botnet.data.coco import CocoDetection
from botnet.data.imagefolder import ImageFolderDataset
from botnet.data.images import EXIF_ORIENTATION, load_rgb, read_image, read_rgb
from botnet.errors import DataError

# the photo as a viewer shows it: 12 wide, 20 tall, a red block at x 2..7, y 11..17
UPRIGHT_W, UPRIGHT_H = 12, 20
RED_UPRIGHT = (2, 11, 6, 7)  # x, y, w, h
# orientation 6 ("turn 90 degrees clockwise to view"): the stored bitmap is the view turned back
RED_STORED = (11, 4, 7, 6)  # where the block lies in the 20 x 12 stored bitmap: (x, y) -> (y, 11 - x)


def _upright_view() -> Image.Image:
    arr = np.full((UPRIGHT_H, UPRIGHT_W, 3), 90, np.uint8)
    x, y, w, h = RED_UPRIGHT
    arr[y:y + h, x:x + w] = (250, 10, 10)
    return Image.fromarray(arr)


def _save_photo(path, orientation: int = 6):
    """A phone-style photo: the upright view stored a quarter turn back, with the EXIF tag."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    _upright_view().transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)


def _is_red(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> where the pixel is the block's red (JPEG blurs the edges a little)."""
    return (arr[..., 0] > 180) & (arr[..., 1] < 80) & (arr[..., 2] < 80)


def _red_box(arr: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(_is_red(arr))
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_stored_bitmap_is_the_view_turned_back(tmp_path):
    # the fixture itself: without the tag applied, the block lies where RED_STORED says
    _save_photo(tmp_path / "p.jpg")
    stored = np.asarray(load_rgb(tmp_path / "p.jpg", upright=False))
    assert stored.shape == (UPRIGHT_W, UPRIGHT_H, 3)
    assert _red_box(stored) == RED_STORED


def test_files_and_pil_images_are_read_upright_once(tmp_path):
    _save_photo(tmp_path / "p.jpg")
    image = np.asarray(load_rgb(tmp_path / "p.jpg"))
    assert image.shape == (UPRIGHT_H, UPRIGHT_W, 3) and _red_box(image) == RED_UPRIGHT
    for item in (tmp_path / "p.jpg", Image.open(tmp_path / "p.jpg")):
        tensor = read_image(item)  # prediction's reader: turned once, not twice
        assert tuple(tensor.shape) == (3, UPRIGHT_H, UPRIGHT_W)
        assert _red_box(tensor.permute(1, 2, 0).numpy()) == RED_UPRIGHT
    picture, label = ImageFolderDataset([(str(tmp_path / "p.jpg"), 0)], ["a"])[0]
    assert picture.size == (UPRIGHT_W, UPRIGHT_H) and label == 0


def _coco(root, images: list[dict], boxes: list[tuple]):
    (root / "img").mkdir(exist_ok=True)
    anns = []
    for i, (info, box) in enumerate(zip(images, boxes), 1):
        if not (root / "img" / info["file_name"]).exists():
            _save_photo(root / "img" / info["file_name"])
        x, y, w, h = box
        anns.append({"id": i, "image_id": info["id"], "category_id": 1, "bbox": list(box), "iscrowd": 0,
                     "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "area": w * h})
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "block"}]}))
    return root / "img", ann_file


@pytest.mark.parametrize("declared, box, upright", [
    ((UPRIGHT_W, UPRIGHT_H), RED_UPRIGHT, True),   # labelled as viewers show the photo
    ((UPRIGHT_H, UPRIGHT_W), RED_STORED, False),   # labelled by a tool that ignores the tag
])
def test_coco_images_are_read_in_the_frame_the_file_declares(tmp_path, declared, box, upright):
    info = {"id": 4, "file_name": "p.jpg", "width": declared[0], "height": declared[1]}
    img_dir, ann = _coco(tmp_path, [info], [box])
    ds = CocoDetection(img_dir, ann)
    assert ds.upright is upright
    image, target = ds[0]
    assert tuple(image.shape) == (3, declared[1], declared[0])
    pixels = image.permute(1, 2, 0).numpy()
    mask = target["masks"][0].numpy().astype(bool)
    assert _is_red(pixels)[mask].mean() > 0.9  # the annotation covers the block
    assert _red_box(pixels) == box


def test_a_file_mixing_upright_and_stored_sizes_is_refused(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": UPRIGHT_W, "height": UPRIGHT_H},
              {"id": 2, "file_name": "b.jpg", "width": UPRIGHT_H, "height": UPRIGHT_W}]
    img_dir, ann = _coco(tmp_path, images, [RED_UPRIGHT, RED_STORED])
    with pytest.raises(DataError) as e:
        CocoDetection(img_dir, ann)
    text = str(e.value) + " ".join(e.value.problems)
    assert "image id 1 declares its size upright" in text and "image id 2 as stored" in text


def test_a_wrong_size_names_both_frames(tmp_path):
    info = {"id": 4, "file_name": "p.jpg", "width": 30, "height": 40}
    img_dir, ann = _coco(tmp_path, [info], [RED_UPRIGHT])
    with pytest.raises(DataError) as e:
        CocoDetection(img_dir, ann)
    assert any("image is 20x12 (12x20 upright by its EXIF orientation) but" in p and "says 30x40" in p
               for p in e.value.problems)


@pytest.mark.parametrize("declared, box", [((UPRIGHT_W, UPRIGHT_H), RED_UPRIGHT), ((UPRIGHT_H, UPRIGHT_W), RED_STORED)])
def test_training_reads_a_photo_at_half_size_in_either_frame(tmp_path, declared, box):
    # max_side 10: the JPEG is decoded at half its size (PIL's draft), turned or not, and the
    # annotation scaled with it
    info = {"id": 4, "file_name": "p.jpg", "width": declared[0], "height": declared[1]}
    img_dir, ann = _coco(tmp_path, [info], [box])
    small, full = read_rgb(img_dir / "p.jpg", upright=declared[0] == UPRIGHT_W, max_side=10)
    assert full == declared and small.size == (declared[0] // 2, declared[1] // 2)
    image, target = CocoDetection(img_dir, ann, max_side=10)[0]
    assert tuple(image.shape) == (3, declared[1] // 2, declared[0] // 2)
    x, y, w, h = box
    assert target["boxes"].tolist() == [[x / 2, y / 2, (x + w) / 2, (y + h) / 2]]
    mask = target["masks"][0].numpy().astype(bool)
    assert _is_red(image.permute(1, 2, 0).numpy())[mask].mean() > 0.6  # the block, its edges blended


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_reads_as_pil_turns_it(tmp_path, orientation):
    # lossless PNG, every pixel different: each of the eight flips and turns gives another array
    stored = np.random.default_rng(orientation).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "p.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert (orientation == 1) == (want.shape == stored.shape and np.array_equal(want, stored))
    assert np.array_equal(np.asarray(load_rgb(path)), want)
    assert np.array_equal(read_image(path).permute(1, 2, 0).numpy(), want)
    image, full = read_rgb(path)
    assert full == (want.shape[1], want.shape[0]) and np.array_equal(np.asarray(image), want)
