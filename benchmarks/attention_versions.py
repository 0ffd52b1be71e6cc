"""MHSA2d of this tree against the same layer of another checkout (e.g. an older commit), one
thread, CPU time of this thread: a refactor must not make the attention slower.

Each version runs in its own process (``PYTHONPATH`` set to its ``src``), the rounds alternate
between the two, and the median CPU time per call is reported (thread CPU time does not count what
other processes take from the machine).

    git worktree add /tmp/old COMMIT
    python benchmarks/attention_versions.py --other /tmp/old/src --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import common

WORKER = r"""
import contextlib, json, sys, time, torch
dim, heads, size, batch, rounds, threads = (int(v) for v in sys.argv[1:7])
bf16 = sys.argv[7] == "bf16"
torch.set_num_threads(threads)
# one thread: CPU time of the thread (robust to other work); several: wall clock
clock = time.thread_time if threads == 1 else time.perf_counter
from botnet.layers import MHSA2d
torch.manual_seed(0)
m = MHSA2d(dim, heads, feat_size=(size, size))
x = torch.randn(batch, dim, size, size)
def cast():
    return torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
def train():
    xx = x.detach().requires_grad_(True)
    with cast():
        y = m(xx)
    y.float().sum().backward()
def infer():
    with torch.no_grad(), cast():
        m(x)
out = {}
for name, fn in (("fwd+bwd", train), ("inference", infer)):
    fn(); fn()
    times = []
    for _ in range(rounds):
        t0 = clock(); fn(); times.append(clock() - t0)
    out[name] = times
print(json.dumps(out))
"""


def run(src: str, args, dtype: str) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run([sys.executable, "-c", WORKER, str(args.dim), str(args.heads), str(args.size),
                          str(args.batch), "1", str(args.threads), dtype],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="the other checkout's src folder")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="bf16 runs the layer under CPU autocast, as a bf16 training run does")
    p.add_argument("--threads", type=int, default=1, help="1: CPU time of the thread; more: wall clock")
    p.add_argument("--out", default="attention_versions", help="report name under results/")
    args = p.parse_args()
    ours = str(Path(__file__).resolve().parents[1] / "src")
    samples = {"this tree": {}, "other": {}}
    for _ in range(args.rounds):  # alternate the versions round by round
        for dtype in args.dtypes:
            for name, src in (("this tree", ours), ("other", args.other)):
                for kind, t in run(src, args, dtype).items():
                    samples[name].setdefault(f"{dtype} {kind}", []).extend(t)
    med = {n: {k: statistics.median(v) * 1000 for k, v in d.items()} for n, d in samples.items()}
    rows = [[kind, med["other"][kind], med["this tree"][kind], med["this tree"][kind] / med["other"][kind]]
            for kind in med["this tree"]]
    info = common.machine(__import__("torch").device("cpu"))
    clock = "CPU time of the thread" if args.threads == 1 else "wall clock"
    section = (f"MHSA2d dim {args.dim}, {args.heads} heads, {args.size}x{args.size}, batch {args.batch}, "
               f"{args.threads} thread(s), {clock}, median of {args.rounds} alternating rounds; "
               f"other = `{args.other}`\n\n"
               + common.markdown_table(["dtype, pass", "other ms", "this tree ms", "this / other"], rows))
    common.write_report(args.out, "Attention layer: this tree against another checkout", info,
                        [section], {"median_ms": med, "samples_s": samples})


if __name__ == "__main__":
    main()
