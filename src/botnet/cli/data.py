"""``botnet data shapes``: generate the synthetic COCO-format detection dataset."""
from __future__ import annotations

import argparse


def register(cli) -> None:
    p = cli.command("data", "generate datasets")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True
    s = sub.add_parser("shapes", help="coloured shapes on textured backgrounds, COCO instances format",
                       description="Writes OUT/train/*.png, OUT/val/*.png and "
                                   "OUT/annotations/instances_{train,val}.json (exact RLE masks).")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    s.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_shapes)


def _shapes(args: argparse.Namespace) -> int:
    from botnet.data.shapes import make_shapes_dataset
    from botnet.errors import UserError

    if args.train < 0 or args.val < 0 or args.train + args.val == 0:
        raise UserError("--train and --val must be non-negative and not both zero")
    if args.size < 32:
        raise UserError(f"--size {args.size}: images must be at least 32 pixels")
    paths = make_shapes_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed)
    for key in ("train", "val"):
        if f"{key}_ann" in paths:
            print(f"{key}: {paths[f'{key}_images']}  {paths[f'{key}_ann']}")
    return 0
