"""Run folders that must not be lost: two runs on one folder, a new run on a finished run whose
checkpoints were deleted, --resume of a finished run, a run whose final evaluation or export
failed, and a checkpoint resumed by the other task."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from botnet.engine import train
from botnet.engine.checkpoint import list_step_checkpoints
from botnet.engine.run_dir import LOCK_FILE, RunLock, holds_run
from botnet.errors import UserError
from tests.engine.toy_task import ToyTask, toy_config
from tests.hostile.support import CLS_FAST, DET_FAST, full_disk, listing, run_cli

_HOLD = """
import sys
from botnet.engine.run_dir import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def _snapshot(folder):
    return {p: (folder / p).read_bytes() for p in listing(folder) if (folder / p).is_file()}


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / "run"`` until it is killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "run")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# -- two runs on one folder ----------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused(colour_folder, tmp_path, capsys, holder):
    run = tmp_path / "run"
    code, err = run_cli(capsys, "train", "cls", "--data", colour_folder, "--epochs", "1", *CLS_FAST, "--out", run)
    assert code == 2
    assert f"{run} is in use by another run (process {holder.pid} on {socket.gethostname()})" in err
    assert listing(run) == [LOCK_FILE]  # the other run's lock, nothing of ours


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, capsys, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    run = tmp_path / "run"
    assert (run / LOCK_FILE).exists()  # a kill leaves the file
    train(ToyTask(), toy_config(**{"train.epochs": 1}), run)
    err = capsys.readouterr().err
    assert f"taking over the lock of process {holder.pid} on {socket.gethostname()}, which is no longer running" in err
    assert not (run / LOCK_FILE).exists() and (run / "model.safetensors").is_file()


def test_the_lock_is_exclusive_and_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match=f"process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock(tmp_path).acquire().release()


# -- a finished run whose checkpoints/ was deleted -----------------------------------------


def test_new_run_on_a_finished_run_without_checkpoints_is_refused(tmp_path):
    cfg = toy_config(**{"train.epochs": 1})
    train(ToyTask(), cfg, tmp_path)
    shutil.rmtree(tmp_path / "checkpoints")
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="already holds a run .*(config.yaml|metrics).*--resume"):
        train(ToyTask(), cfg, tmp_path)
    assert _snapshot(tmp_path) == before
    assert "model.safetensors" in holds_run(tmp_path)


# -- --resume of a finished run, or of one whose end failed -------------------------


def test_resume_of_a_finished_run_keeps_its_metrics(tmp_path, capsys):
    cfg = toy_config(**{"train.epochs": 2})
    summary = train(ToyTask(), cfg, tmp_path)
    assert {"val_acc", "best_val_acc", "best_step", "train_loss"} <= set(summary)
    before = _snapshot(tmp_path)
    again = train(ToyTask(), cfg, tmp_path, resume=tmp_path)
    assert again == summary and _snapshot(tmp_path) == before
    assert "this run is finished" in capsys.readouterr().err


def test_resume_of_a_finished_run_into_a_new_folder_reports_everything(tmp_path):
    cfg = toy_config(**{"train.epochs": 2})
    summary = train(ToyTask(), cfg, tmp_path / "a")
    moved = train(ToyTask(), cfg, tmp_path / "b", resume=tmp_path / "a")
    for key in ("val_acc", "best_val_acc", "best_step", "train_loss", "step"):
        assert moved[key] == summary[key], key


class FailingFinalEval(ToyTask):
    def evaluate(self, model, batches, device):
        raise KeyError("area")  # what evaluation raised on annotations without an area


def test_resume_after_a_failed_final_evaluation_evaluates(tmp_path):
    cfg = toy_config(**{"eval.every_epochs": 0, "checkpoint.every_steps": 0})  # evaluation only at the end
    with pytest.raises(KeyError):
        train(FailingFinalEval(), cfg, tmp_path)
    assert not (tmp_path / "best.safetensors").exists()
    summary = train(ToyTask(), cfg, tmp_path, resume=tmp_path)
    assert summary["finished"] and "val_acc" in summary and summary["best_step"] == summary["step"]
    assert (tmp_path / "best.safetensors").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary


def test_resume_after_a_full_disk_at_the_final_export_finishes_the_run(tmp_path, monkeypatch):
    import botnet.weights.files

    cfg = toy_config(**{"eval.every_epochs": 0, "checkpoint.every_steps": 0})
    with monkeypatch.context() as m:
        full_disk(m, botnet.weights.files, "model.safetensors")
        with pytest.raises(UserError, match=r"cannot write .*model.safetensors: No space left on device"):
            train(ToyTask(), cfg, tmp_path)
    assert list_step_checkpoints(tmp_path)[-1].name == "step_00000024.pt"  # written before the export
    summary = train(ToyTask(), cfg, tmp_path, resume=tmp_path)
    assert summary["finished"] and "val_acc" in summary
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "best.safetensors").is_file()


# -- a checkpoint of the other task -------------------------------------------------------


def test_detection_checkpoint_resumed_as_classification(coco_set, colour_folder, tmp_path, capsys):
    det = tmp_path / "det"
    code, _ = run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, *DET_FAST,
                      "--set", "train.stop_after_steps=1", "--out", det)
    assert code == 0
    step = list_step_checkpoints(det)[-1]
    copied = tmp_path / "copied.pt"
    shutil.copy(step, copied)
    for resume, out in ((det, det), (copied, tmp_path / "cls")):
        before = _snapshot(tmp_path)
        code, err = run_cli(capsys, "train", "cls", "--config", "cls_tiny_cpu", "--data", colour_folder, *CLS_FAST,
                            "--resume", resume, "--out", out)
        assert code == 2
        assert "this checkpoint is a detection run" in err and "botnet train det" in err
        assert len(err.strip().splitlines()) == 1 and "Missing key" not in err
        assert _snapshot(tmp_path) == before
