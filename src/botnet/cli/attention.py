"""``botnet attention``: what a BoT block's heads look at, drawn over the image."""
from __future__ import annotations

import argparse
from pathlib import Path

from botnet.errors import UserError


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is x,y in pixels of the model input, got {text!r}") from None
    return x, y


def register(cli) -> None:
    p = cli.command("attention", "draw each head's attention of a BoT block for query pixels of an image",
                    epilog="Query points are in pixels of the model input (a classifier's evaluation crop, or the "
                           "image resized to a detector's canvas), which the picture shows.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--weights", required=True, help="classification or detection weights (.safetensors)")
    p.add_argument("--points", nargs="+", type=_point, metavar="X,Y",
                   help="query pixels (default: the most salient positions of the layer's input)")
    p.add_argument("--layer", type=int, default=-1, help="which attention layer, in forward order (default: the last)")
    p.add_argument("--position", action="store_true",
                   help="the relative-position term alone: what each head prefers, whatever the content")
    p.add_argument("--out", required=True,
                   help="folder for IMAGE's picture and numbers: <image>_attention.png and <image>_attention.json "
                        "(<image>: the file name without its extension)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import botnet
    from botnet.io import Outputs
    from botnet.viz import attention_layers, attention_maps, draw_attention, model_input

    outputs = Outputs([args.image, args.weights], folder=args.out)
    out, stem = outputs.folder, Path(args.image).stem
    picture_path, json_path = outputs.claim(out / f"{stem}_attention.png"), outputs.claim(out / f"{stem}_attention.json")
    predictor = botnet.load(args.weights, device="cpu")
    if not attention_layers(predictor.model):
        raise UserError(f"{args.weights}: this model has no attention layer; nothing to draw")
    x, picture = model_input(predictor, args.image)
    term = "position" if args.position else "full"
    maps, points = attention_maps(predictor.model, x, args.points, layer=args.layer, term=term)
    title = f"{Path(args.weights).name}: attention layer {args.layer} ({'position term' if args.position else 'q.k + q.r'})"
    path = draw_attention(picture, maps, points, picture_path, title)
    outputs.write_json(json_path, {"image": str(args.image), "weights": str(args.weights),
                                                 "layer": args.layer, "term": term, "map_size": list(maps.shape[-2:]),
                                                 "points": [list(p) for p in points]})
    print(f"{path}: {maps.shape[1]} heads x {len(points)} query points on a {maps.shape[2]}x{maps.shape[3]} map")
    return 0
