import io
import sys

import pytest

from botnet.engine.run_log import RunLog, plot_curves, read_metrics_csv


def test_csv_grows_columns_and_a_resumed_log_drops_the_abandoned_tail(tmp_path):
    log = RunLog(tmp_path, total_steps=6, tensorboard=False, plot=False, progress="never")
    for step in range(1, 5):
        log.log_train(step, step / 2, {"loss": 1.0 / step, "lr": 0.1, "throughput": 10.0})
    log.log_eval(4, 2.0, {"top1": 50.0, "loss": 0.7})
    log.flush()
    log.close()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["kind"] for r in rows] == ["train"] * 4 + ["eval"]
    assert rows[-1]["val_top1"] == 50.0 and "val_top1" not in rows[0]

    resumed = RunLog(tmp_path, total_steps=6, start_step=2, tensorboard=False, plot=False, progress="never")
    assert [r["step"] for r in resumed.rows] == [1, 2]


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    quiet = RunLog(tmp_path, total_steps=10, tensorboard=False, progress="auto")
    assert quiet.bar is None
    quiet.step(1, loss=0.5, img_s=100.0)
    assert sys.stderr.getvalue() == ""
    forced = RunLog(tmp_path, total_steps=10, tensorboard=False, progress="always")
    forced.step(5, loss=0.5, img_s=100.0)
    forced.close()
    assert "5/10" in sys.stderr.getvalue() and "img_s" in sys.stderr.getvalue()


def test_curves_png(tmp_path):
    rows = [{"kind": "train", "step": s, "loss": 1.0 / s, "lr": 0.1} for s in range(1, 5)]
    rows.append({"kind": "eval", "step": 4, "val_top1": 20.0, "val_loss": 1.2, "val_num_images": 10})
    path = plot_curves(rows, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_mlflow_file_store_gets_the_run_and_a_resume_continues_it(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from botnet.engine import read_metrics_csv, train
    from tests.engine.toy_task import ToyTask, toy_config

    run = tmp_path / "run"
    settings = {"log.mlflow": "true", "log.every_steps": 2, "eval.every_epochs": 1}
    train(ToyTask(), toy_config(**settings, **{"train.stop_after_steps": 10}), run)
    train(ToyTask(), toy_config(**settings), run, resume=run)
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("botnet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed invocation went on in the same MLflow run
    info = runs[0]
    assert info.info.status == "FINISHED"
    assert info.data.params["optim.lr"] == "0.2" and info.data.params["train.epochs"] == "3"
    rows = read_metrics_csv(run / "metrics.csv")
    logged = sorted({m.step for m in client.get_metric_history(info.info.run_id, "train/loss")})
    assert logged == [r["step"] for r in rows if r["kind"] == "train"]
    val = client.get_metric_history(info.info.run_id, "val/acc")
    assert sorted(m.step for m in val) == [r["step"] for r in rows if r["kind"] == "eval"]


def test_mlflow_switched_on_without_mlflow_installed_says_how_to_install(monkeypatch, tmp_path):
    import importlib.util

    from botnet.errors import UserError
    from tests.engine.toy_task import toy_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r'log\.mlflow=True: needs the mlflow package: pip install "botnet\[mlflow\]"'):
        toy_config(**{"log.mlflow": "true"})
    toy_config()  # off: nothing is asked of mlflow
