import io
import sys

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
