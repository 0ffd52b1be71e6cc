"""COCO loading: label mapping, mask decoding for every segmentation form, validation errors."""
import json
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from botnet.data.coco import CocoDetection, collate_detection, decode_masks, decode_rle, load_coco
from botnet.data.imagefolder import Unreadable
from botnet.errors import DataError


def _write_dataset(root, anns, images=None, categories=None):
    """Two 20x16 images on disk and an instances file with the given annotations."""
    (root / "img").mkdir(exist_ok=True)
    images = images if images is not None else [
        {"id": 7, "file_name": "a.png", "width": 20, "height": 16},
        {"id": 9, "file_name": "b.png", "width": 20, "height": 16},
    ]
    for info in images:
        Image.new("RGB", (20, 16), (10, 20, 30)).save(root / "img" / info["file_name"])
    categories = categories if categories is not None else [{"id": 3, "name": "cat"}, {"id": 11, "name": "dog"}]
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return root / "img", ann_file


def _box_ann(aid, image_id=7, cat=3, bbox=(2, 3, 6, 5), **extra):
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": list(bbox), "iscrowd": 0,
            "area": bbox[2] * bbox[3], **extra}


def test_labels_are_contiguous_and_map_back(tmp_path):
    poly = [[2, 3, 8, 3, 8, 8, 2, 8]]
    img_dir, ann = _write_dataset(tmp_path, [_box_ann(1, cat=11, segmentation=poly),
                                             _box_ann(2, cat=3, bbox=(10, 2, 4, 4), segmentation=[[10, 2, 14, 2, 14, 6]])])
    ds = CocoDetection(img_dir, ann)
    assert ds.class_names == ["cat", "dog"]
    assert ds.cat_to_label == {3: 1, 11: 2} and ds.label_to_cat == {1: 3, 2: 11}
    image, target = ds[0]
    assert image.shape == (3, 16, 20) and image.dtype == torch.uint8
    assert target["image_id"] == 7
    assert target["labels"].tolist() == [2, 1]
    # XYWH -> XYXY
    assert target["boxes"].tolist()[0] == [2.0, 3.0, 8.0, 8.0]
    assert target["masks"].shape == (2, 16, 20)


def test_polygon_rle_and_uncompressed_rle_decode_to_the_same_mask(tmp_path):
    m = np.zeros((16, 20), np.uint8)
    m[4:9, 5:12] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    compressed = {"size": [16, 20], "counts": rle["counts"].decode()}
    # uncompressed counts: run lengths in column-major order starting with zeros
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    uncompressed = {"size": [16, 20], "counts": runs}
    anns = [{"segmentation": compressed, "bbox": [5, 4, 7, 5]}, {"segmentation": uncompressed, "bbox": [5, 4, 7, 5]}]
    masks = decode_masks(anns, 16, 20)
    assert (masks[0] == m).all() and (masks[1] == m).all()


def test_crowd_regions_leave_targets_and_empty_images_are_optional(tmp_path):
    crowd = _box_ann(2, image_id=9, iscrowd=1, segmentation={"size": [16, 20], "counts": [320]})
    crowd["iscrowd"] = 1
    img_dir, ann = _write_dataset(tmp_path, [_box_ann(1), crowd])
    all_images = CocoDetection(img_dir, ann)
    assert len(all_images) == 2
    _, target = all_images[1]
    assert len(target["boxes"]) == 0 and target["masks"].shape == (0, 16, 20)
    assert len(CocoDetection(img_dir, ann, keep_empty=False)) == 1


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["annotations"].append(_box_ann(5, bbox=(15, 2, 10, 4))), "annotation id 5: bbox [15, 2, 10, 4] lies outside"),
    (lambda d: d["annotations"].append(_box_ann(6, bbox=(1, 1, 0, 4))), "annotation id 6: bbox [1, 1, 0, 4] has zero area"),
    (lambda d: d["annotations"].append(_box_ann(7, cat=99)), "annotation id 7: category_id 99 is not declared"),
    (lambda d: d["annotations"].append(_box_ann(8, segmentation=[[1, 2, 3]])), "annotation id 8: segmentation does not parse"),
    (lambda d: d["annotations"].append(_box_ann(9, segmentation={"size": [16, 20], "counts": 5})),
     "annotation id 9: segmentation does not parse"),
    (lambda d: d["annotations"].append(_box_ann(10, image_id=1234)), "annotation id 10: image_id 1234 is not in"),
    (lambda d: d["images"].append({"id": 3, "file_name": "missing.png", "width": 20, "height": 16}),
     "missing.png: image file missing (image id 3)"),
    (lambda d: d["images"][0].update(width=40), "a.png: image is 20x16 but"),
])
def test_validation_names_file_and_id(tmp_path, mutate, expected):
    img_dir, ann = _write_dataset(tmp_path, [_box_ann(1)])
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_coco(ann, img_dir)
    assert expected in str(e.value)
    assert str(ann) in str(e.value) or "png" in expected


def test_every_problem_is_listed(tmp_path):
    img_dir, ann = _write_dataset(tmp_path, [_box_ann(1, cat=99), _box_ann(2, bbox=(0, 0, 0, 0))])
    with pytest.raises(DataError) as e:
        load_coco(ann, img_dir)
    assert len(e.value.problems) == 2


@pytest.mark.parametrize("text, expected", [("", "is empty"), ("{\"images\": [", "malformed JSON at line 1"),
                                            ("[]", "expected a JSON object")])
def test_unparseable_annotation_file(tmp_path, text, expected):
    ann = tmp_path / "ann.json"
    ann.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_coco(ann, tmp_path)


def test_unreadable_image_is_set_aside_or_stops_when_strict(tmp_path):
    img_dir, ann = _write_dataset(tmp_path, [_box_ann(1)])
    (img_dir / "b.png").write_bytes(b"not a png")
    ds = CocoDetection(img_dir, ann)
    item = ds[1]
    assert isinstance(item, Unreadable) and item.path.endswith("b.png") and "image id 9" in item.reason
    images, targets, bad = collate_detection([ds[0], item])
    assert len(images) == 1 and targets[0]["image_id"] == 7 and bad == [item]
    strict = CocoDetection(img_dir, ann, strict=True)
    with pytest.raises(DataError, match="b.png"):
        strict[1]


def test_polygons_rasterised_in_their_window_equal_whole_image_rasterising():
    # decode_masks rasterises each polygon in the part of the image it can touch: the pixels must
    # be exactly pycocotools' over the whole image, for fractional, edge-crossing and multi-part
    # polygons (coordinates a little outside the image included)
    rng = np.random.default_rng(0)
    height, width = 57, 83
    anns = []
    for _ in range(300):
        parts = []
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = rng.uniform(-3, width + 3), rng.uniform(-3, height + 3)
            r = rng.uniform(0.3, 25)
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 12))))
            xs = cx + r * rng.uniform(0.3, 1, angles.size) * np.cos(angles)
            ys = cy + r * rng.uniform(0.3, 1, angles.size) * np.sin(angles)
            parts.append(np.stack([xs, ys], 1).ravel().round(int(rng.integers(0, 4))).tolist())
        anns.append({"segmentation": parts, "bbox": [0, 0, 1, 1]})
    masks = decode_masks(anns, height, width)
    whole = np.stack([decode_rle(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], height, width)))
                      for a in anns])
    assert whole.sum() > 0 and (masks == whole).all()


def test_max_side_reads_a_large_image_smaller_with_its_boxes_and_masks(tmp_path):
    # a 40 x 32 image with a white block at x 8..24, y 4..20, annotated three ways (polygon,
    # compressed RLE, box only), read with max_side 20: everything at half the size
    (tmp_path / "img").mkdir()
    arr = np.zeros((32, 40, 3), np.uint8)
    arr[4:20, 8:24] = 255
    Image.fromarray(arr).save(tmp_path / "img" / "a.png")
    block = np.zeros((32, 40), np.uint8)
    block[4:20, 8:24] = 1
    rle = mask_utils.encode(np.asfortranarray(block))
    anns = [_box_ann(1, bbox=(8, 4, 16, 16), segmentation=[[8, 4, 24, 4, 24, 20, 8, 20]]),
            _box_ann(2, bbox=(8, 4, 16, 16), segmentation={"size": [32, 40], "counts": rle["counts"].decode()}),
            _box_ann(3, bbox=(8, 4, 16, 16))]
    images = [{"id": 7, "file_name": "a.png", "width": 40, "height": 32}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 3, "name": "cat"}]}))
    full_image, full = CocoDetection(tmp_path / "img", tmp_path / "ann.json")[0]
    image, target = CocoDetection(tmp_path / "img", tmp_path / "ann.json", max_side=20)[0]
    assert tuple(image.shape) == (3, 16, 20) and target["boxes"].canvas_size == (16, 20)
    assert target["boxes"].tolist() == [[4.0, 2.0, 12.0, 10.0]] * 3
    half = torch.zeros(16, 20, dtype=torch.uint8)
    half[2:10, 4:12] = 1
    assert all(torch.equal(m, half) for m in target["masks"].as_subclass(torch.Tensor))
    # the image resized with it (antialiased: the block's edge pixels are blends)
    assert (image[0][3:9, 5:11] == 255).all() and image[0][half.bool()].float().mean() > 230
    assert (image[0][12:, :] == 0).all() and (image[0][:, 14:] == 0).all()
    assert target["orig_size"] == (32, 40) and tuple(full_image.shape) == (3, 32, 40)
    assert full["masks"].shape == (3, 32, 40)


def test_a_missing_area_is_the_mask_area_not_the_box_area():
    from botnet.data.coco import complete_annotations

    # a right triangle with legs of 30 px: area 450, half its 900 px box
    triangle = [[0, 0, 30, 0, 0, 30]]
    data = {"images": [{"id": 1, "width": 40, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "segmentation": triangle}]}
    assert complete_annotations(data) == 1
    assert data["annotations"][0]["area"] == pytest.approx(450, rel=0.1)
