"""Reading one training sample of a COCO dataset of phone photos: where the time goes.

Generates ``--images`` photos of 4032 x 3024 pixels (a 12-megapixel phone camera; JPEG quality
90), each with ``--objects`` polygon annotations of 80 to 560 pixels across, into a temporary
folder. Then, in one thread (as in one DataLoader worker), times per photo, round-robin:

- ``jpeg``: decoding the file (``load_rgb``);
- ``masks whole``: each polygon rasterised by pycocotools over the whole photo and decoded whole
  (the straightforward way, and what ``decode_masks`` did before);
- ``masks window``: ``decode_masks`` (pycocotools' run-length code of the whole photo, decoded in
  the polygon's window only); the two must give the same pixels, which is checked first;
- ``item``: ``CocoDetection[i]`` with the training transform (canvas 1024, standard jitter, flip),
  the photo read whole;
- ``item at 1280``: the same, the photo read at 1280 on its longer side (``max_side``, what
  training sets: the canvas times the jitter's largest factor), a JPEG decoded at half size.

Writes ``results/data_loading.md`` and ``.json``.

    python benchmarks/data_loading.py
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

import common
from botnet.data.coco import CocoDetection, decode_masks, decode_rle
from botnet.data.det_transforms import detection_train_transforms
from botnet.data.images import load_rgb

WIDTH, HEIGHT = 4032, 3024


def make_photos(root: Path, images: int, objects: int, seed: int = 0) -> tuple[Path, Path]:
    """``images`` smooth photos with ``objects`` filled polygons each, and their instances file."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    infos, anns = [], []
    for i in range(images):
        base = ((np.sin(xx / (200 + 30 * i)) + np.cos(yy / 170)) * 60 + 120).astype(np.uint8)
        photo = Image.fromarray(np.stack([base, base[::-1], base[:, ::-1]], -1))
        draw = ImageDraw.Draw(photo)
        for j in range(objects):
            cx, cy, r = rng.uniform(300, WIDTH - 300), rng.uniform(300, HEIGHT - 300), rng.uniform(40, 280)
            angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            radii = r * rng.uniform(0.7, 1, angles.size)
            points = [(round(float(cx + q * np.cos(a)), 1), round(float(cy + q * np.sin(a)), 1))
                      for a, q in zip(angles, radii)]
            draw.polygon(points, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + j % 3, "iscrowd": 0,
                         "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                         "segmentation": [[c for p in points for c in p]]})
        photo.save(root / "img" / f"{i}.jpg", quality=90)
        infos.append({"id": i + 1, "file_name": f"{i}.jpg", "width": WIDTH, "height": HEIGHT})
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": infos, "annotations": anns,
                                    "categories": [{"id": k, "name": f"class{k}"} for k in (1, 2, 3)]}))
    return root / "img", ann_file


def masks_whole(anns: list[dict], height: int, width: int) -> np.ndarray:
    """Each polygon rasterised and decoded over the whole image."""
    masks = np.zeros((len(anns), height, width), dtype=np.uint8)
    for i, ann in enumerate(anns):
        masks[i] = decode_rle(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width)))
    return masks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--objects", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    info = common.machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        img_dir, ann_file = make_photos(Path(tmp), args.images, args.objects)
        data = CocoDetection(img_dir, ann_file, transforms=detection_train_transforms(1024, "standard"))
        reduced = CocoDetection(img_dir, ann_file, transforms=detection_train_transforms(1024, "standard"),
                                max_side=1280)
        coco = data.coco
        anns = {i: coco.imgToAnns[i] for i in data.ids}
        for i in data.ids:  # the same pixels both ways
            if not (masks_whole(anns[i], HEIGHT, WIDTH) == decode_masks(anns[i], HEIGHT, WIDTH)).all():
                raise SystemExit(f"decode_masks differs from whole-image decoding on image {i}")
        candidates = {
            "jpeg": lambda: [load_rgb(img_dir / coco.imgs[i]["file_name"]) for i in data.ids],
            "masks whole": lambda: [masks_whole(anns[i], HEIGHT, WIDTH) for i in data.ids],
            "masks window": lambda: [decode_masks(anns[i], HEIGHT, WIDTH) for i in data.ids],
            "item": lambda: [data[k] for k in range(len(data))],
            "item at 1280": lambda: [reduced[k] for k in range(len(reduced))],
        }
        samples = common.alternate(candidates, args.rounds, 1, torch.device("cpu"))
    per_photo = {name: common.median_ms(s) / args.images for name, s in samples.items()}
    rows = [[name, per_photo[name]] for name in candidates]
    ratio = per_photo["masks whole"] / per_photo["masks window"]
    reduction = per_photo["item"] / per_photo["item at 1280"]
    text = (f"**one photo**, {WIDTH} x {HEIGHT} JPEG with {args.objects} polygons, one thread, ms per photo "
            f"(median of {args.rounds} alternating rounds over {args.images} photos, wall clock)\n\n"
            + common.markdown_table(["step", "ms"], rows)
            + f"\n\nmasks whole / masks window = {ratio:.1f} (the same pixels, checked on every photo); "
              f"item / item at 1280 = {reduction:.1f}")
    common.write_report("data_loading", "Reading a phone photo's training sample (cpu)", info, [text],
                        {"images": args.images, "objects": args.objects, "rounds": args.rounds,
                         "ms_per_photo": per_photo, "whole_over_window": ratio, "item_over_reduced": reduction})


if __name__ == "__main__":
    main()
