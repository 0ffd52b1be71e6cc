"""Parameters and multiply-adds of every model with a figure in the paper, against that figure
(arXiv 2101.11605: Table 1 for the 1024 x 1024 backbones, the ImageNet tables for the S1 / T
models).

The counts are exact functions of the architecture (no timing): parameters include the 1000-way
classifier; multiply-adds are counted by ``botnet.profile.count_macs`` (``torch.utils.flop_counter``
with the CPU fused-attention op registered), for the backbone alone where the paper counts the
backbone. The README's model table is this file's table. Writes ``results/paper_figures.md`` and
``.json``; ``botnet profile --paper`` prints the same rows.

    python benchmarks/paper_figures.py
"""
from __future__ import annotations

import torch

import common
from botnet.profile import paper_table


def _pct(ours: float, paper: float | None) -> str:
    return f"{100 * (ours - paper) / paper:+.2f}%" if paper else "-"


def main() -> None:
    info = common.machine(torch.device("cpu"))
    info = {k: v for k, v in info.items() if k in ("date", "torch")}  # counts do not depend on the machine
    rows = paper_table()
    table = common.markdown_table(
        ["model", "input", "counted", "params M", "paper", "diff", "G M.Adds", "paper", "diff"],
        [[r["model"], r["input"], "backbone" if r["backbone_only"] else "whole model", f"{r['params_m']:.2f}",
          f"{r['paper_params_m']:g}", _pct(r["params_m"], r["paper_params_m"]), f"{r['gmacs']:.2f}",
          f"{r['paper_gmacs']:g}" if r["paper_gmacs"] else "-", _pct(r["gmacs"], r["paper_gmacs"])] for r in rows])
    text = ("**parameters and multiply-adds** (M.Adds, the paper's 'FLOPs'), ours against the paper; "
            "parameters include the 1000-way classifier\n\n" + table)
    common.write_report("paper_figures", "Model sizes against the paper", info, [text], {"rows": rows})


if __name__ == "__main__":
    main()
