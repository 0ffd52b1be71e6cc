"""Refresh BENCHMARKS.md from benchmarks/results/: every table filed under a line

    File: `benchmarks/results/NAME.md`

is replaced by NAME.md as its script wrote it (without the file's own heading, pictures linked
from the repository root), up to the next heading of BENCHMARKS.md. The text around the tables
is left as it is: figures quoted in it are checked by hand against the files they name.

    python benchmarks/include_results.py            # rewrite BENCHMARKS.md in place
    python benchmarks/include_results.py --check    # exit 1 if any table differs from its file
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_LINE = re.compile(r"^File: `benchmarks/results/([A-Za-z0-9_.-]+\.md)`.*$")


def included(name: str) -> list[str]:
    lines = (ROOT / "benchmarks" / "results" / name).read_text().rstrip("\n").split("\n")[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return [re.sub(r"^(!\[[^]]*\]\()([^/)]+\))", r"\1benchmarks/results/\2", line) for line in lines]


def refresh(text: str) -> str:
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = FILE_LINE.match(line)
        if not m:
            continue
        while i < len(lines) and not lines[i].startswith("#"):
            i += 1  # the previous copy of the table, up to the next heading
        out += ["", *included(m.group(1)), "", ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    new = refresh(text)
    if args.check:
        sys.exit(0 if new == text else 1)
    if new != text:
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(path)


if __name__ == "__main__":
    main()
