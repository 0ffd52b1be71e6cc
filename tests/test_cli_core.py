import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from botnet.cli import main


def test_profile_prints_counts_and_timings(capsys):
    assert main(["profile", "botnet_tiny", "--img-size", "64", "48", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "multiply-adds" in out
    assert "infer float32" in out and "infer bfloat16" in out


def parse_paper_table(text: str) -> dict[str, dict]:
    """The rows of ``botnet profile --paper``: model -> input, params and multiply-adds (ours and
    the paper's; None where the paper gives none)."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) < 9 or not cells[1].isdigit():
            continue  # the header and the footnote
        rows[cells[0]] = {"input": int(cells[1]), "params_m": float(cells[2]), "paper_params_m": float(cells[3]),
                          "gmacs": float(cells[5]), "paper_gmacs": None if cells[6] == "-" else float(cells[6])}
    return rows


@pytest.mark.slow
def test_profile_paper_table_counts_within_the_paper_tolerance(capsys):
    from botnet.models.presets import PAPER_FIGURES

    assert main(["profile", "--paper"]) == 0
    rows = parse_paper_table(capsys.readouterr().out)
    assert sorted(rows) == sorted(r[0] for r in PAPER_FIGURES)
    for name, size, params_m, gmacs, _ in PAPER_FIGURES:
        row = rows[name]
        assert row["input"] == size and row["paper_params_m"] == pytest.approx(params_m, abs=0.05)
        # the measured columns, against the paper: parameters within 1 %, multiply-adds within 3 %
        assert abs(row["params_m"] - params_m) / params_m < 0.01, (name, row)
        if gmacs is not None:
            assert row["paper_gmacs"] == pytest.approx(gmacs, abs=0.005)
            assert abs(row["gmacs"] - gmacs) / gmacs < 0.03, (name, row)
    # backbones at 1024 x 1024 (arXiv 2101.11605, Table 1): BoT50 102.98 G against R50 85.4 G
    assert rows["botnet50"]["gmacs"] / rows["resnet50"]["gmacs"] == pytest.approx(102.98 / 85.4, rel=0.01)
    # the kept output (benchmarks/results/paper_figures.json) and the README's table are this count
    root = Path(__file__).resolve().parents[1]
    kept = {r["model"]: r for r in json.loads((root / "benchmarks/results/paper_figures.json").read_text())["rows"]}
    readme = re.findall(r"^\| `(\w+)` \|[^|]+\|[^|]+\| ([\d.]+)M / [\d.]+M \| ([\d.]+) / [\d.-]+ \|$",
                        (root / "README.md").read_text(), re.M)
    assert len(readme) >= 10
    for name, params_m, gmacs in readme:
        assert (float(params_m), float(gmacs)) == (rows[name]["params_m"], rows[name]["gmacs"]), f"README: {name}"
    for name, row in rows.items():
        assert (round(kept[name]["params_m"], 2), round(kept[name]["gmacs"], 2)) == (row["params_m"], row["gmacs"]), \
            f"benchmarks/results/paper_figures.json: {name} (python benchmarks/paper_figures.py)"


def test_unknown_model_exits_nonzero_without_traceback():
    r = subprocess.run([sys.executable, "-m", "botnet", "profile", "botnet51"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown model 'botnet51'" in r.stderr and "Traceback" not in r.stderr


def test_models_listing(capsys):
    assert main(["models", "botnet_s1_*"]) == 0
    out = capsys.readouterr().out
    assert "botnet_s1_t3" in out and "resnet50" not in out
