"""Outputs that must not cost the user a file: --out over the inputs, a rollback that deleted
earlier files, eval over a run's metrics, a full disk, demo counts refused late, and one
unreadable file among many predictions."""
import errno
import json
import os
import shutil

import pytest

from botnet.errors import UserError
from botnet.io import Outputs, atomic_write
from tests.hostile.support import full_disk, listing, run_cli


def _snapshot(folder):
    return {p: (folder / p).read_bytes() for p in listing(folder) if (folder / p).is_file()}


@pytest.fixture
def photos(coco_set):
    """The user's folder of PNG photos (the same names a drawing would take)."""
    for name in ("c.png", "d.png"):
        shutil.copy(coco_set.images / "a.png", coco_set.images / name)
    return coco_set.images


def _predict_det(capsys, det_weights, *argv):
    return run_cli(capsys, "predict", "det", *argv, "--weights", det_weights, "--device", "cpu")


# -- predictions over the photos, and a rollback that deleted earlier files -------------


def test_predict_det_out_into_the_photo_folder_is_refused(photos, det_weights, tmp_path, capsys):
    before = _snapshot(photos)
    link = tmp_path / "link"
    link.symlink_to(photos)
    for out in (photos, link):
        code, err = _predict_det(capsys, det_weights, photos, "--out", out)
        assert code == 2 and f"--out {out}: this is an input folder ({photos})" in err
        assert _snapshot(photos) == before


def test_predict_cls_out_into_the_photo_folder_is_refused(photos, cls_weights, tmp_path, capsys):
    before = _snapshot(photos)
    code, err = run_cli(capsys, "predict", "cls", photos, "--weights", cls_weights, "--out", photos, "--device", "cpu")
    assert code == 2 and f"--out {photos}: this is an input folder ({photos})" in err
    assert _snapshot(photos) == before
    # predictions.csv named as one of the images read: refused before anything is written
    taken = tmp_path / "out"
    taken.mkdir()
    (taken / "predictions.csv").symlink_to(photos / "a.png")
    code, err = run_cli(capsys, "predict", "cls", photos / "a.png", photos / "b.png", "--weights", cls_weights,
                        "--out", taken, "--device", "cpu")
    assert code == 2 and f"cannot write {taken / 'predictions.csv'}: it is this command's input" in err
    assert _snapshot(photos) == before and sorted(p.name for p in taken.iterdir()) == ["predictions.csv"]


def test_predict_det_drawing_named_as_an_input_is_refused(photos, det_weights, tmp_path, capsys):
    # an album of links: the drawing out/a.png would be the photo a.png under another name
    out = tmp_path / "album"
    out.mkdir()
    (out / "a.png").symlink_to(photos / "a.png")
    before = _snapshot(photos)
    code, err = _predict_det(capsys, det_weights, photos / "a.png", photos / "b.png", "--out", out)
    assert code == 2 and f"cannot write {out / 'a.png'}: it is this command's input {photos / 'a.png'}" in err
    assert _snapshot(photos) == before and sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_a_failed_prediction_removes_only_its_own_drawings(photos, det_weights, tmp_path, capsys, monkeypatch):
    import botnet.detection.predict as predict

    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"an earlier run's drawing")
    (out / "a.png").write_bytes(b"an earlier drawing of a.png")
    real, calls = predict.detect, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "detect", interrupted)
    code, _ = _predict_det(capsys, det_weights, photos, "--out", out)
    assert code == 130
    # b.png was drawn by this command and removed; the files that were there before stay
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "earlier.png"]
    assert (out / "earlier.png").read_bytes() == b"an earlier run's drawing"


# -- one unreadable or dangling file among the images ------------------------------------


def test_predict_det_skips_unreadable_files_and_says_so(photos, det_weights, tmp_path, capsys):
    (photos / "z.jpg").write_bytes(b"not a jpeg")
    (photos / "y.png").symlink_to(tmp_path / "gone.png")
    out = tmp_path / "out"
    code, err = _predict_det(capsys, det_weights, photos, "--out", out)
    assert code == 2
    assert "2 of 6 images could not be read" in err and "z.jpg" in err and "y.png" in err
    doc = json.loads((out / "detections.json").read_text())
    assert sorted(os.path.basename(i["file_name"]) for i in doc["images"]) == ["a.png", "b.png", "c.png", "d.png"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png", "d.png"]


def test_predict_cls_skips_unreadable_files_and_says_so(colour_copy, cls_weights, capsys):
    from botnet.cli import main

    red = colour_copy / "val" / "red"
    (red / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    images = sorted(p for p in red.iterdir() if p.name != "broken.jpg")
    capsys.readouterr()
    code = main(["predict", "cls", str(red), "--weights", str(cls_weights), "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 2 and f"1 of {len(images) + 1} images could not be read" in out.err and "broken.jpg" in out.err
    assert "Traceback" not in out.err
    assert all(str(p) in out.out for p in images) and "broken.jpg" not in out.out


# -- convert and export over their input --------------------------------------------------


def test_convert_onto_its_input_is_refused(cls_weights, tmp_path, capsys):
    src = tmp_path / "X.safetensors"
    shutil.copy(cls_weights, src)
    link = tmp_path / "Y.safetensors"
    link.symlink_to(src)
    before = src.read_bytes()
    for out in (src, link):
        code, err = run_cli(capsys, "convert", src, "--model", "botnet_s1_tiny", "--out", out)
        assert code == 2 and f"cannot write {out}: it is this command's input" in err
        assert src.read_bytes() == before
    code, err = run_cli(capsys, "export", src, "--out", link)
    assert code == 2 and "it is this command's input" in err and src.read_bytes() == before


# -- eval into a run folder ----------------------------------------------------------------


def test_eval_cls_into_a_run_folder_keeps_its_metrics(colour_folder, cls_weights, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(cls_weights, run / "model.safetensors")
    (run / "metrics.json").write_text(json.dumps({"val_top1": 50.0, "best_val_top1": 60.0, "best_step": 3}))
    before = (run / "metrics.json").read_bytes()
    code, _ = run_cli(capsys, "eval", "cls", "--data", colour_folder, "--weights", run / "model.safetensors",
                      "--out", run, "--workers", "0", "--device", "cpu")
    assert code == 0 and (run / "metrics.json").read_bytes() == before
    assert {"top1", "loss", "per_class"} <= set(json.loads((run / "eval.json").read_text()))
    assert (run / "confusion_matrix.json").is_file() and (run / "confusion_matrix.png").is_file()


def test_eval_det_into_a_run_folder_keeps_its_metrics(coco_set, det_weights, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val_box_ap": 1.0}))
    before = (run / "metrics.json").read_bytes()
    code, _ = run_cli(capsys, "eval", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--weights",
                      det_weights, "--out", run, "--workers", "0", "--device", "cpu")
    assert code == 0 and (run / "metrics.json").read_bytes() == before
    assert "box_ap" in json.loads((run / "eval.json").read_text()) and (run / "predictions.json").is_file()


# -- a full disk --------------------------------------------------------------------------


def test_full_disk_while_writing_a_checkpoint_names_it(tmp_path, monkeypatch):
    import botnet.engine.checkpoint
    from botnet.engine import train
    from tests.engine.toy_task import ToyTask, toy_config

    full_disk(monkeypatch, botnet.engine.checkpoint, "step_00000016")
    with pytest.raises(UserError) as info:
        train(ToyTask(), toy_config(), tmp_path)
    message = str(info.value)
    assert message == f"cannot write {tmp_path / 'checkpoints' / 'step_00000016.pt'}: No space left on device"
    # a large tensor: torch's own error, then the OSError of the file's flush
    import torch

    with pytest.raises(UserError, match=r"cannot write .*step_00000016.pt: No space left on device"):
        botnet.engine.checkpoint.save_checkpoint({"big": torch.zeros(100_000)}, tmp_path / "step_00000016.pt")


def test_full_disk_while_writing_safetensors_names_it(tmp_path, monkeypatch):
    import torch

    import botnet.weights.files

    full_disk(monkeypatch, botnet.weights.files, "w.safetensors")
    with pytest.raises(UserError, match=r"cannot write .*w.safetensors: No space left on device"):
        botnet.weights.files.save_weights({"a": torch.zeros(10_000)}, tmp_path / "w.safetensors")
    assert listing(tmp_path) == []


def test_a_library_error_raised_over_a_full_disk_names_the_file(tmp_path):
    def library_writer(path):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(UserError, match=r"cannot write .*x.pt: No space left on device"):
        atomic_write(tmp_path / "x.pt", library_writer)
    assert listing(tmp_path) == []


def test_a_writer_error_that_is_not_the_system_passes_unchanged(tmp_path):
    def broken(path):
        raise RuntimeError("a bug, not the disk")

    with pytest.raises(RuntimeError, match="a bug"):
        atomic_write(tmp_path / "x.json", broken)
    assert listing(tmp_path) == []


# -- the writer itself ------------------------------------------------------------------------------


def test_outputs_refuse_inputs_and_roll_back_only_what_they_created(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("{}")
    kept = tmp_path / "kept.json"
    kept.write_text("earlier")
    with pytest.raises(UserError, match="it is this command's input"):
        Outputs([data]).claim(tmp_path / "." / "data.json")
    with pytest.raises(KeyError):
        with Outputs([data], folder=tmp_path) as outputs:
            outputs.write_json(tmp_path / "new.json", {})
            outputs.write_json(kept, {"replaced": True})
            raise KeyError("later failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "kept.json"]


# -- demo counts --------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [("--train", "-1"), ("--val", "-5"), ("--train", "0", "--val", "0")])
def test_demo_refuses_bad_counts_before_generating(tmp_path, capsys, counts):
    out = tmp_path / "demo"
    code, err = run_cli(capsys, "demo", "--out", out, *counts)
    assert code == 2 and "at least 1 image" in err
    assert listing(out) == []


def test_demo_refuses_a_bad_setting_before_generating(tmp_path, capsys):
    out = tmp_path / "demo"
    code, err = run_cli(capsys, "demo", "--out", out, "--train", "4", "--val", "2", "--epochs", "0")
    assert code == 2 and "train.epochs" in err
    assert listing(out) == []
