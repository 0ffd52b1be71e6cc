"""End to end on tiny generated data: data shapes -> train det -> eval det -> predict det, demo,
and the user errors (named file or id, exit 2, no traceback)."""
import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from botnet.cli import main
from botnet.data.shapes import make_shapes_dataset
from botnet.engine import read_metrics_csv

TINY = ["--config", "demo_shapes", "--img-size", "64", "--workers", "0", "--set", "log.progress=never",
        "--set", "model.fpn_channels=32", "--set", "model.box_representation=64", "--set", "model.mask_head_channels=[32]"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, train=10, val=4, img_size=64, seed=1)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "det", "--data", str(shapes["train_images"]), "--ann", str(shapes["train_ann"]),
                 "--val-data", str(shapes["val_images"]), "--val-ann", str(shapes["val_ann"]),
                 "--out", str(out), "--epochs", "1", "--batch-size", "4", *TINY])
    assert code == 0
    return out


def test_train_writes_the_run(trained):
    for name in ("model.safetensors", "metrics.csv", "metrics.json", "config.yaml", "curves.png"):
        assert (trained / name).is_file(), name
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["finished"] and "val_box_ap" in summary and "val_mask_ap50" in summary


def test_eval_writes_metrics_and_coco_predictions(trained, shapes, tmp_path, capsys):
    assert main(["eval", "det", "--data", str(shapes["val_images"]), "--ann", str(shapes["val_ann"]),
                 "--weights", str(trained / "model.safetensors"), "--out", str(tmp_path), "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("box_ap", "box_ap50", "box_ap75", "box_aps", "box_apm", "box_apl", "mask_ap", "mask_apl"):
        assert metrics[key] == -1.0 or 0.0 <= metrics[key] <= 100.0  # -1: no object of that size
    assert metrics["num_images"] == 4
    preds = json.loads((tmp_path / "predictions.json").read_text())
    # one epoch on 10 images may detect nothing above the score threshold: the AP and the predictions
    # of a detector that learned are checked in test_det_learns.py
    assert isinstance(preds, list)
    for p in preds:
        assert {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(p)
        assert p["category_id"] in range(1, 6)
    assert "box AP" in capsys.readouterr().out


def test_predict_draws_pictures_and_writes_coco_json(trained, shapes, tmp_path):
    images = sorted(shapes["val_images"].glob("*.png"))[:2]
    assert main(["predict", "det", *map(str, images), "--weights", str(trained / "model.safetensors"),
                 "--out", str(tmp_path), "--score-thresh", "0.0"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in images)
    doc = json.loads((tmp_path / "detections.json").read_text())
    assert [im["id"] for im in doc["images"]] == [1, 2]
    assert [c["name"] for c in doc["categories"]] == ["circle", "square", "triangle", "star", "cross"]
    assert all("score" in a and "segmentation" in a for a in doc["annotations"])


def test_weights_for_other_classes_are_refused_clearly(trained, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "a.png")
    ann = tmp_path / "two.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]}))
    code = main(["eval", "det", "--data", str(tmp_path / "img"), "--ann", str(ann),
                 "--weights", str(trained / "model.safetensors"), "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "2 categories" in err and "5 classes" in err and "size mismatch" not in err


def test_resume_continues_a_stopped_run_bit_for_bit(shapes, tmp_path):
    # BatchNorm, bf16 autocast, a data-loading process: the resumed run ends on the same weights
    common = ["train", "det", "--data", str(shapes["train_images"]), "--ann", str(shapes["train_ann"]),
              "--epochs", "2", "--batch-size", "4", *TINY, "--workers", "1", "--set", "log.every_steps=1"]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    part = tmp_path / "part"
    assert main([*common, "--out", str(part), "--set", "train.stop_after_steps=1"]) == 0
    assert not json.loads((part / "metrics.json").read_text())["finished"]
    # the pause point is not saved with the run: resuming runs to the end
    assert main(["train", "det", "--resume", str(part), "--workers", "1"]) == 0
    summary = json.loads((part / "metrics.json").read_text())
    assert summary["finished"] and summary["step"] == 4
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and any(k.endswith("running_var") for k in a)
    for k in a:
        assert torch.equal(b[k], a[k]), k
    def losses(run):
        return [{k: v for k, v in r.items() if k == "step" or k.startswith("loss")}
                for r in read_metrics_csv(run / "metrics.csv") if r["kind"] == "train"]

    assert [r["step"] for r in losses(part)] == [1, 2, 3, 4]
    assert losses(part) == losses(tmp_path / "full")


def _run(*args):
    return subprocess.run([sys.executable, "-m", "botnet", *args], capture_output=True, text=True)


def test_bad_data_is_listed_before_training_without_traceback(shapes, tmp_path):
    data = json.loads(shapes["train_ann"].read_text())
    data["images"].append({"id": 999, "file_name": "gone.png", "width": 64, "height": 64})
    data["annotations"][0]["category_id"] = 42
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = _run("train", "det", "--data", str(shapes["train_images"]), "--ann", str(bad), "--out", str(tmp_path / "r"),
             *TINY)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "gone.png: image file missing (image id 999)" in r.stderr
    assert f"annotation id {data['annotations'][0]['id']}: category_id 42" in r.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_empty_annotation_file_and_data_generation_errors(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    r = _run("eval", "det", "--data", str(tmp_path), "--ann", str(empty), "--weights", str(tmp_path / "w.safetensors"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "w.safetensors" in r.stderr
    assert main(["data", "shapes", str(tmp_path / "d"), "--train", "3", "--val", "2", "--img-size", "48"]) == 0
    assert (tmp_path / "d" / "annotations" / "instances_val.json").is_file()
    assert len(list((tmp_path / "d" / "train").glob("*.png"))) == 3


def test_demo_pipeline_shortened(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train", "8", "--val", "3", "--epochs", "1", "--pictures", "2",
            "--workers", "0", "--set", "log.progress=never", "--set", "train.batch_size=4"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "box AP" in text and "mask AP" in text
    summary = json.loads((out / "metrics.json").read_text())
    assert {"box_ap", "mask_ap", "minutes"} <= set(summary)
    assert len(list((out / "predictions").glob("*.png"))) == 2
    assert (out / "run" / "curves.png").is_file()
    # a second call reuses the data and the finished run
    assert main(args) == 0
    assert "holds a finished run" in capsys.readouterr().out


def test_dataset_file_names_the_data_once(tmp_path):
    from botnet.cli.det import dataset_overrides
    from botnet.errors import UserError

    spec = tmp_path / "shapes.yaml"
    spec.write_text("train_images: data/train\ntrain_ann: data/annotations/instances_train.json\n")
    overrides = dataset_overrides(str(spec))
    assert overrides == [f'data.train_images="{tmp_path / "data/train"}"',
                         f'data.train_ann="{tmp_path / "data/annotations/instances_train.json"}"']
    spec.write_text("data:\n  train_imgs: x\n")
    with pytest.raises(UserError, match="train_imgs"):
        dataset_overrides(str(spec))


def test_nan_loss_stops_naming_the_step(shapes, tmp_path, capsys):
    code = main(["train", "det", "--data", str(shapes["train_images"]), "--ann", str(shapes["train_ann"]),
                 "--out", str(tmp_path), "--epochs", "3", "--batch-size", "4", *TINY,
                 "--set", "optim.lr=100000000.0", "--set", "schedule.warmup_steps=0"])
    assert code == 2
    assert re.search(r"the loss is (nan|-?inf) at step \d+", capsys.readouterr().err)


def _mixed_shapes(root):
    """The shapes data with validation photos of three shapes, as real photos come: 64 x 64,
    64 x 128 and 128 x 64 (a zero border at the right or bottom; masks padded alike). The last
    two are both 64 x 128: a batch of their own (the run's second batch of 4) is 32 x 64 at the
    canvas, where a batch with the others is padded to 64 x 64."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    data = make_shapes_dataset(root, train=40, val=6, img_size=64, seed=2)
    doc = json.loads(data["val_ann"].read_text())
    borders = [(0, 0), (0, 64), (64, 0), (0, 0), (0, 64), (0, 64)]
    grow = {im["id"]: borders[i] for i, im in enumerate(doc["images"])}
    for im in doc["images"]:
        dh, dw = grow[im["id"]]
        path = data["val_images"] / im["file_name"]
        pixels = np.pad(np.asarray(Image.open(path).convert("RGB")), ((0, dh), (0, dw), (0, 0)))
        Image.fromarray(pixels).save(path)
        im["height"], im["width"] = pixels.shape[:2]
    for ann in doc["annotations"]:
        dh, dw = grow[ann["image_id"]]
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        mask = np.asfortranarray(np.pad(mask_utils.decode(rle), ((0, dh), (0, dw))))
        coded = mask_utils.encode(mask)
        ann["segmentation"] = {"size": list(coded["size"]), "counts": coded["counts"].decode()}
    data["val_ann"].write_text(json.dumps(doc))
    return data


@pytest.mark.slow
def test_eval_of_the_best_weights_repeats_the_runs_own_evaluation(tmp_path, capsys):
    # the run evaluates 4 images a batch in fp32; `eval det` takes 8 a batch and, by default, the
    # precision of the run's evaluations: photos of mixed shapes must not see other padding in
    # another batch (BoT attention is global), nor another precision. Every detection counts
    # (score_thresh 0), so any change of a score or box shows in the AP
    data = _mixed_shapes(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "det", "--data", str(data["train_images"]), "--ann", str(data["train_ann"]),
                 "--val-data", str(data["val_images"]), "--val-ann", str(data["val_ann"]), "--out", str(run),
                 "--epochs", "2", "--batch-size", "4", "--amp", "fp32", "--set", "eval.batch_size=4",
                 "--set", "model.score_thresh=0.0", *TINY]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", "det", "--data", str(data["val_images"]), "--ann", str(data["val_ann"]),
                 "--weights", str(run / "best.safetensors"), "--out", str(tmp_path / "eval"), "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["amp"] == "fp32" and "fp32" in capsys.readouterr().out
    keys = [k for k in metrics if k.startswith(("box_ap", "mask_ap"))]
    assert len(keys) == 12 and any(summary[f"val_{k}"] > 0 for k in keys)  # a detector that finds something
    assert {k: metrics[k] for k in keys} == {k: summary[f"val_{k}"] for k in keys}


def test_eval_reports_recall_and_each_categorys_ap(trained, shapes, tmp_path, capsys):
    assert main(["eval", "det", "--data", str(shapes["val_images"]), "--ann", str(shapes["val_ann"]),
                 "--weights", str(trained / "model.safetensors"), "--out", str(tmp_path), "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for kind in ("box", "mask"):
        for key in ("ar1", "ar10", "ar100", "ars", "arm", "arl"):
            assert metrics[f"{kind}_{key}"] == -1.0 or 0.0 <= metrics[f"{kind}_{key}"] <= 100.0
        # more detections per image never lower the recall
        assert metrics[f"{kind}_ar1"] <= metrics[f"{kind}_ar10"] <= metrics[f"{kind}_ar100"]
    categories = metrics["per_category"]
    assert list(categories) == ["circle", "square", "triangle", "star", "cross"]
    assert [c["id"] for c in categories.values()] == [1, 2, 3, 4, 5]
    scored = [c["box_ap"] for c in categories.values() if c["box_ap"] >= 0]
    # COCO's AP is the mean over the categories with ground truth
    assert metrics["box_ap"] == pytest.approx(sum(scored) / len(scored), abs=0.01)
    out = capsys.readouterr().out
    assert "ar100" in out and "circle (id 1): box ap" in out


def test_predict_says_when_an_image_is_shrunk_far_below_its_size(trained, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    photo = tmp_path / "photo.png"  # a photo of 303 x 384 on a detector trained at canvas 64
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (303, 384, 3), dtype=np.uint8)).save(photo)
    weights = str(trained / "model.safetensors")
    assert main(["predict", "det", str(photo), "--weights", weights, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "1 of 1 image(s) were shrunk" in err and "64 px canvas" in err and "384 px" in err and "--img-size" in err
    assert main(["predict", "det", str(photo), "--weights", weights, "--out", str(tmp_path / "b"),
                 "--img-size", "256"]) == 0
    assert "shrunk" not in capsys.readouterr().err  # 384 px on a 256 canvas: not far below its size
