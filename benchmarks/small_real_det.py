"""Small real detection sets: our detectors under the recipe ``botnet train det`` chooses without
``--config``, against torchvision's stock ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn``
trained by a plain torchvision loop of the same length, on the same tiles, epochs, batch and canvas.

Two sets of small objects, both read from files that packages ship (nothing is downloaded):

- ``coins``: :mod:`botnet.data.coins`, scikit-image's ``coins.png`` (24 coins of 37-65 px), 64
  training tiles from the upper half, 16 held-out tiles from the lower half.
- ``nuclei``: stardist's ``stardist/data/images/img2d.tif`` and ``mask2d.tif`` (BSD-3-Clause, in its
  wheel: ``pip install stardist``; a fluorescence image of the 2018 Data Science Bowl, 125 labelled
  nuclei of 15-37 px in 512 x 512), found without importing stardist. The upper half gives training
  tiles, the lower half held-out tiles; a nucleus crossed by the cut belongs to the half holding
  most of it and is blanked to the background in the other.

Ours: ``botnet train det --model M --img-size C --anchors auto --epochs E --batch-size B`` (the
recipe is the one the run's first line names: ``det_scratch_small`` from scratch, or
``det_finetune_small`` where the model's ImageNet weights are in the cache). Stock: torchvision's
builder with ``weights=None`` and ImageNet backbone weights only where the cache holds them
(else ``weights_backbone=None``: BatchNorm trained, every stage trainable), resized to the same
canvas, SGD 0.02 per 16 images with momentum 0.9 and weight decay 1e-4, the reference scripts'
linear warmup (up to 1000 steps within the first epoch) and x0.1 at 2/3 and 8/9 of the run, random
horizontal flips. Both are evaluated (box AP on the held-out tiles, pycocotools) every 4 epochs and
at the end; the table gives the final and the best evaluation.

    python benchmarks/small_real_det.py                 # the full table (hours on a CPU)
    python benchmarks/small_real_det.py --epochs 1 --sets coins --models botnet_tiny fasterrcnn_resnet50_fpn \\
        --name small_real_det_smoke                     # a check that it runs
    python benchmarks/small_real_det.py --combine NAME1 NAME2 --name small_real_det_all
                                                        # one table from runs made apart (rows name their file)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

import common
from botnet.cli import main as botnet_main
from botnet.data.coins import make_coins_dataset, write_tiles

STOCK = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn")
OURS = ("botnet_tiny", "resnet50", "botnet50")
TILE = 128
EVAL_EVERY = 4
NUCLEUS = {"id": 1, "name": "nucleus", "supercategory": "cell"}


# -- the sets -----------------------------------------------------------------------------------------

def stardist_images() -> Path:
    spec = importlib.util.find_spec("stardist")  # locates the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the nuclei set reads stardist's sample image: pip install stardist (or --sets coins)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def make_nuclei_dataset(out_dir: Path, train: int, val: int, tile: int, seed: int) -> dict[str, Path]:
    from PIL import Image

    folder = stardist_images()
    image = np.asarray(Image.open(folder / "img2d.tif")).astype(np.float32)
    labels = np.asarray(Image.open(folder / "mask2d.tif")).astype(np.int32)
    photo = np.round(image * (255 / max(float(image.max()), 1.0))).astype(np.uint8)
    cut = labels.shape[0] // 2
    background = np.uint8(np.median(photo[labels == 0]))
    halves = {"train": np.s_[:cut], "val": np.s_[cut:]}
    parts = {name: (photo[rows].copy(), labels[rows].copy()) for name, rows in halves.items()}
    for nucleus in np.unique(labels[labels > 0]):
        upper, lower = (np.count_nonzero(labels[rows] == nucleus) for rows in halves.values())
        if upper and lower:  # crossed by the cut: kept whole-ish where most of it lies
            other = "val" if upper >= lower else "train"
            pixels, part = parts[other]
            pixels[part == nucleus] = background
            part[part == nucleus] = 0
    rng = np.random.default_rng(seed)
    paths = {}
    for name, count in (("train", train), ("val", val)):
        pixels, part = parts[name]
        paths[f"{name}_ann"] = write_tiles(out_dir, name, pixels, part, count, tile, 0.5, rng, category=NUCLEUS,
                                           description="tiles of stardist's img2d.tif / mask2d.tif")
        paths[f"{name}_images"] = out_dir / name
    return paths


def make_set(name: str, root: Path, seed: int) -> dict[str, Path]:
    if name == "coins":
        return make_coins_dataset(root, train=64, val=16, tile=TILE, seed=seed)
    return make_nuclei_dataset(root, train=64, val=16, tile=TILE, seed=seed)


# -- ours: the botnet command as a user types it --------------------------------------------------------

def run_ours(model: str, data: dict[str, Path], out: Path, args) -> dict:
    code = botnet_main(["train", "det", "--data", str(data["train_images"]), "--ann", str(data["train_ann"]),
                        "--val-data", str(data["val_images"]), "--val-ann", str(data["val_ann"]),
                        "--model", model, "--img-size", str(TILE), "--anchors", "auto", "--epochs", str(args.epochs),
                        "--batch-size", str(args.batch_size), "--workers", "0", "--out", str(out),
                        "--set", f"eval.every_epochs={EVAL_EVERY}", "--set", f"train.seed={args.seed}",
                        "--set", "log.progress=never", "--set", "log.tensorboard=false"])
    if code != 0:
        raise SystemExit(f"botnet train det --model {model} failed ({code})")
    from botnet.detection.api import choose_recipe
    from botnet.detection.config import DetectionConfig
    from botnet.engine import load_config, read_metrics_csv

    # the recipe the run's first line named, asked of the same rule
    chosen = choose_recipe(load_config(DetectionConfig, None, [f"data.train_ann={data['train_ann']}",
                                                               f"model.name={model}"]))
    evals = [{"epoch": r["epoch"], "box_ap": r["val_box_ap"], "box_ap50": r["val_box_ap50"]}
             for r in read_metrics_csv(out / "metrics.csv") if "val_box_ap" in r]
    return {"recipe": f"`{chosen.name}`", "evals": evals}


# -- stock: torchvision's model and a plain loop --------------------------------------------------------

class CocoTiles(torch.utils.data.Dataset):
    """(image float tensor, target) of a COCO file: boxes, labels and masks of the non-crowd objects."""

    def __init__(self, images: Path, ann: Path, flip: bool):
        from pycocotools.coco import COCO

        self.coco, self.images, self.flip = COCO(str(ann)), images, flip
        self.ids = sorted(self.coco.getImgIds())

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        from PIL import Image

        info = self.coco.loadImgs(self.ids[i])[0]
        image = torch.from_numpy(np.asarray(Image.open(self.images / info["file_name"]).convert("RGB")).copy())
        image = image.permute(2, 0, 1).float() / 255
        anns = [a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"])) if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns])) if anns else \
            torch.zeros(0, *image.shape[1:], dtype=torch.uint8)
        if self.flip and torch.rand(()) < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
            boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
        target = {"boxes": boxes, "labels": torch.ones(len(anns), dtype=torch.int64), "masks": masks}
        return image, target, info["id"]


def stock_model(name: str):
    import torchvision
    from torchvision.models import ResNet50_Weights

    from botnet.weights.pretrained import imagenet_cache_file

    cached = imagenet_cache_file("resnet50")
    backbone = ResNet50_Weights.DEFAULT if cached and cached[1] else None
    build = getattr(torchvision.models.detection, name)
    return build(weights=None, weights_backbone=backbone, num_classes=2, min_size=TILE, max_size=TILE), backbone


def evaluate_stock(model, data: dict[str, Path]) -> dict:
    from botnet.detection.evaluator import CocoEvaluator

    dataset = CocoTiles(data["val_images"], data["val_ann"], flip=False)
    evaluator = CocoEvaluator(dataset.coco, {1: 1}, iou_types=("bbox",))
    model.eval()
    with torch.no_grad():
        for image, _, image_id in dataset:
            evaluator.update(model([image]), [image_id])
    model.train()
    m = evaluator.summarize()
    return {"box_ap": m["box_ap"], "box_ap50": m["box_ap50"]}


def run_stock(name: str, data: dict[str, Path], args) -> dict:
    torch.manual_seed(args.seed)
    model, backbone = stock_model(name)
    dataset = CocoTiles(data["train_images"], data["train_ann"], flip=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=lambda batch: list(zip(*batch)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.02 * args.batch_size / 16, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch, warmup = len(loader), min(1000, len(loader) - 1)
    total = steps_per_epoch * args.epochs
    decays = [math.floor(f * total) for f in (2 / 3, 8 / 9)]

    def factor(step: int) -> float:
        warm = 1e-3 + (1 - 1e-3) * step / warmup if step < warmup else 1.0
        return warm * 0.1 ** sum(step >= d for d in decays)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    evals, step, diverged = [], 0, None
    model.train()
    for epoch in range(1, args.epochs + 1):
        for images, targets, _ in loader:
            if "maskrcnn" not in name:
                targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
            loss = sum(model(list(images), list(targets)).values())
            if not math.isfinite(loss.item()):  # torchvision's reference script stops here too
                diverged = step
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if diverged is not None or epoch % EVAL_EVERY == 0 or epoch == args.epochs:
            evals.append({"epoch": epoch, **evaluate_stock(model, data)})
        if diverged is not None:
            break
    start = "ImageNet backbone" if backbone is not None else "from scratch"
    stopped = (f"; loss not finite at step {diverged}, stopped as torchvision's reference does"
               if diverged is not None else "")
    return {"recipe": f"torchvision loop, {start}{stopped}", "evals": evals, "nonfinite_step": diverged}


# -- the table --------------------------------------------------------------------------------------------

def summary_row(set_name: str, model: str, result: dict) -> list:
    evals = result["evals"]
    final, best = evals[-1], max(evals, key=lambda e: e["box_ap"])
    return [set_name, model, result["recipe"], f"{final['box_ap']:.1f}", f"{best['box_ap']:.1f}",
            f"{final['box_ap50']:.1f}", f"{best['box_ap50']:.1f}"]


def combine(names: list[str], out: str) -> None:
    """One table from the rows of several earlier runs (``results/NAME.json``), for rows that ran apart
    (on both cores at once): each row names its file, whose Machine and Command lines hold."""
    rows, raw, machines = [], {}, []
    for spec in names:  # NAME, or NAME:MODEL,MODEL for some of its rows
        name, _, only = spec.partition(":")
        data = json.loads((common.RESULTS / f"{name}.json").read_text())
        machines.append(f"`{name}.md`: {data['machine'].get('date')}, cpu {data['machine'].get('cpu')}")
        for key, result in data.items():
            if "/" in key and isinstance(result, dict) and "evals" in result:
                set_name, model = key.split("/", 1)
                if only and model not in only.split(","):
                    continue
                rows.append(summary_row(set_name, model, result) + [f"`{name}.md`"])
                raw[f"{name}:{key}"] = result
    rows.sort(key=lambda r: (r[0], r[1] in STOCK, r[1]))
    table = common.markdown_table(["set", "model", "recipe", "box AP final", "box AP best", "AP50 final",
                                   "AP50 best", "file"], rows)
    common.write_report(out, "Small real detection sets: ours against torchvision's stock detectors (combined)",
                        {"rows from": "; ".join(machines)}, [table], raw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", choices=["coins", "nuclei"], default=["coins", "nuclei"])
    p.add_argument("--models", nargs="+", choices=OURS + STOCK, default=list(OURS + STOCK))
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--name", default="small_real_det", help="results/NAME.md and NAME.json")
    p.add_argument("--combine", nargs="+", metavar="NAME[:MODEL,...]",
                   help="only combine the rows (or these models' rows) of earlier results/NAME.json")
    args = p.parse_args()
    if args.combine:
        return combine(args.combine, args.name)
    common.setup_threads(args.threads)
    info = common.machine(torch.device("cpu"))
    notes = (f"{args.epochs} epochs of batch {args.batch_size} on {TILE} px tiles (64 training, 16 held out per set), "
             f"evaluated every {EVAL_EVERY} epochs and at the end; seed {args.seed}. "
             "Ours: `botnet train det` without `--config` (`--anchors auto`); stock: torchvision's builder and a "
             "plain loop (the script's docstring).")
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets:
            data = make_set(set_name, Path(tmp) / set_name, args.seed)
            for model in args.models:
                if model in STOCK:
                    result = run_stock(model, data, args)
                else:
                    result = run_ours(model, data, Path(tmp) / f"run_{set_name}_{model}", args)
                raw[f"{set_name}/{model}"] = result
                rows.append(summary_row(set_name, model, result))
                print(" | ".join(rows[-1]), flush=True)
                # after every row: hours of training are not lost to a run stopped before the last one
                table = common.markdown_table(["set", "model", "recipe", "box AP final", "box AP best",
                                               "AP50 final", "AP50 best"], rows)
                common.write_report(args.name, "Small real detection sets: ours against torchvision's stock "
                                    "detectors", info, [table, notes], raw)


if __name__ == "__main__":
    main()
