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
