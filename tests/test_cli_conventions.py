"""The conventions users bring from other tools: --version, the same flags on both tasks, `none`
for no weights, install hints that name the extra, interruptions that say how to go on."""
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

import botnet
from botnet.cli import build_cli, main
from botnet.cli.run_args import engine_flags

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert capsys.readouterr().out.strip() == f"botnet {botnet.__version__}" == f"botnet {project['version']}"


@pytest.mark.parametrize("task", ["cls", "det"])
def test_amp_is_a_flag_of_both_training_commands(task):
    args = build_cli().parser.parse_args(["train", task, "--amp", "bf16"])
    assert engine_flags(args)["amp.dtype"] == "bf16"
    assert engine_flags(build_cli().parser.parse_args(["train", task]))["amp.dtype"] is None  # the recipe's


@pytest.mark.parametrize("task", ["cls", "det"])
def test_mlflow_is_a_switch_of_both_training_commands(task):
    assert engine_flags(build_cli().parser.parse_args(["train", task, "--mlflow"]))["log.mlflow"] is True
    assert engine_flags(build_cli().parser.parse_args(["train", task]))["log.mlflow"] is None


@pytest.mark.parametrize("flag", ["none", "None", "NONE"])
def test_backbone_weights_none_means_no_weights(flag):
    from botnet.cli.det import train_overrides
    from botnet.detection.config import DetectionConfig
    from botnet.engine.config import load_config

    args = build_cli().parser.parse_args(["train", "det", "--backbone-weights", flag])
    cfg = load_config(DetectionConfig, base={"model": {"backbone_weights": "imagenet"}}, overrides=train_overrides(args))
    assert cfg.model.backbone_weights is None
    args = build_cli().parser.parse_args(["train", "det", "--backbone-weights", "imagenet"])
    assert load_config(DetectionConfig, overrides=train_overrides(args)).model.backbone_weights == "imagenet"


def test_timm_sources_name_the_extra_that_installs_timm(monkeypatch):
    from botnet.errors import UserError
    from botnet.weights.pretrained import load_pretrained

    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    model = botnet.create_model("botnet_tiny", num_classes=0)
    with pytest.raises(UserError, match=r'timm:botnet26t_256.c1_in1k: .*pip install "botnet\[timm\]"'):
        load_pretrained(model, "timm:botnet26t_256.c1_in1k")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("timm") for req in extras["timm"])


def test_ctrl_c_in_the_demo_names_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    import botnet.detection.demo as demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    out = tmp_path / "my demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--set", "train.seed=1"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("botnet: interrupted; the same command resumes the demo: botnet demo ")
    again = shlex.split(err.split("resumes the demo: ")[1])
    parser = build_cli().parser
    assert vars(parser.parse_args(again[1:])) == vars(parser.parse_args(
        ["demo", "--out", str(out), "--epochs", "2", "--set", "train.seed=1"]))
