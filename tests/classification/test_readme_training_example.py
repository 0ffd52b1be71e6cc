"""The README's Python training example, run as it is written."""
import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_training_example_with_a_custom_hook_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "hooks=[" in b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # amp auto's measurement, if any
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    summary, losses = scope["summary"], scope["curve"].losses
    assert summary["finished"] and [s for s, _ in losses] == list(range(1, summary["step"] + 1))
    assert all(math.isfinite(loss) for _, loss in losses)
    assert (tmp_path / "runs" / "colours" / "model.safetensors").exists()
    assert str(summary["val_top1"]) in capsys.readouterr().out
