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

    train(ToyTask(), toy_config(**{"log.every_steps": 6}), tmp_path)  # 24 steps, no terminal
    err = capsys.readouterr().err
    assert "s per step over the first 5 steps: the remaining 19 steps take about" in err
    steps = [line for line in err.splitlines() if line.startswith("step ") and "/24 " in line]
    assert [s.split()[1] for s in steps] == ["6/24", "12/24", "18/24", "24/24"]
    assert all(" loss " in s and " lr " in s and " img/s eta " in s for s in steps)
