"""torch.compile: graph breaks of every registered model, and eager vs compiled speed.

Part 1: ``torch._dynamo.explain`` of every model in ``botnet.list_models()`` (eval without grad,
and train with grad) on a small input: the number of graphs and graph breaks.
Part 2: eager vs ``torch.compile`` (inductor) on the attention layer (forward + backward, fp32
and bf16) and on whole models, timed alternately after compilation; compile time is reported.

    python benchmarks/compile.py                 # both parts (several minutes on 2 cores)
    python benchmarks/compile.py --part 2 --models botnet_s1_t3
"""
from __future__ import annotations

import argparse
import time

import torch

import common
from botnet.layers import MHSA2d
from botnet.models import create_model, list_models


def part1(args) -> tuple[str, dict]:
    rows, data = [], {}
    x = torch.randn(1, 3, args.explain_size, args.explain_size)
    for name in list_models():
        model = create_model(name)
        counts = []
        for train in (False, True):
            torch._dynamo.reset()
            model.train(train)
            with torch.set_grad_enabled(train):
                e = torch._dynamo.explain(model)(x)
            counts.append((e.graph_count, e.graph_break_count, [str(r.reason)[:80] for r in e.break_reasons]))
        data[name] = counts
        rows.append([name, counts[0][0], counts[0][1], counts[1][0], counts[1][1]])
        print(rows[-1], flush=True)
    header = ["model", "eval graphs", "eval breaks", "train graphs", "train breaks"]
    title = f"**graph breaks** (`torch._dynamo.explain`, {args.explain_size} x {args.explain_size} input, batch 1)"
    return title + "\n\n" + common.markdown_table(header, rows), data


def _timed_compile(fn, warm) -> float:
    t0 = time.perf_counter()
    warm(fn)
    return time.perf_counter() - t0


def part2(args, device) -> tuple[str, dict]:
    rows, data = [], {}
    cases = []
    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        cases.append((f"MHSA2d 4x512x32x32 train {dname}", "layer", dtype, True))
    for name in args.models:
        cases.append((f"{name} infer bf16", name, torch.bfloat16, False))
        cases.append((f"{name} train bf16", name, torch.bfloat16, True))
    for label, what, dtype, train in cases:
        torch._dynamo.reset()
        if what == "layer":
            model = MHSA2d(512, 4, feat_size=32).to(device)
            x = torch.randn(4, 512, 32, 32, device=device)
        else:
            model = create_model(what).to(device).to(memory_format=torch.channels_last)
            size = model.cfg.img_size
            x = torch.randn(args.batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
        model.train(train)
        compiled = torch.compile(model)

        def make(fn):
            def step():
                xx = x.detach().requires_grad_(train and what == "layer")
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32), \
                        torch.set_grad_enabled(train):
                    out = fn(xx)
                if train:
                    out.float().mean().backward()
                    model.zero_grad(set_to_none=True)
            return step

        steps = {"eager": make(model), "compiled": make(compiled)}
        compile_s = _timed_compile(steps["compiled"], lambda s: (s(), s()))
        samples = common.alternate(steps, args.rounds, 1, device, args.clock)
        med = {k: common.median_ms(v) for k, v in samples.items()}
        data[label] = {"median_ms": med, "compile_s": compile_s}
        rows.append([label, med["eager"], med["compiled"], med["eager"] / med["compiled"], compile_s])
        print(rows[-1], flush=True)
    header = ["case", "eager ms", "compiled ms", "speed-up", "compile + 2 calls s"]
    title = (f"**eager vs torch.compile (inductor, default mode)**, median of {args.rounds} alternating rounds "
             f"({args.clock} clock); models at their default input, batch {args.batch}, channels_last")
    return title + "\n\n" + common.markdown_table(header, rows), data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--part", type=int, choices=[1, 2], nargs="+", default=[1, 2])
    p.add_argument("--explain-size", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["botnet_s1_t3"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = p.parse_args()
    common.run_parts(args, "compile", "torch.compile",
                     {1: lambda device: part1(args), 2: lambda device: part2(args, device)})


if __name__ == "__main__":
    main()
