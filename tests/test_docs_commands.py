"""Every command block of README.md and docs/*.md works as written.

Every ``botnet`` command (also under ``torchrun ... -m botnet``) must parse with the real command
line and name recipes and models that exist. The cheap ones also run, in the order a file gives
them, in one temporary folder per file. The rule for cheap: not a training run or the demo (those
take minutes to days), no ``torchrun``, nothing fetched from the network (``imagenet``, ``timm:``,
``torchvision:`` sources), no placeholder (``DATA``, ``$VAR``, ``SEED``, ``...``), and every file
or folder it reads already made by an earlier command of the same file (``coco/``, ``street.jpg``
and a finished run are the reader's own).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
#: flags whose value is a file or folder the command reads
READS = {"--data", "--ann", "--val-data", "--val-ann", "--weights", "--backbone-weights", "--resume", "--dataset"}
#: flags whose value is written, or is a name rather than a file
NAMES = {"--out", "--config", "--model", "--format", "--from", "--set"}
PATH_LIKE = re.compile(r".*/.*|.*\.(pth|pt|pt2|jpg|png|json|safetensors|onnx|yaml)")
NETWORK = ("imagenet", "timm:", "torchvision:")
SLOW_VERBS = {"train", "demo"}


def commands(path: Path) -> list[str]:
    """The commands of a file's bash blocks: continuation lines joined, comments dropped."""
    found = []
    for block in BLOCK.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def botnet_argv(command: str) -> list[str] | None:
    """The arguments after ``botnet`` (or ``torchrun ... -m botnet``); None for other commands."""
    words = shlex.split(command.replace("$", "\\$"))
    # an environment setting in front (OMP_NUM_THREADS=1 botnet ...); "..." stands for the reader's own flags
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w) and w != "..."]
    if words and words[0] == "botnet":
        return words[1:]
    if words and words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1] == "botnet":
        return words[words.index("-m") + 2:]
    return None


def inputs(argv: list[str]) -> list[str]:
    """The words of a command that name something it reads (files, folders)."""
    return [word for before, word in zip(["", *argv], argv)
            if before in READS or (PATH_LIKE.fullmatch(word) and before not in NAMES and not word.startswith("-"))]


def is_cheap(command: str, folder: Path) -> bool:
    if any(mark in command for mark in ("$", "...", "SEED", "DATA", "pip install", "venv", "torchrun")):
        return False
    argv = botnet_argv(command)
    if argv is None:
        return command.startswith("python -c ")
    if not argv or argv[0] in SLOW_VERBS or any(w.startswith(NETWORK) for w in argv):
        return False
    return all((folder / p).exists() for p in inputs(argv))


ALL = [(path, c) for path in FILES for c in commands(path) if botnet_argv(c) is not None]


@pytest.mark.parametrize("path, command", ALL, ids=[f"{p.name}: {c[:70]}" for p, c in ALL])
def test_every_documented_botnet_command_parses(path, command):
    from botnet.cli import build_cli
    from botnet.engine.config import recipe_path
    from botnet.models import list_models

    argv = botnet_argv(command)
    try:
        args = build_cli().parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{path.name}: `{command}` does not parse (exit {e.code})")
    if getattr(args, "config", None):
        recipe_path(args.config)  # a shipped recipe name, or a UserError naming it
    names = [args.model] if argv[0] in ("train", "convert") and args.model else []
    if argv[0] == "export" and not PATH_LIKE.fullmatch(args.source):
        names.append(args.source)
    unknown = [n for n in names if n not in list_models()]
    assert not unknown, f"{path.name}: `{command}` names no registered model {unknown}"


def test_the_rule_runs_the_cheap_commands_and_skips_the_rest(tmp_path):
    (tmp_path / "made").mkdir()
    assert is_cheap("botnet data shapes shapes --train 10", tmp_path)
    assert is_cheap("botnet predict cls made/ --weights made/", tmp_path)
    assert not is_cheap("botnet predict cls cat.jpg --weights made/", tmp_path)  # the reader's own photo
    assert not is_cheap("botnet train cls --data made --out runs/x", tmp_path)  # trains
    assert not is_cheap("botnet train det --model botnet50 --backbone-weights imagenet ...", tmp_path)
    assert not is_cheap("botnet convert timm:sebotnet33ts_256.a1h_in1k --model x --out y.safetensors", tmp_path)
    assert not is_cheap("torchrun --nproc_per_node 8 -m botnet eval cls --data made", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in FILES if commands(p)], ids=lambda p: p.name)
def test_the_cheap_documented_commands_run_as_written(path, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    bindir = Path(sys.executable).parent  # the `botnet` script of this environment
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    ran = []
    for command in commands(path):
        if not is_cheap(command, tmp_path):
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{path.name}: `{command}` exited {done.returncode}:\n{done.stderr[-2000:]}"
        ran.append(command)
    if not ran:
        pytest.skip(f"{path.name}: no cheap command")
