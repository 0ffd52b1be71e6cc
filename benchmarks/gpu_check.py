"""The prepared GPU validation run: every check of the CUDA path in one command, written as Markdown
and JSON (``results/gpu_check_<device>[_quick].md``). Under 8 minutes on one CUDA device; the same
code runs small and slowly on the CPU (``--device cpu --quick``) so that mistakes show up there first.

    python benchmarks/gpu_check.py                         # one CUDA device
    python benchmarks/gpu_check.py --device cpu --quick    # the CPU run of the same checks

Sections, in order (each timed; those marked * are skipped, and say so, once ``--budget-s`` is spent):
 1. tests: ``pytest -k cuda``, every CUDA test, the compiled model's included (they skip without a device)
 2. equality: every attention path on the device (float32 without TF32, and bf16 autocast) against
    the float64 CPU reference (the "bias" path, the paper's formula written out, which the tests
    check against the slow reference), values and gradients
 3. DDP and SyncBatchNorm on the detection model (``gpu_check_dist``)
 4. attention table: ours (auto), flex, fold, bias, plain SDPA (no position term), timm's
    ``BottleneckAttn``, bf16 forward + backward, peak memory; the largest single allocation at the
    largest map (no N x N tensor: below one score map per image, B * N^2 * 2 bytes); the first call
    at each map size (flex compiles then: what evaluation over images of many sizes pays)
 5*. backbones: BoT50 vs R50 training throughput at 1024 (bf16, channels_last; goal >= 0.85x)
 6*. one Mask R-CNN training step, BoT50-FPN vs torchvision's ``maskrcnn_resnet50_fpn``
 7*. the paper's speed claim (arXiv 2101.11605, section 6 and figure 1: T7 1.64x faster than
    EfficientNet-B7 on TPU-v3): T3..T7 at their sizes vs timm's B4..B7 at 380 / 456 / 528 / 600
 8*. torch.compile of the BoT50 training step (inductor, one graph), against eager
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

import attention_layer as al
import common
import gpu_check_dist
from botnet.layers import MHSA2d
from botnet.layers.attention import ATTN_IMPLS
from gpu_check_models import BF16, largest_alloc_mb, peak_mb, run_backbones, run_compile, run_maskrcnn, run_paper, timed

ROOT = Path(__file__).resolve().parents[1]
#: sizes of the CUDA run and of the quick (CPU) run; eq: (dim, heads, table size, map size)
FULL = {"sizes": (32, 64, 80), "batch": 8, "dim": 512, "heads": 4, "canvas": 1024, "bb_batch": 8, "det_canvas": 1024,
        "det_batch": 8, "paper_batch": 32, "paper_size": None, "compile_model": "botnet50", "rounds": 5, "warmup": 2,
        "eq": [(16, 2, (4, 6), (7, 9)), (512, 4, (16, 16), (32, 32))]}
QUICK = {"sizes": (16, 24, 48), "batch": 1, "dim": 64, "heads": 4, "canvas": 128, "bb_batch": 1, "det_canvas": 128,
         "det_batch": 1, "paper_batch": 1, "paper_size": 64, "compile_model": "botnet_tiny", "rounds": 1, "warmup": 1,
         "eq": [(16, 2, (4, 6), (7, 9)), (64, 2, (4, 4), (5, 5))]}
#: seconds an optional section takes on one GPU (an estimate): it starts only if it fits the budget
COST_S = {"backbones": 45, "maskrcnn": 45, "paper": 120, "compile": 150}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double().cpu() - want).abs().max() / want.abs().max().clamp(min=1e-30))


def run_tests(args, cfg, device):
    # every CUDA test, the compiled model's too (section 8 compiles the full-size training step)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda", "tests"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.test_timeout, check=False)
    tail = "\n".join(out.stdout.strip().splitlines()[-12:])
    goals = [("the CUDA tests pass" if device.type == "cuda" else "the CUDA tests collect and skip cleanly",
              out.returncode == 0, tail.splitlines()[-1] if tail else "")]
    return f"`python {shlex.join(cmd[1:])}` (exit {out.returncode})\n\n```\n{tail}\n```", {"rc": out.returncode}, goals


def grads_of(m, x, dtype=None):
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=dtype or BF16, enabled=dtype is not None):
        out = m(x)
    cot = torch.linspace(-1, 1, out.numel(), device=x.device).view_as(out)
    grads = torch.autograd.grad(out.float(), [x, *m.parameters()], cot)
    return [out.detach(), *grads]


def run_equality(args, cfg, device):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rows, data, ok = [], [], True
    for dim, heads, feat, size in cfg["eq"]:
        x = torch.randn(2, dim, *size)
        ref = MHSA2d(dim, heads, feat_size=feat, attn_impl="bias").double()
        with torch.no_grad():  # unit-scale q, k, v and position terms that matter: a sharp attention
            ref.qkv.weight.normal_(std=dim**-0.5)
            ref.rel_h.mul_(4)
            ref.rel_w.mul_(4)
        want = grads_of(ref, x.double())
        for impl in ATTN_IMPLS:
            m = MHSA2d(dim, heads, feat_size=feat, attn_impl=impl).to(device)
            m.load_state_dict(ref.state_dict())
            xd = x.to(device)
            picked = m.choose_path(m.project(xd), size)  # with gradients, as in training
            fp32 = max(rel_err(g, w) for g, w in zip(grads_of(m, xd), want))
            low = max(float((g.double().cpu() - w).norm() / w.norm()) for g, w in zip(grads_of(m, xd, BF16), want))
            good = fp32 < 1e-4 and low < 0.03
            ok &= good
            rows.append([f"d={dim // heads} {size[0]}x{size[1]} (tables {feat[0]}x{feat[1]})", impl, picked, fp32, low,
                         "ok" if good else "FAIL"])
            data.append(dict(zip(["case", "impl", "picked", "fp32_max_rel", "bf16_rel_norm", "ok"], rows[-1])))
    head = ["case", "attn_impl", "path taken", "fp32 max rel. error", "bf16 rel. error", ""]
    text = ("Output and gradients (input, qkv weight, both tables) against float64 on the CPU; float32 bound 1e-4 "
            "(max |error| / max |value|), bf16 autocast bound 3 % (norm).\n\n" + common.markdown_table(head, rows))
    return text, data, [("every attention path equals the float64 reference", ok, f"{len(rows)} cases")]


def run_dist(args, cfg, device):
    rows, data, ok = [], [], True
    for backend, world in gpu_check_dist.cases(device.type):
        try:
            res = gpu_check_dist.run_case(backend, world, device.type, cfg["canvas"])
        except Exception as e:  # noqa: BLE001 (one case failing leaves the others to run)
            res = {"backend": backend, "world": world, "error": repr(e)[-1000:], "expected": False}
        ok &= res["expected"]
        data.append(res)
        rows.append([backend, world] + [res.get(k, "error") for k in ("sync_bn_layers", "params_equal",
                                                                     "bn_stats_equal")]
                    + ["ok" if res["expected"] else f"FAIL {res.get('error', '')}"])
    head = ["backend", "ranks", "SyncBatchNorm layers", "params equal after the step", "BN stats equal", ""]
    return common.markdown_table(head, rows), data, [("DDP and SyncBatchNorm behave as set up", ok, "")]


def run_attention(args, cfg, device):
    impls = ["ours", "ours-flex", "ours-fold", "ours-bias", "plain-sdpa", "timm"]
    impls += ["ours-chunked"] if device.type == "cpu" else []
    rows, mem_rows, data, goals, first_rows = [], [], {}, [], []
    for size in cfg["sizes"]:
        x = torch.randn(cfg["batch"], cfg["dim"], size, size, device=device)
        steps = {i: al.make_step(al.build(i, cfg["dim"], cfg["heads"], size).to(device), x, BF16, True) for i in impls}
        first = {}  # the first call at a new map size: flex compiles its kernels for it then
        for i in ("ours", "ours-flex", "ours-fold"):
            common.sync(device)
            t0 = time.perf_counter()
            steps[i]()
            common.sync(device)
            first[i] = time.perf_counter() - t0
        first_rows.append([f"{size}x{size}"] + [first[i] for i in first])
        med = timed(steps, cfg, device)
        mem = {i: peak_mb(s, device) for i, s in steps.items()}
        data[size] = {"median_ms": med, "peak_mb": mem, "first_call_s": first}
        rows.append([f"{size}x{size}"] + [med[i] for i in impls]
                    + [med["timm"] / med["ours"], med["ours"] / med["plain-sdpa"], med["ours-flex"] / med["plain-sdpa"]])
        mem_rows.append([f"{size}x{size}"] + [mem[i] for i in impls])
    size = cfg["sizes"][-1]  # the largest map: its steps are the last built
    full_map_mb = cfg["batch"] * size**4 * 2 / 2**20
    largest = {i: largest_alloc_mb(s, device) for i, s in steps.items()}
    data["largest_alloc_mb"], data["score_map_mb"] = largest, full_map_mb
    if 64 in data:
        med = data[64]["median_ms"]
        goals += [("attention 64x64 bf16: ours >= 3x timm (fwd+bwd)", med["timm"] / med["ours"] >= 3,
                   f"{med['timm'] / med['ours']:.2f}x"),
                  ("attention 64x64 bf16: ours within 1.3x plain SDPA", med["ours"] / med["plain-sdpa"] <= 1.3,
                   f"{med['ours'] / med['plain-sdpa']:.2f}x")]
    goals += [(f"no N x N allocation at {size}x{size} ({i})", largest[i] < full_map_mb, f"{largest[i]:.1f} MB")
              for i in ("ours", "ours-flex")]
    head = ["map"] + [f"{i} ms" for i in impls] + ["timm / ours", "ours / plain", "flex / plain"]
    title = (f"x = {cfg['batch']} x {cfg['dim']} x H x W, {cfg['heads']} heads, bf16 autocast, forward + backward, "
             f"median of {cfg['rounds']} alternating rounds")
    text = (title + "\n\n" + common.markdown_table(head, rows) + "\n\nPeak memory of one step (MB above the inputs)"
            "\n\n" + common.markdown_table(["map"] + [f"{i} MB" for i in impls], mem_rows)
            + f"\n\nLargest single allocation at {size}x{size} (one score map per image: {full_map_mb:.1f} MB)\n\n"
            + common.markdown_table(impls, [[largest[i] for i in impls]])
            + "\n\nFirst call at each map size, seconds (what evaluation over images of many sizes pays per new "
            "size: flex compiles its kernels then)\n\n"
            + common.markdown_table(["map", "ours s", "ours-flex s", "ours-fold s"], first_rows))
    return text, data, goals


# title, function, estimated cost if optional (else None)
SECTIONS = [("CUDA tests", run_tests, None), ("attention paths equal the float64 reference", run_equality, None),
            ("DDP and SyncBatchNorm (detection)", run_dist, None), ("attention table", run_attention, None),
            ("BoT50 vs R50 backbones", run_backbones, "backbones"),
            ("Mask R-CNN training step", run_maskrcnn, "maskrcnn"),
            ("the paper's speed claim: T3..T7 vs EfficientNet-B4..B7", run_paper, "paper"),
            ("torch.compile on the BoT50 training step", run_compile, "compile")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes and one round (the CPU run)")
    p.add_argument("--budget-s", type=float, default=None, help="an optional section starts only if its estimated "
                   "cost on a GPU (COST_S) ends before this (default: 450 on CUDA, no limit elsewhere)")
    p.add_argument("--test-timeout", type=float, default=300)
    p.add_argument("--only", nargs="+", type=int, help="run only these section numbers (1-8)")
    p.add_argument("--out-dir", type=Path, default=common.RESULTS)
    args = p.parse_args()
    device, cfg = torch.device(args.device), QUICK if args.quick else FULL
    budget = args.budget_s if args.budget_s is not None else 450 if device.type == "cuda" else float("inf")
    start, texts, data, goals = time.perf_counter(), [], {}, []
    if device.type != "cuda":
        texts.append(f"**No CUDA device: this is the {device.type} run.** The checks run as on a GPU, at small sizes; "
                     "the speed goals are for CUDA and are listed here only to exercise the code, and peak memory "
                     "(CUDA's allocator statistics) reads nan.")
    for number, (title, fn, cost) in enumerate(SECTIONS, 1):
        elapsed = time.perf_counter() - start
        unselected = args.only and number not in args.only
        if unselected or (cost is not None and elapsed + COST_S[cost] > budget):
            texts.append(f"### {number}. {title}\n\nskipped ({'not selected' if unselected else 'time budget'})")
            continue
        print(f"[{elapsed:5.0f} s] {number}. {title}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            text, data[title], new_goals = fn(args, cfg, device)
        except Exception as e:  # noqa: BLE001 (a failing section is reported, the others still run)
            text, new_goals = f"FAILED: {e!r}\n\n```\n{traceback.format_exc()[-3000:]}\n```", [(title, False, "error")]
        goals += new_goals
        texts.append(f"### {number}. {title} ({time.perf_counter() - t0:.0f} s)\n\n{text}")
    summary = common.markdown_table(["goal", "", "measured"], [[g, "PASS" if ok else "FAIL", v] for g, ok, v in goals])
    texts.insert(int(device.type != "cuda"), f"Total {time.perf_counter() - start:.0f} s.\n\n" + summary)
    info = common.machine(device)
    name = f"gpu_check_{device.type}" + ("_quick" if args.quick else "")
    head = f"## GPU validation run ({device.type})\n\nCommand: `{common.command()}`\n\nMachine: " + ", ".join(
        f"{k} {v}" for k, v in info.items())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.md").write_text("\n\n".join([head, *texts]) + "\n")
    (args.out_dir / f"{name}.json").write_text(json.dumps(
        {"machine": info, "command": common.command(), "goals": goals, **data}, indent=1, default=str))
    print("\n\n".join([head, *texts]))


if __name__ == "__main__":
    main()
