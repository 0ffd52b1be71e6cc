"""``botnet train cls`` / ``botnet eval cls`` / ``botnet predict cls``."""
from __future__ import annotations

import argparse

from botnet.cli.names import add_img_size
from botnet.cli.run_args import (
    add_engine_args, add_eval_args, add_predict_args, as_overrides, engine_flags, is_main, report_pause,
    report_skipped, run_config, run_folder, source_overrides, tells_how_to_resume)
from botnet.engine.config_validate import image_side, positive_int


def register(cli) -> None:
    p = cli.task_command("train", "cls", help="train an image classifier on an ImageFolder dataset",
                         epilog="Under torchrun every process runs this same command: "
                                "torchrun --nproc_per_node 8 -m botnet train cls ...")
    p.add_argument("--data", help="folder with train/<class>/* and val/<class>/* (or validation/, valid/)")
    p.add_argument("--model", help="registered model name (botnet models lists them)")
    add_img_size(p, "resolution (default: the model's)", type=int)
    p.add_argument("--weights", metavar="SOURCE", help="start from: imagenet, timm:NAME, torchvision:ENUM.NAME or "
                   "a weights file (docs/pretrained.md), or none; a classifier for other classes is re-initialised")
    add_engine_args(p, recipe_example="cls_tiny_cpu", lr_example=0.1)
    p.set_defaults(func=_train)

    p = cli.task_command("eval", "cls", help="top-1 / top-5 accuracy, loss, per-class accuracy and the confusion "
                                             "matrix of classifier weights (top-5 for more than 5 classes)")
    p.add_argument("--data", required=True, help="dataset folder (its val/ split is used) or a split folder")
    p.add_argument("--split", default="val")
    add_img_size(p, "resolution (default: the one trained at)", type=image_side)
    add_eval_args(p, "eval.json, confusion_matrix.json and confusion_matrix.png", batch_size=64)
    p.set_defaults(func=_eval)

    p = cli.task_command("predict", "cls", help="top-5 classes of images")
    add_predict_args(p)
    p.add_argument("--out", metavar="FOLDER",
                   help="also write predictions.json and predictions.csv (file, rank, class, index, probability) there")
    p.add_argument("--topk", type=positive_int, default=5)
    add_img_size(p, "resolution (default: the one trained at)", type=image_side)
    p.set_defaults(func=_predict)


def _train(args: argparse.Namespace) -> int:
    from botnet.classification.api import choose_recipe, train_classifier
    from botnet.classification.config import ClassificationConfig
    from botnet.errors import UserError

    flags = {"data.root": args.data, "model.name": args.model, "data.img_size": args.img_size,
             **engine_flags(args)}
    overrides = as_overrides(flags) + source_overrides("model.init_weights", args.weights) + list(args.overrides)
    out = run_folder(args)
    cfg = run_config(ClassificationConfig, args, overrides, choose_recipe)
    if not cfg.data.root:
        raise UserError("--data is required (a folder with train/<class>/* and val/<class>/*)")
    with tells_how_to_resume("cls", out):
        summary = train_classifier(cfg, out, resume=args.resume)
    if report_pause("cls", summary, out):
        return 0
    best = summary.get("best_val_top1")
    if best is not None and is_main():  # one line per run under torchrun
        print(f"best top-1 {best:.2f}% at step {summary['best_step']}; run folder: {out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from botnet.classification.api import evaluate_classifier

    m = evaluate_classifier(args.data, args.weights, args.out, split=args.split, batch_size=args.batch_size,
                            img_size=args.img_size, workers=args.workers, device=args.device, amp=args.amp,
                            strict=args.strict)
    top5 = f"  top5 {m['top5']:.2f}" if "top5" in m else ""  # more than 5 classes only
    print(f"top1 {m['top1']:.2f}{top5}  loss {m['loss']:.4f}  "
          f"({m['num_images']} images, {m['skipped_images']} skipped, {m['amp']})")
    scored = sorted((v["accuracy"], name) for name, v in m["per_class"].items() if v["accuracy"] is not None)
    if scored:
        shown = ", ".join(f"{name} {acc:.1f}" for acc, name in scored[:5])
        print(f"per class, lowest first: {shown}" + (f" ... ({len(scored)} classes)" if len(scored) > 5 else ""))
    if args.out:
        from botnet.classification.api import CONFUSION_FILE, CONFUSION_PICTURE

        print(f"eval.json (per-class accuracy), {CONFUSION_FILE} and {CONFUSION_PICTURE} in {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import botnet
    from botnet.data.imagefolder import expand_images
    from botnet.engine.distributed import select_device

    images, skipped = expand_images(args.images), {}
    outputs = None
    if args.out is not None:  # refused before any work if it is an input (folder) or cannot be written
        from pathlib import Path

        from botnet.io import Outputs

        outputs = Outputs([args.weights, *images, *{Path(p).parent for p in images}], folder=args.out)
    predictor = botnet.load(args.weights, img_size=args.img_size, device=select_device(args.device))
    if predictor.task != "cls":
        from botnet.errors import UserError

        raise UserError(f"{args.weights}: detection weights; use `botnet predict det`")
    results = predictor.predict(images, topk=args.topk, skipped=skipped)
    for path, result in zip([p for p in images if p not in skipped], results):
        print(path)
        for name, prob in zip(result.labels, result.probs):
            print(f"  {prob:7.4f}  {name}")
    if outputs is not None:
        from botnet.classification.predict import write_classifications

        written = write_classifications(outputs, images, results, skipped)
        print(f"{written[0].name} and {written[1].name} in {outputs.folder}")
    report_skipped(skipped, len(images))
    return 0
