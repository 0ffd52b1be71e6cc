import subprocess
import sys

from botnet.cli import main


def test_profile_prints_counts_and_timings(capsys):
    assert main(["profile", "botnet_tiny", "--size", "64", "48", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "multiply-adds" in out
    assert "infer float32" in out and "infer bfloat16" in out


def test_profile_paper_table(capsys):
    assert main(["profile", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "botnet_s1_t7" in out and "102.98" in out


def test_unknown_model_exits_nonzero_without_traceback():
    r = subprocess.run([sys.executable, "-m", "botnet", "profile", "botnet51"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown model 'botnet51'" in r.stderr and "Traceback" not in r.stderr


def test_models_listing(capsys):
    assert main(["models", "botnet_s1_*"]) == 0
    out = capsys.readouterr().out
    assert "botnet_s1_t3" in out and "resnet50" not in out
