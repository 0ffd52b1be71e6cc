"""Progress lines for logs without a terminal: evaluation and prediction say how far they are."""
import torch

from botnet.engine import progress as progress_module
from botnet.engine.evaluate import evaluate
from botnet.engine.progress import Progress, duration
from tests.engine.toy_task import ToyTask


def test_a_line_every_interval_with_rate_and_eta(capsys, monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 45.0, 62.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    p = Progress("evaluation", total=100)
    for _ in range(4):
        p.update(10)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["evaluation: 20/100 images, 0.6 images/s, eta 2m04s", "evaluation: 40/100 images, 0.6 images/s, eta 1m33s"]
    assert duration(3725) == "1h02m"


def test_evaluation_reports_progress_on_a_slow_set(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "EVERY_SECONDS", 0.0)
    task = ToyTask()
    train, val = task.build_datasets()
    model = task.build_model()
    evaluate(task, model, val, batch_size=4, device=torch.device("cpu"))
    err = capsys.readouterr().err
    assert f"/{len(val)} images" in err


def test_training_log_says_the_expected_time_early_and_then_step_lines(tmp_path, capsys):
    from botnet.engine import train
    from tests.engine.toy_task import toy_config

    train(ToyTask(), toy_config(**{"log.every_steps": 2}), tmp_path)  # 24 steps, no terminal
    err = capsys.readouterr().err
    assert "s per step over the first 5 steps: the remaining 19 steps take about" in err
    steps = [line for line in err.splitlines() if line.startswith("step ") and "/24 " in line]
    assert [s.split()[1] for s in steps] == [f"{n}/24" for n in range(2, 25, 2)]
    assert all(" loss " in s and " lr " in s and " img/s eta " in s for s in steps)


def test_a_short_run_logs_rows_at_the_console_rate(tmp_path, capsys):
    # log.every_steps=20 (the default) in a 24-step run: still a curve of many points, a row per console line
    from botnet.engine import read_metrics_csv, train
    from tests.engine.toy_task import toy_config

    train(ToyTask(), toy_config(**{"log.every_steps": 20}), tmp_path)
    rows = [r["step"] for r in read_metrics_csv(tmp_path / "metrics.csv") if r["kind"] == "train"]
    lines = [line.split()[1] for line in capsys.readouterr().err.splitlines() if line.startswith("step ") and "/24 " in line]
    assert len(rows) > 2 and rows == sorted(rows) and rows[-1] == 24
    assert [f"{n}/24" for n in rows] == lines


class _SlowsDown(ToyTask):
    """Steps 9 to 16 take a tenth of a second more, as if another job took the CPU."""

    def training_step(self, model, batch, device):
        import time

        if 8 <= self.calls < 16:
            time.sleep(0.1)
        return super().training_step(model, batch, device)


def test_a_run_that_slows_far_below_its_early_rate_says_what_helps(tmp_path, capsys):
    from botnet.engine import train
    from tests.engine.toy_task import toy_config

    train(_SlowsDown(), toy_config(**{"log.every_steps": 4}), tmp_path)
    slow = [line for line in capsys.readouterr().err.splitlines() if line.startswith("throughput fell")]
    assert len(slow) == 1  # once, not every window
    assert "OMP_NUM_THREADS=1" in slow[0] and "--workers 0" in slow[0] and "early" in slow[0]
