"""MHSA2d against other implementations of the same layer: speed (forward + backward, and
inference) on the BoT50 c5 shape, and peak training memory on the first c5 block's 64 x 64 map.

Candidates, all with the same weights and the same function (checked before timing):
  ours         MHSA2d, attn_impl="auto" (what the models use: on CPU the chunked path without AMX)
  ours-chunked MHSA2d, per head and query block, hand-written backward
  ours-flex    MHSA2d, FlexAttention with the position term as a score_mod (compiled kernel;
               on CPU its forward, with the chunked backward)
  ours-fold    MHSA2d, position logits folded into q/k, one fused SDPA call
  ours-bias    MHSA2d, (B, heads, N, N) additive bias passed to SDPA
  plain-sdpa   MHSA2d with pos_enc=None: the same layer without the position term (the floor)
  timm         timm.layers.BottleneckAttn(scale_pos_embed=True)
  bt-pytorch   bottleneck_transformer_pytorch.Attention(rel_pos_emb=True) (left out if not installed)

    python benchmarks/attention_layer.py                 # the full table (a few minutes on 2 cores)
    python benchmarks/attention_layer.py --quick         # fewer rounds, no memory table
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys

import torch

import common
from botnet.layers import MHSA2d

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IMPLS = ("ours", "ours-chunked", "ours-flex", "ours-fold", "ours-bias", "plain-sdpa", "timm", "bt-pytorch")
if importlib.util.find_spec("bottleneck_transformer_pytorch") is None:
    IMPLS = IMPLS[:-1]
OTHERS = [i for i in ("timm", "bt-pytorch") if i in IMPLS]
OURS = {"ours": "auto", "ours-chunked": "chunked", "ours-flex": "flex", "ours-fold": "fold", "ours-bias": "bias"}


def build(impl: str, dim: int, heads: int, size: int) -> torch.nn.Module:
    """One candidate layer; every one is given the weights of one reference MHSA2d."""
    torch.manual_seed(0)
    ref = MHSA2d(dim, heads, feat_size=size)
    if impl in OURS:
        m = MHSA2d(dim, heads, feat_size=size, attn_impl=OURS[impl])
        m.load_state_dict(ref.state_dict())
    elif impl == "plain-sdpa":
        m = MHSA2d(dim, heads, pos_enc=None)
        m.qkv.load_state_dict(ref.qkv.state_dict())
    elif impl == "timm":
        from timm.layers.bottleneck_attn import BottleneckAttn

        m = BottleneckAttn(dim, dim, feat_size=(size, size), num_heads=heads, scale_pos_embed=True)
        with torch.no_grad():
            m.qkv.weight.copy_(ref.qkv.weight)
            m.pos_embed.height_rel.copy_(ref.rel_h)
            m.pos_embed.width_rel.copy_(ref.rel_w)
    elif impl == "bt-pytorch":
        from bottleneck_transformer_pytorch.bottleneck_transformer_pytorch import Attention

        m = Attention(dim=dim, fmap_size=(size, size), heads=heads, dim_head=dim // heads, rel_pos_emb=True)
        with torch.no_grad():
            m.to_qkv.weight.copy_(ref.qkv.weight)
            m.pos_emb.rel_height.copy_(ref.rel_h)
            m.pos_emb.rel_width.copy_(ref.rel_w)
    else:
        raise ValueError(impl)
    return m


def check_same_function(device: torch.device) -> float:
    """Largest deviation of any candidate from ours on a small map (fp32): they compute one thing."""
    x = torch.randn(2, 64, 6, 6, device=device)
    outs = {impl: build(impl, 64, 4, 6).to(device)(x) for impl in IMPLS if impl != "plain-sdpa"}
    return max((o - outs["ours-fold"]).abs().max().item() for o in outs.values())


def make_step(m: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, train: bool):
    device = x.device

    def step():
        if train:
            xx = x.detach().requires_grad_(True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                y = m(xx)
            y.float().sum().backward()
            m.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                m(x)

    return step


def speed_table(args, device, train: bool) -> tuple[str, dict]:
    x = torch.randn(args.batch, args.dim, args.size, args.size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mods = {impl: build(impl, args.dim, args.heads, args.size).to(device) for impl in IMPLS}
    results, rows = {}, []
    for dname in args.dtypes:
        fns = {impl: make_step(m, x, DTYPES[dname], train) for impl, m in mods.items()}
        samples = common.alternate(fns, args.rounds, args.warmup, device, args.clock)
        med = {impl: common.median_ms(s) for impl, s in samples.items()}
        results[dname] = {"median_ms": med, "samples_s": samples}
        ours = med["ours"]
        rows.append([dname] + [med[i] for i in IMPLS] + [med[i] / ours for i in OTHERS]
                    + [ours / med["plain-sdpa"], med["ours-flex"] / med["ours-chunked"],
                       med["ours-flex"] / med["plain-sdpa"]])
    header = (["dtype"] + [f"{i} ms" for i in IMPLS] + [f"{i} / ours" for i in OTHERS]
              + ["ours / plain-sdpa", "flex / chunked", "flex / plain-sdpa"])
    mode = "forward + backward" if train else "inference (no grad)"
    title = (f"**{mode}**, x = {args.batch} x {args.dim} x {args.size} x {args.size}, {args.heads} heads, "
             f"{'channels_last' if args.channels_last else 'NCHW'} input, median of {args.rounds} alternating "
             f"rounds ({args.clock} clock)")
    return title + "\n\n" + common.markdown_table(header, rows), results


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(args) -> None:
    """Peak memory of one training step, measured in a fresh process (prints JSON)."""
    device = torch.device(args.device)
    m = build(args.child_impl, args.dim, args.heads, args.mem_size).to(device)
    x = torch.randn(args.mem_batch, args.dim, args.mem_size, args.mem_size, device=device)
    step = make_step(m, x, DTYPES[args.child_dtype], train=True)
    step()  # warm-up: flex compiles its kernel on the first call (the compiler's memory is not the step's)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # CPU: high-water mark of the resident set above the set-up. Writing 5 to clear_refs resets
        # the kernel's mark (VmHWM) so import-time peaks do not hide the step's; a fixed mmap
        # threshold makes glibc return every large block, so the mark follows live tensors.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_mb("VmRSS")
        step()
        peak = _status_mb("VmHWM") - base
    print(json.dumps({"peak_mb": peak}))


def memory_table(args, device) -> tuple[str, dict]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res, rows = {}, []
    for dname in args.dtypes:
        res[dname] = {}
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--device", str(device), "--mem-size", str(args.mem_size),
                   "--mem-batch", str(args.mem_batch), "--dim", str(args.dim), "--heads", str(args.heads),
                   "--child-impl", impl, "--child-dtype", dname]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                res[dname][impl] = float("nan")
                print(f"memory child {impl} {dname} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            res[dname][impl] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        r = res[dname]
        floor = r["plain-sdpa"] or float("nan")  # (0 MB on maps too small to register)
        rows.append([dname] + [r[i] for i in IMPLS] + [r["ours"] / floor, r["ours-flex"] / floor])
    header = ["dtype"] + [f"{i} MB" for i in IMPLS] + ["ours / plain-sdpa", "flex / plain-sdpa"]
    title = (f"**peak memory of one training step** (forward + backward) above the set-up, x = {args.mem_batch} x "
             f"{args.dim} x {args.mem_size} x {args.mem_size} ({args.mem_size ** 2} tokens), one fresh process per cell"
             f" ({'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'peak RSS'})")
    return title + "\n\n" + common.markdown_table(header, rows), res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--mem-size", type=int, default=64)
    p.add_argument("--mem-batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-infer", action="store_true")
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 warm-up, no memory table")
    p.add_argument("--out", help="report name under results/ (default attention_layer[_DEVICE])")
    p.add_argument("--child-impl", help=argparse.SUPPRESS)
    p.add_argument("--child-dtype", help=argparse.SUPPRESS)
    args = p.parse_args()
    common.setup_threads(args.threads)
    if args.child_impl:
        return memory_child(args)
    if args.quick:
        args.rounds, args.warmup, args.no_memory = 3, 1, True
    device = torch.device(args.device)
    info = common.machine(device)
    diff = check_same_function(device)
    sections = [f"All candidates agree with ours to {diff:.1e} (fp32, 6 x 6 map), so they compute one function."]
    data = {"max_abs_diff": diff}
    text, data["train"] = speed_table(args, device, train=True)
    sections.append(text)
    if not args.no_infer:
        text, data["infer"] = speed_table(args, device, train=False)
        sections.append(text)
    if not args.no_memory:
        text, data["memory"] = memory_table(args, device)
        sections.append(text)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    common.write_report(args.out or f"attention_layer{suffix}", f"MHSA2d vs other implementations ({device.type})", info,
                        sections, data)


if __name__ == "__main__":
    main()
