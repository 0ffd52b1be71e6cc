"""One Mask R-CNN training step: BoTNet-50 FPN (ours) against torchvision's stock
``maskrcnn_resnet50_fpn`` on the same input, timed alternately, then profiled (top ops).

Input: batch 2 of 512 x 512 images, three boxes with masks per image, bf16 autocast. Every model
trains from scratch (BatchNorm, all stages trainable) and resizes to exactly 512. Ours runs as
the engine trains it (channels_last, the default ``roi_align_impl="auto"``). Two more rows say
where the gain comes from: torchvision's model in channels_last, and the same with our RoI
poolers (so the last row against ours is the backbone's cost alone).

    python benchmarks/det_step.py
"""
from __future__ import annotations

import argparse

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

import common
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.detection.roi_align import GatherMultiScaleRoIAlign

OURS, STOCK = "botnet50-fpn (ours)", "torchvision r50-fpn (stock)"


def with_gather_poolers(model):
    """torchvision's Mask R-CNN with its two RoI poolers sampling through our gather."""
    heads = model.roi_heads
    for attr in ("box_roi_pool", "mask_roi_pool"):
        old = getattr(heads, attr)
        setattr(heads, attr, GatherMultiScaleRoIAlign(old.featmap_names, old.output_size, old.sampling_ratio))
    return model


def make_batch(batch: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.randint(0, size // 2, (3, 2), generator=g).float()
        wh = torch.randint(32, size // 2, (3, 2), generator=g).float()
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[j, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(1, 81, (3,), generator=g).to(device),
                        "masks": masks.to(device)})
    return images, targets


def make_step(model, images, targets, dtype):
    device = images[0].device

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            losses = model(images, targets)
            loss = sum(losses.values())
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    common.setup_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    info = common.machine(device)
    torch.manual_seed(0)

    def stock():
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81, min_size=args.size,
                                     max_size=args.size)

    cl = torch.channels_last
    models = {
        OURS: build_maskrcnn("botnet50", num_classes=80, canvas=args.size).to(memory_format=cl),
        STOCK: stock(),
        "torchvision r50-fpn, channels_last": stock().to(memory_format=cl),
        "torchvision r50-fpn, channels_last + our RoI poolers": with_gather_poolers(stock()).to(memory_format=cl),
    }
    images, targets = make_batch(args.batch, args.size, device)
    steps = {}
    for name, model in models.items():
        model.to(device).train()
        steps[name] = make_step(model, images, targets, dtype)
    samples = common.alternate(steps, args.rounds, args.warmup, device)
    med = {k: common.median_ms(v) for k, v in samples.items()}
    sections = [f"**training step**, batch {args.batch} x 3 x {args.size} x {args.size}, {args.dtype} autocast, median "
                f"of {args.rounds} alternating rounds (wall clock)\n\n"
                + common.markdown_table(["model", "step ms", "/ ours"], [[k, v, v / med[OURS]] for k, v in med.items()])
                + f"\n\nstock / ours = {med[STOCK] / med[OURS]:.2f} (goal: >= 1.2)"]
    for name in (OURS, STOCK):
        step = steps[name]
        sections.append(f"**top ops of one step, {name}** (self CPU time)\n\n"
                        + common.top_ops_table(step, args.top))
    common.write_report("det_step" + ("" if device.type == "cpu" else f"_{device.type}"),
                        f"Mask R-CNN training step ({device.type})", info, sections,
                        {"median_ms": med, "samples_s": samples})


if __name__ == "__main__":
    main()
