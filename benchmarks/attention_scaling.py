"""The attention layer across map sizes: forward + backward time of ours, plain SDPA (no position
term, the floor) and timm's BottleneckAttn from 8 x 8 to 64 x 64 tokens, as a table and a plot
(``results/attention_scaling.png``). Same candidates and weights as ``attention_layer.py``.

    python benchmarks/attention_scaling.py                  # bf16 autocast, batch 2
    python benchmarks/attention_scaling.py --dtype fp32
"""
from __future__ import annotations

import argparse

import torch

import common
from attention_layer import DTYPES, build, make_step

CANDIDATES = ("ours", "plain-sdpa", "timm")


def plot(path, sizes, med, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [s * s for s in sizes]
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    for name in CANDIDATES:
        ax_t.plot(tokens, [med[s][name] for s in sizes], marker="o", label=name)
    ax_t.set(xscale="log", yscale="log", xlabel="tokens (H x W)", ylabel="ms per step", title="forward + backward")
    ax_t.legend()
    ax_r.plot(tokens, [med[s]["timm"] / med[s]["ours"] for s in sizes], marker="o", label="timm / ours (speed-up)")
    ax_r.plot(tokens, [med[s]["ours"] / med[s]["plain-sdpa"] for s in sizes], marker="o",
              label="ours / plain-sdpa (cost of the position term)")
    ax_r.axhline(1.0, color="grey", lw=0.8)
    ax_r.set(xscale="log", xlabel="tokens (H x W)", ylabel="ratio", title="ratios")
    ax_r.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    common.setup_threads(args.threads)
    device = torch.device(args.device)
    info = common.machine(device)
    med, rows = {}, []
    for size in args.sizes:
        x = torch.randn(args.batch, args.dim, size, size, device=device)
        fns = {name: make_step(build(name, args.dim, args.heads, size).to(device), x, DTYPES[args.dtype], True)
               for name in CANDIDATES}
        samples = common.alternate(fns, args.rounds, args.warmup, device)
        med[size] = {name: common.median_ms(s) for name, s in samples.items()}
        m = med[size]
        rows.append([f"{size} x {size}", size * size, m["ours"], m["plain-sdpa"], m["timm"], m["timm"] / m["ours"],
                     m["ours"] / m["plain-sdpa"]])
        print(rows[-1], flush=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    name = f"attention_scaling_{args.dtype}{suffix}"
    title = (f"forward + backward, batch {args.batch}, {args.dim} channels, {args.heads} heads, {args.dtype}, "
             f"median of {args.rounds} alternating rounds (wall clock), {info['cpu']}")
    png = common.RESULTS / f"{name}.png"
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    plot(png, args.sizes, med, title)
    table = common.markdown_table(["map", "tokens", "ours ms", "plain-sdpa ms", "timm ms", "timm / ours",
                                   "ours / plain-sdpa"], rows)
    common.write_report(name, f"MHSA2d across map sizes ({device.type}, {args.dtype})", info,
                        [f"**{title}**", table, f"![attention across map sizes]({png.name})"], {"median_ms": med})


if __name__ == "__main__":
    main()
