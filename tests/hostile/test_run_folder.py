"""Hostile run folders, checkpoints and output paths (issue items 2, 4, 12 and 15): a --out that
holds another run, cannot be written or stops being writable, --resume of things that are not
training checkpoints, a final evaluation that fails, and the permissions of what is written."""
import os
import stat

import pytest
import torch

from botnet.engine import train
from botnet.engine.checkpoint import list_step_checkpoints, load_checkpoint
from botnet.errors import UserError
from botnet.io import write_json
from tests.engine.toy_task import ToyTask, toy_config
from tests.hostile.support import CLS_FAST, listing, run_cli

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _snapshot(folder):
    return {p: (folder / p).read_bytes() for p in listing(folder) if (folder / p).is_file()}


def _train_cls(capsys, data, *flags):
    return run_cli(capsys, "train", "cls", "--data", data, "--epochs", "1", *CLS_FAST, *flags)


# -- item 2: resuming into a folder that holds another run --------------------------------------


def test_resume_into_out_holding_another_run(colour_folder, tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    assert _train_cls(capsys, colour_folder, "--out", a, "--set", "train.stop_after_steps=2")[0] == 0
    assert _train_cls(capsys, colour_folder, "--out", b)[0] == 0
    before = _snapshot(b)
    code, err = _train_cls(capsys, colour_folder, "--resume", a, "--out", b)
    assert code == 2
    assert str(b) in err and "another run" in err and str(a) in err
    assert _snapshot(b) == before  # B is left exactly as it was
    # the same run may continue in its own folder, named or not, or in an empty one
    assert _train_cls(capsys, colour_folder, "--resume", a, "--out", tmp_path / "C")[0] == 0
    assert _train_cls(capsys, colour_folder, "--resume", a, "--out", a)[0] == 0


# -- item 12: --out that cannot be written ---------------------------------------------------------


def _blocked_out(tmp_path, kind, monkeypatch):
    if kind == "file":
        out = tmp_path / "out"
        out.write_text("not a folder")
    elif kind == "under a file":
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "run"
    else:  # read-only
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
        if ROOT:  # root may write anywhere: the folder answers as it does to every other user
            allowed = os.access

            def access(path, mode):
                return allowed(path, mode) and not (mode & os.W_OK and os.fspath(path) == os.fspath(out))

            monkeypatch.setattr(os, "access", access)
    return out


KINDS = ["file", "under a file", "read-only"]


@pytest.mark.parametrize("kind", KINDS)
def test_train_with_out_that_is_not_writable(colour_folder, tmp_path, capsys, kind, monkeypatch):
    out = _blocked_out(tmp_path, kind, monkeypatch)
    before = _snapshot(tmp_path)
    code, err = _train_cls(capsys, colour_folder, "--out", out)
    assert code == 2 and f"--out {out}" in err  # refused by the check made before any work
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_eval_cls_with_out_that_is_not_writable(colour_folder, cls_weights, tmp_path, capsys, kind, monkeypatch):
    out = _blocked_out(tmp_path, kind, monkeypatch)
    before = _snapshot(tmp_path)
    code, err = run_cli(capsys, "eval", "cls", "--data", colour_folder, "--weights", cls_weights, "--out", out,
                        "--workers", "0", "--device", "cpu")
    assert code == 2 and f"--out {out}" in err  # refused by the check made before any work
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", KINDS)
def test_predict_det_with_out_that_is_not_writable(coco_set, det_weights, tmp_path, capsys, kind, monkeypatch):
    out = _blocked_out(tmp_path, kind, monkeypatch)
    before = _snapshot(tmp_path)
    code, err = run_cli(capsys, "predict", "det", coco_set.images / "a.png", "--weights", det_weights,
                        "--out", out, "--device", "cpu")
    assert code == 2 and f"--out {out}" in err  # refused by the check made before any work
    assert _snapshot(tmp_path) == before


def test_out_in_a_folder_without_write_permission(colour_folder, tmp_path, capsys, monkeypatch):
    # what a read-only folder looks like to a user who is not root (root may write anywhere)
    import botnet.io

    monkeypatch.setattr(botnet.io.os, "access", lambda path, mode: False)
    out = tmp_path / "new" / "run"
    code, err = _train_cls(capsys, colour_folder, "--out", out)
    assert code == 2 and f"--out {out}: the folder would be created in {tmp_path}, which is not writable" in err
    assert not (tmp_path / "new").exists()


def test_out_file_name_that_is_a_folder(tmp_path):
    (tmp_path / "weights.safetensors").mkdir()
    with pytest.raises(UserError, match="weights.safetensors: it is a folder"):
        write_json(tmp_path / "weights.safetensors", {})


# -- item 12: --resume of something that is not a training checkpoint -----------------------------


@pytest.mark.parametrize("content, says", [
    (torch.zeros(3), "holds a Tensor"),
    ([1, 2, 3], "holds a list"),
    ({"model": {}, "optimizer": {}}, "no 'step'"),
    ({"step": "seven", "steps_per_epoch": 4, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": []},
     "'step' is 'seven'"),
])
def test_resume_of_a_file_that_is_not_a_training_checkpoint(colour_folder, tmp_path, capsys, content, says):
    bogus = tmp_path / "bogus.pt"
    torch.save(content, bogus)
    out = tmp_path / "run"
    code, err = _train_cls(capsys, colour_folder, "--resume", bogus, "--out", out)
    assert code == 2 and str(bogus) in err and says in err
    assert listing(out) == []


# -- item 12: the run folder stops being writable mid-run ------------------------------------------


def test_run_folder_becoming_unwritable_mid_run(tmp_path, monkeypatch):
    import botnet.io

    real = botnet.io.tempfile.mkstemp

    def refuse_after_first_checkpoint(*args, **kwargs):
        if list_step_checkpoints(tmp_path):
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(botnet.io.tempfile, "mkstemp", refuse_after_first_checkpoint)
    with pytest.raises(UserError) as info:  # a user error (exit 2), not a chain of PermissionErrors
        train(ToyTask(), toy_config(), tmp_path)
    message = str(info.value)
    assert "Permission denied" in message and str(tmp_path) in message
    assert "metrics.csv" in message or ".pt" in message  # names the file
    # the last checkpoint is intact and loads
    assert [p.name for p in list_step_checkpoints(tmp_path)] == ["step_00000004.pt"]
    assert load_checkpoint(list_step_checkpoints(tmp_path)[0])["step"] == 4


# -- item 4: a failing final evaluation keeps the trained weights ---------------------------------


class FailingFinalEval(ToyTask):
    def __init__(self, fail_at_call: int):
        super().__init__()
        self.evals, self.fail_at_call = 0, fail_at_call

    def evaluate(self, model, batches, device):
        self.evals += 1
        if self.evals >= self.fail_at_call:
            raise KeyError("area")  # what evaluation raised on annotations without an area
        return super().evaluate(model, batches, device)


def test_final_evaluation_failure_keeps_the_trained_weights(tmp_path):
    cfg = toy_config(**{"eval.every_epochs": 0, "checkpoint.every_steps": 0})  # evaluation only at the end
    with pytest.raises(KeyError):
        train(FailingFinalEval(fail_at_call=1), cfg, tmp_path)
    assert list_step_checkpoints(tmp_path)[-1].name == "step_00000024.pt"
    assert load_checkpoint(list_step_checkpoints(tmp_path)[-1])["step"] == 24
    # --resume finishes the run without training again
    summary = train(ToyTask(), cfg, tmp_path, resume=tmp_path)
    assert summary["step"] == 24 and (tmp_path / "model.safetensors").is_file()


# -- item 15: permissions and stray temporary files ------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        train(ToyTask(), toy_config(**{"train.epochs": 1}), tmp_path)
        write_json(tmp_path / "detections.json", {})
    finally:
        os.umask(old)
    files = [tmp_path / "config.yaml", tmp_path / "metrics.csv", tmp_path / "model.safetensors",
             tmp_path / "detections.json", *list_step_checkpoints(tmp_path)]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


def test_rewritten_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    target.chmod(0o640)
    write_json(target, {"a": 2})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_stray_tmp_files_of_killed_writes_are_removed_on_the_next_start(tmp_path):
    train(ToyTask(), toy_config(**{"train.stop_after_steps": 8}), tmp_path)
    strays = [tmp_path / ".metrics.csv.k2j4h5g6.tmp", tmp_path / "checkpoints" / ".step_00000012.pt.a1b2c3d4.tmp"]
    for p in strays:
        p.write_bytes(b"half a file")
    keep = tmp_path / "notes.tmp"  # not ours: left alone
    keep.write_text("mine")
    train(ToyTask(), toy_config(), tmp_path, resume=tmp_path)
    assert not any(p.exists() for p in strays) and keep.exists()
