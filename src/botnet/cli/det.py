"""``botnet train det`` / ``botnet eval det`` / ``botnet predict det``."""
from __future__ import annotations

import argparse
import sys

from botnet.cli.names import add_img_size
from botnet.cli.run_args import (
    add_engine_args, add_eval_args, add_predict_args, as_overrides, engine_flags, is_main, report_pause,
    report_skipped, run_config, run_folder, source_overrides, tells_how_to_resume)
from botnet.engine.config_validate import canvas_side, fraction_float


#: ``eval det`` prints the AP of this many categories (eval.json has all)
PRINTED_CATEGORIES = 20


def register(cli) -> None:
    p = cli.task_command("train", "det", help="train a BoTNet / ResNet Mask R-CNN on COCO-format data",
                         epilog="--epochs also moves the x0.1 decays to 2/3 and 8/9 of the run; the learning "
                                "rate follows the global batch linearly. Under torchrun every process runs "
                                "this same command: torchrun --nproc_per_node 8 -m botnet train det ...")
    p.add_argument("--data", help="training image folder")
    p.add_argument("--ann", help="training COCO instances JSON")
    p.add_argument("--val-data", help="validation image folder")
    p.add_argument("--val-ann", help="validation COCO instances JSON")
    p.add_argument("--dataset", metavar="FILE",
                   help="YAML naming the data once: train_images, train_ann, val_images, val_ann "
                        "(relative paths are taken from the file's folder)")
    p.add_argument("--model", help="backbone: a registered resnet*/botnet* name (botnet models lists them)")
    add_img_size(p, "side of the square training canvas (default 1024)", old=("--canvas",), type=int)
    p.add_argument("--jitter", help="scale jitter: standard (0.8,1.25), large (0.5,2.0), xlarge (0.1,2.0) "
                                    "or MIN,MAX")
    p.add_argument("--backbone-weights", metavar="SOURCE",
                   help="imagenet (the paper's setting), timm:NAME, torchvision:ENUM.NAME or a weights file "
                        "(docs/pretrained.md); none: random initialisation")
    p.add_argument("--norm", choices=["bn", "frozen", "syncbn"], help="backbone normalisation")
    p.add_argument("--no-masks", action="store_true", help="Faster R-CNN: boxes only")
    p.add_argument("--train-empty", action="store_true", help="also train on images without annotations")
    p.add_argument("--anchors", choices=["auto"],
                   help="auto: fit the anchor sizes and aspect ratios to the training boxes at the canvas "
                        "(model.anchor_sizes=auto; the rule: botnet.detection.anchors); the coverage before and "
                        "after is printed")
    add_engine_args(p, recipe_example="det_36ep", lr_example=0.02)
    p.set_defaults(func=_train)

    p = cli.task_command("eval", "det", help="COCO box and mask AP and AR, and each category's AP, of detector weights")
    p.add_argument("--data", "--val-data", dest="data", required=True, help="image folder")
    p.add_argument("--ann", "--val-ann", dest="ann", required=True, help="COCO instances JSON")
    add_img_size(p, "canvas side: resize the longer side to this (default: as trained)", old=("--canvas",),
                 type=canvas_side)
    add_eval_args(p, "eval.json and predictions.json", batch_size=8)
    p.set_defaults(func=_eval)

    p = cli.task_command("predict", "det", help="draw detections and masks on images")
    add_predict_args(p)
    p.add_argument("--out", required=True, help="folder for the PNGs and detections.json")
    p.add_argument("--score-thresh", type=fraction_float, default=0.5)
    add_img_size(p, "canvas side: resize the longer side to this (default: as trained)", old=("--canvas",),
                 type=canvas_side)
    p.set_defaults(func=_predict)


def train_overrides(args: argparse.Namespace) -> list[str]:
    from botnet.data.det_transforms import parse_scale_range
    from botnet.errors import UserError

    jitter = None
    if args.jitter is not None:
        try:
            jitter = list(parse_scale_range(args.jitter))
        except ValueError as e:
            raise UserError(str(e)) from None
    flags = {
        "data.train_images": args.data, "data.train_ann": args.ann, "data.val_images": args.val_data,
        "data.val_ann": args.val_ann, "model.name": args.model,
        "data.img_size": args.img_size, "data.scale_range": jitter,
        "model.norm": args.norm, "model.masks": False if args.no_masks else None,
        "data.train_empty": True if args.train_empty else None, "model.anchor_sizes": args.anchors,
        **engine_flags(args),
    }
    dataset = dataset_overrides(args.dataset) if args.dataset else []
    weights = source_overrides("model.backbone_weights", args.backbone_weights)
    return dataset + as_overrides(flags) + weights + list(args.overrides)


DATASET_KEYS = ("train_images", "train_ann", "val_images", "val_ann")


def dataset_overrides(path: str) -> list[str]:
    """``data.*`` overrides from a dataset YAML file (keys at the top level or under ``data:``)."""
    from pathlib import Path

    from botnet.engine.config import read_yaml
    from botnet.errors import UserError

    spec = read_yaml(path)
    spec = spec.get("data", spec)
    if not isinstance(spec, dict) or not all(isinstance(v, (str, type(None))) for v in spec.values()):
        raise UserError(f"{path}: 'data' must be a mapping of {', '.join(DATASET_KEYS)} to paths, got {spec!r:.80}")
    unknown = sorted(set(spec) - set(DATASET_KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown}; a dataset file holds {', '.join(DATASET_KEYS)}")
    base = Path(path).resolve().parent
    return as_overrides({f"data.{k}": str(base / str(v)) for k, v in spec.items() if v})


def _train(args: argparse.Namespace) -> int:
    from botnet.detection.api import choose_recipe, train_detector
    from botnet.detection.config import DetectionConfig
    from botnet.detection.demo import format_ap
    from botnet.errors import UserError

    out = run_folder(args)
    cfg = run_config(DetectionConfig, args, train_overrides(args), choose_recipe)
    if not (cfg.data.train_images and cfg.data.train_ann):
        raise UserError("--data IMAGE_DIR and --ann INSTANCES.json are required (or a recipe with data paths)")
    with tells_how_to_resume("det", out):
        summary = train_detector(cfg, out, resume=args.resume)
    if report_pause("det", summary, out):
        return 0
    if is_main():
        print(format_ap(summary, prefix="val_") + f"; run folder: {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from botnet.detection.api import evaluate_detector
    from botnet.detection.demo import format_ap

    m = evaluate_detector(args.data, args.ann, args.weights, args.out, batch_size=args.batch_size,
                          workers=args.workers, device=args.device, amp=args.amp, img_size=args.img_size,
                          strict=args.strict)
    if not is_main():
        return 0
    print(f"{format_ap(m)}  ({m['num_images']} images, {m['skipped_images']} skipped, {m['amp']})")
    for kind in ("box", "mask"):
        if f"{kind}_ap" in m:
            print(f"  {kind}: " + "  ".join(f"{k.split('_', 1)[1]} {m[k]:.1f}" for k in m
                                             if k.startswith(f"{kind}_")))
    categories = m["per_category"]
    for name, aps in list(categories.items())[:PRINTED_CATEGORIES]:
        print(f"  {name} (id {aps['id']}): " + "  ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in aps.items()
                                                         if k != "id"))
    if len(categories) > PRINTED_CATEGORIES:
        print(f"  ... {len(categories) - PRINTED_CATEGORIES} more categories in eval.json (per_category)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import botnet
    from botnet.data.imagefolder import expand_images
    from botnet.detection.predict import shrink_note, write_predictions
    from botnet.engine.distributed import select_device
    from botnet.errors import UserError

    predictor = botnet.load(args.weights, img_size=args.img_size, device=select_device(args.device))
    if predictor.task != "det":
        raise UserError(f"{args.weights}: classification weights; use `botnet predict cls`")
    images, skipped = expand_images(args.images), {}
    doc = write_predictions(predictor.model, images, predictor.class_names, args.out,
                            cat_ids=predictor.metadata.get("cat_ids"), score_thresh=args.score_thresh,
                            device=predictor.device, skipped=skipped)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    for info in doc["images"]:
        dets = sorted((a for a in doc["annotations"] if a["image_id"] == info["id"]), key=lambda a: -a["score"])
        found = ", ".join(f"{names[a['category_id']]} {a['score']:.2f}" for a in dets[:8])
        more = f" and {len(dets) - 8} more" if len(dets) > 8 else ""
        print(f"{info['file_name']}: {len(dets)} detection(s)" + (f": {found}{more}" if dets else ""))
    print(f"pictures and detections.json in {args.out}")
    note = shrink_note([(info["height"], info["width"]) for info in doc["images"]], predictor.canvas)
    if note:
        print(note, file=sys.stderr)
    report_skipped(skipped, len(images))
    return 0
