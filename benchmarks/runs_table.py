"""One table of the final and best evaluations of finished training runs, read from their
``metrics.json`` (what ``botnet train`` writes): for ablations run with the ``botnet`` command
itself, whose metrics files are kept under ``benchmarks/results/``.

    python benchmarks/runs_table.py benchmarks/results/small_det_ablation/*_metrics.json --name small_det_ablation
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common

COLUMNS = {"box_ap": "box AP", "box_ap50": "AP50", "box_ap75": "AP75", "mask_ap": "mask AP", "top1": "top-1"}


def fmt(values: list) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    return f"{sum(values) / len(values):.1f}" if values else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", nargs="+", type=Path, help="metrics.json files of finished runs")
    p.add_argument("--name", required=True, help="results/NAME.md and NAME.json")
    args = p.parse_args()
    # (run name, file, metrics), one per file: two files of one name stay two rows
    runs = [(path.name.removesuffix("_metrics.json").removesuffix(".json"), path, json.loads(path.read_text()))
            for path in args.metrics]
    keys = [k for k in COLUMNS if any(f"val_{k}" in m for _, _, m in runs)]
    header = ["run"] + [f"{COLUMNS[k]} final" for k in keys] + [f"{COLUMNS[keys[0]]} best", "file"]

    def cells(ms: list[dict]) -> list[str]:
        return [fmt([m.get(f"val_{k}") for m in ms]) for k in keys] + [fmt([m.get(f"best_val_{keys[0]}") for m in ms])]

    rows = [[name] + cells([m]) + [f"`{path.name}`"] for name, path, m in runs]
    groups: dict[str, list[dict]] = {}
    for name, _, m in runs:  # NAME_seedK: the mean over seeds of each NAME
        if "_seed" in name:
            groups.setdefault(name.rsplit("_seed", 1)[0], []).append(m)
    rows += [[f"{g}, mean of {len(ms)} seeds"] + cells(ms) + ["-"] for g, ms in groups.items() if len(ms) > 1]
    common.write_report(args.name, "Training runs: final and best evaluations", {"files": "metrics.json of each run"},
                        [common.markdown_table(header, rows)], {"runs": {str(path): m for _, path, m in runs}})


if __name__ == "__main__":
    main()
