"""Whole models: BoTNet-50 against our ResNet-50 at 1024 x 1024, and model FLOP utilisation.

Part 1 (goal: BoT50 >= 0.85x the throughput of R50; the paper's cost ratio is 1.2x multiply-adds):
``forward_features`` of resnet50 and botnet50 at 1024 x 1024, bf16 autocast, channels_last,
inference and training (forward + backward), timed alternately in one process.

Part 2: model FLOP utilisation (MFU) = 2 * multiply-adds / step time / peak, where the peak is this
machine's measured bf16 matmul rate (a 4096^3 ``torch.mm``), and multiply-adds are counted by
``botnet.profile.count_macs`` (forward, or forward + backward for training).

    python benchmarks/backbones.py                       # both parts (several minutes on 2 cores)
    python benchmarks/backbones.py --part 1
    python benchmarks/backbones.py --part 2 --models resnet50 botnet_s1_t3
"""
from __future__ import annotations

import argparse

import torch

import common
from botnet.models import create_model, get_model_config
from botnet.profile import count_macs

# name, input size, batch, backbone only (forward_features) or the whole classifier
MFU_MODELS = {
    "resnet50@224": ("resnet50", 224, 4, False),
    "resnet50@1024": ("resnet50", 1024, 1, True),
    "botnet50@1024": ("botnet50", 1024, 1, True),
    "botnet_s1_t3": ("botnet_s1_t3", None, 2, False),
    "botnet_s1_t4": ("botnet_s1_t4", None, 2, False),
    "botnet_s1_t5": ("botnet_s1_t5", None, 2, False),
    "botnet_s1_t6": ("botnet_s1_t6", None, 2, False),
    "botnet_s1_t7": ("botnet_s1_t7", None, 1, False),
}


def make_step(model, x, train: bool, backbone: bool, dtype=torch.bfloat16):
    fn = model.forward_features if backbone else model
    device = x.device

    def step():
        with torch.autocast(device.type, dtype=dtype), torch.set_grad_enabled(train):
            out = fn(x)
            if train:
                loss = sum(o.float().mean() for o in out.values()) if isinstance(out, dict) else out.float().mean()
        if train:
            loss.backward()
            model.zero_grad(set_to_none=True)

    return step


def prepare(name: str, size: int, batch: int, device: torch.device, train: bool):
    model = create_model(name).to(device).to(memory_format=torch.channels_last).train(train)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return model, x


def part1(args, device) -> tuple[str, dict]:
    rows, data = [], {}
    for train in (False, True):
        fns = {}
        for name in ("resnet50", "botnet50"):
            model, x = prepare(name, 1024, args.batch1, device, train)
            fns[name] = make_step(model, x, train, backbone=True)
        samples = common.alternate(fns, args.rounds, args.warmup, device, args.clock)
        med = {k: common.median_ms(v) for k, v in samples.items()}
        mode = "train" if train else "infer"
        data[mode] = {"median_ms": med, "samples_s": samples}
        ratio = med["resnet50"] / med["botnet50"]
        rows.append([mode, med["resnet50"], med["botnet50"], 1000 * args.batch1 / med["resnet50"],
                     1000 * args.batch1 / med["botnet50"], ratio])
    macs = {n: count_macs(create_model(n), (1024, 1024), backbone_only=True) / 1e9 for n in ("resnet50", "botnet50")}
    data["gmacs"] = macs
    header = ["mode", "resnet50 ms", "botnet50 ms", "resnet50 img/s", "botnet50 img/s", "BoT50 / R50 throughput"]
    title = (f"**forward_features at 1024 x 1024**, batch {args.batch1}, bf16 autocast, channels_last, median of "
             f"{args.rounds} alternating rounds ({args.clock} clock). Counted multiply-adds: resnet50 "
             f"{macs['resnet50']:.1f} G, botnet50 {macs['botnet50']:.1f} G ({macs['botnet50'] / macs['resnet50']:.2f}x)")
    text = title + "\n\n" + common.markdown_table(header, rows)
    if args.profile:
        for name in ("botnet50", "resnet50"):
            model, x = prepare(name, 1024, args.batch1, device, True)
            step = make_step(model, x, True, backbone=True)
            step()
            text += (f"\n\n**top ops of one training step, {name}** (forward_features at 1024, self CPU time)\n\n"
                     + common.top_ops_table(step, args.profile))
    return text, data


def part2(args, device) -> tuple[str, dict]:
    peak = common.matmul_peak_tflops(device)
    rows, data = [], {"peak_tflops_bf16": peak}
    for key in args.models:
        name, size, batch, backbone = MFU_MODELS[key]
        size = size or get_model_config(name).img_size[0]
        model = create_model(name)
        macs_f = count_macs(model, (size, size), batch=batch, backbone_only=backbone)
        macs_t = count_macs(model, (size, size), batch=batch, backbone_only=backbone, backward=True)
        fns = {}
        for train in (False, True):
            m, x = prepare(name, size, batch, device, train)
            fns["train" if train else "infer"] = make_step(m, x, train, backbone)
        samples = common.alternate(fns, args.rounds2, args.warmup, device, args.clock)
        med = {k: common.median_ms(v) for k, v in samples.items()}
        mfu_i = 2 * macs_f / (med["infer"] / 1000) / (peak * 1e12)
        mfu_t = 2 * macs_t / (med["train"] / 1000) / (peak * 1e12)
        data[key] = {"size": size, "batch": batch, "gmacs_fwd": macs_f / 1e9, "gmacs_train": macs_t / 1e9,
                     "median_ms": med, "mfu_infer": mfu_i, "mfu_train": mfu_t}
        rows.append([key, f"{size}", batch, "backbone" if backbone else "classifier", macs_f / 1e9 / batch,
                     med["infer"], 100 * mfu_i, med["train"], 100 * mfu_t])
        print(rows[-1], flush=True)
    header = ["model", "input", "batch", "counted", "G M.Adds / img", "infer ms", "infer MFU %", "train ms",
              "train MFU %"]
    title = (f"**model FLOP utilisation**, bf16 autocast, channels_last, against the measured bf16 matmul peak "
             f"{peak:.3f} TFLOP/s (4096^3 torch.mm, best of 5); median of {args.rounds2} alternating rounds "
             f"(infer / train) per model ({args.clock} clock)")
    return title + "\n\n" + common.markdown_table(header, rows), data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--part", type=int, choices=[1, 2], nargs="+", default=[1, 2])
    p.add_argument("--batch1", type=int, default=1, help="batch of part 1")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of part 1")
    p.add_argument("--rounds2", type=int, default=3, help="rounds per model of part 2")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (bf16 first calls are slow)")
    p.add_argument("--models", nargs="+", default=list(MFU_MODELS), choices=list(MFU_MODELS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="part 1: also profile one training step of each model (top ROWS ops)")
    args = p.parse_args()
    common.run_parts(args, "backbones", "Whole backbones",
                     {1: lambda device: part1(args, device), 2: lambda device: part2(args, device)})


if __name__ == "__main__":
    main()
