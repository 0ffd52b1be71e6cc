"""One name per quantity on the command line: ``--img-size``, ``--batch-size``, ``--set``; each old
spelling still works, hidden from --help, and says once which flag replaces it."""
from __future__ import annotations

import json

import pytest

from botnet.cli import build_cli, main
from botnet.cli.names import deprecation_line

# (command line before the flag, old flag, new flag, value words, destination, parsed value)
RENAMES = [
    (["train", "det"], "--canvas", "--img-size", ["512"], "img_size", 512),
    (["eval", "det", "--data", "d", "--ann", "a.json", "--weights", "w"], "--canvas", "--img-size", ["512"],
     "img_size", 512),
    (["predict", "det", "x.png", "--weights", "w", "--out", "o"], "--canvas", "--img-size", ["512"], "img_size", 512),
    (["export", "botnet_tiny", "--out", "m.onnx"], "--size", "--img-size", ["64", "96"], "img_size", [64, 96]),
    (["profile", "botnet_tiny"], "--size", "--img-size", ["64", "96"], "img_size", [64, 96]),
    (["profile", "botnet_tiny"], "--batch", "--batch-size", ["3"], "batch_size", 3),
    (["convert", "w.pth", "--model", "botnet_tiny", "--out", "o.safetensors"], "--option", "--set",
     ["stem_width=8"], "overrides", [("stem_width", 8)]),
    (["data", "shapes", "out"], "--size", "--img-size", ["48"], "img_size", 48),
    (["data", "stats", "--ann", "a.json"], "--canvas", "--img-size", ["400"], "img_size", 400),
]
IDS = [f"{' '.join(r[0][:2])} {r[1]}" for r in RENAMES]


def parse(argv: list[str]):
    return build_cli().parser.parse_args(argv)


@pytest.mark.parametrize("head, old, new, words, dest, value", RENAMES, ids=IDS)
def test_new_name_parses_silently(capsys, head, old, new, words, dest, value):
    args = parse(head + [new, *words])
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("head, old, new, words, dest, value", RENAMES, ids=IDS)
def test_old_name_still_works_with_one_deprecation_line(capsys, head, old, new, words, dest, value):
    args = parse(head + [old, *words, old, *words])  # given twice: still one line
    expected = value + value if dest == "overrides" else value
    assert getattr(args, dest) == expected
    err = capsys.readouterr().err
    assert err.splitlines() == [deprecation_line(old, new)]
    assert new in err


@pytest.mark.parametrize("head, old, new, words, dest, value", RENAMES, ids=IDS)
def test_old_name_is_hidden_from_help(capsys, head, old, new, words, dest, value):
    sub = [w for w in head[:2] if not w.startswith("-") and "." not in w and w not in ("botnet_tiny", "out")]
    with pytest.raises(SystemExit):
        parse(sub + ["--help"])
    out = capsys.readouterr().out
    assert new in out and old not in out.replace(new, "")


def test_old_and_new_override_flags_add_up(capsys):
    args = parse(["convert", "w.pth", "--model", "botnet_tiny", "--out", "o", "--set", "act=silu",
                  "--option", "stem_width=8"])
    assert args.overrides == [("act", "silu"), ("stem_width", 8)]


def test_default_survives_an_unused_old_spelling():
    assert parse(["profile", "botnet_tiny"]).batch_size == 1
    assert parse(["data", "stats", "--ann", "a.json"]).img_size == 1024
    assert parse(["train", "cls", "--set", "optim.lr=0.2"]).overrides == ["optim.lr=0.2"]


def test_old_spelling_reaches_the_command(tmp_path, capsys):
    # `data shapes --size` still sizes the generated images
    assert main(["data", "shapes", str(tmp_path / "d"), "--train", "1", "--val", "0", "--size", "40"]) == 0
    assert capsys.readouterr().err.splitlines() == [deprecation_line("--size", "--img-size")]
    doc = json.loads((tmp_path / "d" / "annotations" / "instances_train.json").read_text())
    assert {(im["height"], im["width"]) for im in doc["images"]} == {(40, 40)}
