"""``botnet data shapes`` (the synthetic COCO-format dataset) and ``botnet data stats`` (boxes and anchors of a COCO file)."""
from __future__ import annotations

import argparse

from botnet.cli.names import add_img_size


def _shapes_side(text: str) -> int:
    """A side of generated images or of the canvas: 32 (one stride of c5) to 4096 pixels."""
    from botnet.engine.config_validate import CANVAS_SIDE, flag_type

    return flag_type(int, CANVAS_SIDE)(text)


def register(cli) -> None:
    p = cli.command("data", "generate a dataset, or describe the boxes of one")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True
    s = sub.add_parser("shapes", help="coloured shapes on textured backgrounds, COCO instances format",
                       description="Writes OUT/train/*.png, OUT/val/*.png and "
                                   "OUT/annotations/instances_{train,val}.json (exact RLE masks).")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    add_img_size(s, "image side in pixels (default 128, 32 to 4096)", old=("--size",), type=_shapes_side, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_shapes)
    t = sub.add_parser("stats", help="boxes, sizes at the canvas, classes and anchor coverage of a COCO file",
                       description="Box counts, box sizes at the training canvas, class balance, and how many boxes "
                                   "the anchors cover (IoU >= 0.7 with a centred anchor), with what --anchors auto "
                                   "would choose; --out also draws the size histogram.")
    t.add_argument("--ann", required=True, help="COCO instances JSON")
    add_img_size(t, "side of the training canvas (default 1024, 32 to 4096)", old=("--canvas",), type=_shapes_side,
                 default=1024)
    t.add_argument("--out", help="folder for box_sizes.png")
    t.set_defaults(func=_stats)


def _shapes(args: argparse.Namespace) -> int:
    from botnet.data.shapes import make_shapes_dataset
    from botnet.errors import UserError
    from botnet.io import Outputs

    if args.train < 0 or args.val < 0 or args.train + args.val == 0:
        raise UserError("--train and --val must be non-negative and not both zero")
    Outputs(folder=args.out, flag="OUT")  # a folder that can be written, checked before any image is drawn
    paths = make_shapes_dataset(args.out, train=args.train, val=args.val, img_size=args.img_size, seed=args.seed)
    for key in ("train", "val"):
        if f"{key}_ann" in paths:
            print(f"{key}: {paths[f'{key}_images']}  {paths[f'{key}_ann']}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from botnet.detection.anchors import box_stats, describe, plot_stats
    from botnet.detection.config import DetModelConfig
    from botnet.io import Outputs

    picture = Outputs([args.ann], folder=args.out).claim(Path(args.out) / "box_sizes.png") if args.out else None
    stats = box_stats(args.ann, args.img_size)
    m = DetModelConfig()
    for line in describe(stats, m.anchor_sizes, m.anchor_scales, m.aspect_ratios):
        print(line)
    if picture is not None:
        plot_stats(stats, m.anchor_sizes, picture)
        print(f"histogram: {picture}")
    return 0
