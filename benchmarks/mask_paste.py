"""Evaluating a detector on phone photos: memory and time of its masks.

torchvision's Mask R-CNN pastes every detection's mask into an image-sized float32 tensor before
it returns; ``botnet.detection.masks`` pastes them one at a time into run-length codes instead.
This runs the evaluation step of the detection task (model forward on a batch, then COCO results)
both ways on ``--images`` generated 4032 x 3024 photos (``data_loading.make_photos``), batch
``--batch``, with an untrained ``botnet_tiny`` detector whose score threshold is 0 (so every photo
has its 100 detections, as a trained detector on a busy photo does). Each way runs in a fresh
process, so that each peak resident memory is its own. The two must give the same COCO results.
Writes ``results/mask_paste.md`` and ``.json``.

    python benchmarks/mask_paste.py
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common

WAYS = ("pasted by torchvision", "one at a time")


def run_way(way: str, img_dir: Path, images: int, batch: int, out: Path) -> None:
    """One way in this process: peak RSS rise (MB), seconds, and the COCO results, to ``out``."""
    from botnet.data.images import read_image
    from botnet.detection.evaluator import detections_to_coco
    from botnet.detection.maskrcnn import build_maskrcnn
    from botnet.detection.masks import unpasted_masks

    torch.manual_seed(0)
    model = build_maskrcnn("botnet_tiny", 3, canvas=256).eval()
    model.roi_heads.score_thresh = 0.0
    photos = [read_image(img_dir / f"{i}.jpg").float() / 255 for i in range(images)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    results = []
    for first in range(0, images, batch):
        with torch.no_grad(), (unpasted_masks(model) if way == WAYS[1] else contextlib.nullcontext()):
            outputs = model(photos[first:first + batch])
        for k, output in enumerate(outputs):
            results += detections_to_coco(output, first + k, {1: 1, 2: 2, 3: 3})
        del outputs
    seconds = time.perf_counter() - started
    rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    out.write_text(json.dumps({"mb": rise, "s": seconds, "results": results}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--to", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.way:
        run_way(args.way, Path(args.dir), args.images, args.batch, Path(args.to))
        return
    import data_loading

    info = common.machine(torch.device("cpu"))
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        img_dir, _ = data_loading.make_photos(Path(tmp), args.images, 15)
        for way in WAYS:
            to = Path(tmp) / "out.json"
            subprocess.run([sys.executable, __file__, "--way", way, "--dir", str(img_dir), "--to", str(to),
                            "--images", str(args.images), "--batch", str(args.batch)], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            found[way] = json.loads(to.read_text())
    same = found[WAYS[0]]["results"] == found[WAYS[1]]["results"]
    if not same:
        raise SystemExit("the two ways gave different COCO results")
    rows = [[way, found[way]["mb"], found[way]["s"]] for way in WAYS]
    detections = len(found[WAYS[1]]["results"])
    text = (f"**evaluation step**, {args.images} photos of 4032 x 3024 in batches of {args.batch}, {detections} "
            f"detections with masks, untrained botnet_tiny detector (canvas 256), "
            f"{torch.get_num_threads()} threads, one fresh process per way\n\n"
            + common.markdown_table(["masks", "peak memory rise MB", "seconds"], rows)
            + f"\n\nthe same COCO results both ways: {same}")
    common.write_report("mask_paste", "Masks of a detector's evaluation on phone photos (cpu)", info, [text],
                        {"images": args.images, "batch": args.batch, "detections": detections,
                         **{way: {"mb": found[way]["mb"], "s": found[way]["s"]} for way in WAYS}})


if __name__ == "__main__":
    main()
