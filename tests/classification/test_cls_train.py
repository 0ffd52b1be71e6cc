"""Classification end to end through the command line, on generated colour-blob folders."""
import json
import shlex

import pytest

from botnet.classification.config import ClassificationConfig
from botnet.classification.task import ClassificationTask
from botnet.cli import main
from botnet.engine.config import load_config
from botnet.weights import read_metadata

FAST = ["--model", "botnet_s1_tiny", "--img-size", "32", "--workers", "0", "--batch-size", "16",
        "--set", "log.tensorboard=false", "--set", "log.progress=never"]


def test_learns_then_evaluates_and_predicts(colour_folder, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "cls", "--data", str(colour_folder), "--out", str(run), "--config", "cls_tiny_cpu",
                 "--epochs", "5", *FAST])
    assert code == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["finished"] and summary["skipped_images"] == 0
    assert summary["best_val_top1"] >= 75.0  # 4 classes: chance is 25%
    meta = read_metadata(run / "best.safetensors")
    assert meta["class_names"] == ["blue", "green", "red", "yellow"] and meta["img_size"] == [32, 32]

    capsys.readouterr()
    assert main(["eval", "cls", "--data", str(colour_folder), "--weights", str(run / "best.safetensors"),
                 "--out", str(tmp_path / "eval"), "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {"top1", "loss"} <= set(metrics) and metrics["num_images"] == 24
    assert metrics["top1"] == pytest.approx(summary["best_val_top1"], abs=1e-6)
    assert "top5" not in metrics  # 4 classes: every class is in the top 5, so top-5 is not reported
    assert "top5" not in capsys.readouterr().out
    # per class and the confusion matrix: the same predictions counted three ways
    confusion = json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())
    matrix = confusion["matrix"]
    assert confusion["classes"] == meta["class_names"] and [len(r) for r in matrix] == [4] * 4
    assert [sum(r) for r in matrix] == [6] * 4  # rows: the 6 val images of each true class
    assert 100 * sum(matrix[i][i] for i in range(4)) / 24 == pytest.approx(metrics["top1"])
    for i, name in enumerate(confusion["classes"]):
        assert metrics["per_class"][name] == {"accuracy": pytest.approx(100 * matrix[i][i] / 6, abs=1e-3), "images": 6}
    from PIL import Image

    with Image.open(tmp_path / "eval" / "confusion_matrix.png") as picture:
        assert picture.width > 200 and len(picture.getcolors(1 << 16) or range(300)) > 10  # drawn, not blank

    capsys.readouterr()
    images = [colour_folder / "val" / c / "0000.png" for c in ("blue", "red")]
    assert main(["predict", "cls", *map(str, images), "--weights", str(run / "best.safetensors"),
                 "--out", str(tmp_path / "pred")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 2 * (1 + 4) + 1
    probs = [float(l.split()[0]) for l in lines[1:5]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-3)
    assert lines[1].split()[1] == "blue" and lines[6].split()[1] == "red"
    # the same ranking in predictions.json and predictions.csv
    doc = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [im["file"] for im in doc["images"]] == list(map(str, images)) and doc["skipped"] == {}
    first = doc["images"][0]["classes"]
    assert [c["rank"] for c in first] == [1, 2, 3, 4] and first[0]["class"] == "blue"
    assert [c["probability"] for c in first] == pytest.approx(probs, abs=1e-4)
    import csv

    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and rows[0]["file"] == str(images[0]) and rows[4]["class"] == "red"
    assert [float(r["probability"]) for r in rows[:4]] == pytest.approx(probs, abs=1e-4)


def test_unreadable_image_is_skipped_with_a_warning_and_counted(colour_copy, tmp_path, capsys):
    bad = colour_copy / "train" / "green" / "0005.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="0005.png: unreadable image skipped"):
        code = main(["train", "cls", "--data", str(colour_copy), "--out", str(run), "--epochs", "1", *FAST])
    assert code == 0
    assert json.loads((run / "metrics.json").read_text())["skipped_images"] == 1

    capsys.readouterr()
    code = main(["train", "cls", "--data", str(colour_copy), "--out", str(tmp_path / "strict"), "--epochs", "1",
                 "--strict", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "Traceback" not in err


def test_cli_resume_continues_the_run_in_place(colour_folder, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--data", str(colour_folder), "--epochs", "2", *FAST, "--set", "train.stop_after_steps=3"]
    capsys.readouterr()
    assert main(["train", "cls", "--out", str(run), *args]) == 0
    assert not json.loads((run / "metrics.json").read_text())["finished"]
    # the pause names the command that goes on, and that command is the one that works
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith("paused at step 3 ") and "resume with: " in said
    command = shlex.split(said.split("resume with: ")[1])
    assert command == ["botnet", "train", "cls", "--resume", str(run)]
    assert main(command[1:]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["finished"] and summary["step"] == 8
    assert load_config(ClassificationConfig, run / "config.yaml").train.stop_after_steps is None


def test_resolution_defaults_to_the_model_and_follows_img_size():
    cfg = load_config(ClassificationConfig, overrides=["model.name=botnet_s1_tiny"])
    assert ClassificationTask(cfg).img_size == (128, 128)  # the preset's default input
    cfg = load_config(ClassificationConfig, overrides=["model.name=botnet_s1_tiny", "data.img_size=48"])
    assert ClassificationTask(cfg).img_size == (48, 48)


def test_ctrl_c_names_the_command_that_resumes(colour_folder, tmp_path, capsys, monkeypatch):
    from botnet.engine.trainer import Trainer

    real, run = Trainer.train_step, tmp_path / "run"

    def interrupted_at_step_3(self, batches):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self, batches)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_3)
    args = ["train", "cls", "--data", str(colour_folder), "--epochs", "2", *FAST, "--set", "checkpoint.every_steps=1"]
    capsys.readouterr()
    assert main([*args, "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert f"botnet: interrupted; its last checkpoint is step_00000002.pt; resume with: botnet train cls --resume {run}" in err
    assert main([*args, "--out", str(tmp_path / "early"), "--set", "checkpoint.every_steps=5"]) == 130
    assert "no checkpoint was written yet" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "train_step", real)
    assert main(["train", "cls", "--resume", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["finished"]


def test_train_cls_weights_none_trains_from_scratch(colour_folder, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "cls", "--data", str(colour_folder), "--out", str(run), "--weights", "none", "--model",
                 "resnet_tiny", "--img-size", "32", "--workers", "0", "--epochs", "1", "--batch-size", "16", "--set",
                 "train.stop_after_steps=1", "--set", "log.tensorboard=false", "--set", "log.progress=never"]) == 0
    assert load_config(ClassificationConfig, run / "config.yaml").model.init_weights is None
