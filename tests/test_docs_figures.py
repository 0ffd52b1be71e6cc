"""Figures with their output kept: every measured figure in the README, the docs and BENCHMARKS.md
names a file under benchmarks/results/, that file exists, it records the command that wrote it,
its name is the one that command writes, and BENCHMARKS.md includes it as written."""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import include_results  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
DOCS = [ROOT / "README.md", BENCHMARKS, *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "src" / "botnet" / "configs").glob("*.yaml"))]
CITED = re.compile(r"results/([A-Za-z0-9_.-]+\.(?:md|json|png))")


def cited_files() -> dict[str, list[str]]:
    """results files named in each document; a name followed by 'at commit' is history (git)."""
    cited: dict[str, list[str]] = {}
    for doc in DOCS:
        text = doc.read_text()
        for m in CITED.finditer(text):
            if "NAME" in m.group(1) or "at commit" in text[m.end():m.end() + 14]:
                continue  # a pattern (results/NAME.md), or a file of an earlier commit
            cited.setdefault(doc.relative_to(ROOT).as_posix(), []).append(m.group(1))
    return cited


def test_every_cited_results_file_exists():
    cited = cited_files()
    assert "BENCHMARKS.md" in cited and "docs/detection.md" in cited
    missing = {doc: sorted({n for n in names if not (RESULTS / n).is_file()}) for doc, names in cited.items()}
    missing = {doc: names for doc, names in missing.items() if names}
    assert not missing, f"figures cite results files that are not in benchmarks/results/: {missing}"


def _option(argv: list[str], flag: str, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


def _options(argv: list[str], flag: str) -> list[str]:
    if flag not in argv:
        return []
    values = []
    for arg in argv[argv.index(flag) + 1:]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values


def name_written_by(command: str) -> str | None:
    """The report name a benchmarks/ script writes for ``command`` (None for a script not known
    here): ``--out`` where the script takes it, else the script's own rule, plus ``_DEVICE`` off
    the CPU."""
    argv = shlex.split(command)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
        argv = argv[1:]  # environment settings before the command (an emulated CPU)
    assert argv[0] == "python" and argv[1].endswith(".py"), command
    script, args = Path(argv[1]).stem, argv[2:]
    device = _option(args, "--device", "cpu")
    suffix = "" if device == "cpu" else f"_{device}"
    if script in ("attention_layer", "demo", "demo_step") and "--out" in args:
        return _option(args, "--out")
    if script == "attention_scaling":
        return f"attention_scaling_{_option(args, '--dtype', 'bf16')}{suffix}"
    if script in ("backbones", "compile"):
        parts = "".join(sorted(_options(args, "--part"))) or "12"
        return f"{script}_part{parts}{suffix}"
    if script == "demo":
        return "demo_ablation" if "--ablation" in args else "demo"
    if script in ("attention_layer", "demo_step", "det_step", "matmul_peak"):
        return f"{script}{suffix}"
    if script == "paper_figures":
        return script
    if script == "small_real_det":
        return _option(args, "--name", script)
    return None


def test_each_results_file_is_what_its_command_writes():
    reports = sorted(RESULTS.glob("*.md"))
    assert reports
    wrong = {}
    for md in reports:
        found = re.search(r"^Command: `(.+)`$", md.read_text(), re.M)
        assert found, f"{md.name}: no Command line"
        command = found.group(1)
        data = md.with_suffix(".json")
        if data.is_file():
            recorded = json.loads(data.read_text())
            assert recorded["command"] == command, f"{data.name} and {md.name} come from different runs"
            assert recorded.get("name", md.stem) == md.stem, f"{data.name} was written as {recorded['name']}"
        expected = name_written_by(command)
        if expected is not None and expected != md.stem:
            wrong[md.name] = f"`{command}` writes {expected}.md"
    assert not wrong, wrong


def _included_lines(name: str) -> list[str]:
    """The non-blank lines of results/NAME.md as BENCHMARKS.md includes them (what
    benchmarks/include_results.py writes there: without the file's own heading, pictures linked from
    the repository root)."""
    return [line for line in include_results.included(name) if line.strip()]


def test_benchmarks_md_includes_each_results_file_as_written():
    text = BENCHMARKS.read_text()
    files = re.findall(r"^File: `benchmarks/results/([A-Za-z0-9_.-]+\.md)`", text, re.M)
    assert len(files) >= 8
    stale = {}
    for m in re.finditer(r"^File: `benchmarks/results/([A-Za-z0-9_.-]+\.md)`.*$", text, re.M):
        section = text[m.end():]
        pos = 0
        for line in _included_lines(m.group(1)):
            at = section.find(line, pos)
            if at < 0:
                stale[m.group(1)] = line
                break
            pos = at + len(line)
    assert not stale, f"BENCHMARKS.md differs from these results files (first line not found): {stale}"
