"""Hostile flags of the commands that do not train (issue item 12): eval, predict and convert
refuse out-of-range numbers and an --out they cannot write, naming the flag; exit code 2."""
import pytest

from tests.hostile.support import listing, run_cli


@pytest.mark.parametrize("flags, named", [
    (["--topk", "-1"], "--topk"),
    (["--topk", "0"], "--topk"),
    (["--img-size", "0"], "--img-size"),
    (["--img-size", "-5"], "--img-size"),
])
def test_predict_cls_out_of_range_flags(colour_folder, cls_weights, capsys, flags, named):
    image = colour_folder / "val" / "red" / "0000.png"
    code, err = run_cli(capsys, "predict", "cls", image, "--weights", cls_weights, "--device", "cpu", *flags)
    assert code == 2 and named in err


@pytest.mark.parametrize("flags, named", [
    (["--workers", "-1"], "--workers"),
    (["--img-size", "0"], "--img-size"),
    (["--img-size", "100000"], "--img-size"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_eval_cls_out_of_range_flags(colour_folder, cls_weights, tmp_path, capsys, flags, named):
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "cls", "--data", colour_folder, "--weights", cls_weights, "--out", out,
                        "--device", "cpu", *flags)
    assert code == 2 and named in err
    assert listing(out) == []


@pytest.mark.parametrize("flags, named", [
    (["--img-size", "0"], "--img-size"),
    (["--img-size", "-64"], "--img-size"),
    (["--workers", "-1"], "--workers"),
])
def test_eval_det_out_of_range_flags(coco_set, det_weights, tmp_path, capsys, flags, named):
    out = tmp_path / "eval"
    code, err = run_cli(capsys, "eval", "det", "--data", coco_set.images, "--ann", coco_set.ann,
                        "--weights", det_weights, "--out", out, "--device", "cpu", *flags)
    assert code == 2 and named in err
    assert listing(out) == []


@pytest.mark.parametrize("flags, named", [
    (["--img-size", "0"], "--img-size"),
    (["--img-size", "-64"], "--img-size"),
    (["--score-thresh", "nan"], "--score-thresh"),
])
def test_predict_det_out_of_range_flags(coco_set, det_weights, tmp_path, capsys, flags, named):
    out = tmp_path / "pred"
    code, err = run_cli(capsys, "predict", "det", coco_set.images / "a.png", "--weights", det_weights,
                        "--out", out, "--device", "cpu", *flags)
    assert code == 2 and named in err
    assert listing(out) == []


def test_convert_out_that_is_a_folder(cls_weights, tmp_path, capsys):
    out = tmp_path / "folder"
    out.mkdir()
    code, err = run_cli(capsys, "convert", cls_weights, "--model", "botnet_s1_tiny", "--out", out)
    assert code == 2 and str(out) in err and "folder" in err
    assert listing(out) == []


@pytest.mark.parametrize("size", ["0", "-3"])
def test_convert_img_size_out_of_range(cls_weights, tmp_path, capsys, size):
    out = tmp_path / "w.safetensors"
    code, err = run_cli(capsys, "convert", cls_weights, "--model", "botnet_s1_tiny", "--out", out, "--img-size", size)
    assert code == 2 and "--img-size" in err
    assert not out.exists()


def test_predict_takes_folders_of_images(colour_folder, cls_weights, coco_set, det_weights, tmp_path, capsys):
    from botnet.cli import main

    capsys.readouterr()
    assert main(["predict", "cls", str(colour_folder / "val"), "--weights", str(cls_weights), "--device", "cpu"]) == 0
    named = [line for line in capsys.readouterr().out.splitlines() if line.endswith(".png")]
    assert len(named) == 24 and named == sorted(named)  # 4 classes x 6, every level of the folder
    code, _ = run_cli(capsys, "predict", "det", coco_set.images, "--weights", det_weights, "--out", tmp_path / "pred",
                      "--device", "cpu")
    assert code == 0 and sorted(listing(tmp_path / "pred")) == ["a.png", "b.png", "detections.json"]
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    code, err = run_cli(capsys, "predict", "cls", empty, "--weights", cls_weights, "--device", "cpu")
    assert code == 2 and f"{empty}: a folder without image files" in err
