"""The machine's matmul peak: the best of several 4096^3 ``torch.mm`` calls in bf16 and in fp32.

BENCHMARKS.md's statements about how far bf16 runs ahead of fp32 on this CPU, and the reference of
the MFU table (``backbones.py --part 2`` measures its own bf16 peak in the same run), come from
here. Writes ``results/matmul_peak[_DEVICE].md`` and ``.json``.

    python benchmarks/matmul_peak.py
"""
from __future__ import annotations

import argparse

import torch

import common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    common.setup_threads(args.threads)
    device = torch.device(args.device)
    info = common.machine(device)
    peaks = {name: common.matmul_peak_tflops(device, dtype, args.n, args.rounds)
             for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    rows = [[name, f"{peak:.3f}"] for name, peak in peaks.items()]
    ratio = peaks["bf16"] / peaks["fp32"]
    table = common.markdown_table(["dtype", "TFLOP/s"], rows)
    text = (f"**{args.n}^3 torch.mm**, best of {args.rounds} rounds after 2 warm-up calls (wall clock)\n\n{table}\n\n"
            f"bf16 / fp32 = {ratio:.2f}")
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    common.write_report(f"matmul_peak{suffix}", f"Matmul peak ({device.type})", info, [text],
                        {"n": args.n, "rounds": args.rounds, "tflops": peaks, "bf16_over_fp32": ratio})


if __name__ == "__main__":
    main()
