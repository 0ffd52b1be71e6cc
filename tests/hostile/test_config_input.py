"""Hostile flags and config values (issue items 10 and 12): every value is checked by range when
the config is loaded, so training never starts on one; the message names the key and the range,
the exit code is 2, and nothing is written to --out."""
import pytest

from tests.hostile.support import CLS_FAST, DET_FAST, box_ann, listing, run_cli

CLS_BAD = [
    # (flags, what the message must name)
    (["--img-size", "0"], "data.img_size=0"),  # item 10: used to train at the default size
    (["--img-size", "-5"], "data.img_size=-5"),
    (["--img-size", "100000"], "data.img_size=100000"),
    (["--workers", "-1"], "train.workers=-1"),
    (["--epochs", "0"], "train.epochs=0"),
    (["--batch-size", "0"], "train.batch_size=0"),
    (["--set", "optim.lr=-1"], "optim.lr=-1"),
    (["--set", "optim.lr=.nan"], "optim.lr=nan"),
    (["--set", "log.every_steps=0"], "log.every_steps=0"),
    (["--set", "data.crop_pct=0"], "data.crop_pct=0"),
    (["--set", "data.scale=[1]"], "data.scale=[1]"),
    (["--set", "data.scale=[0.9, 0.2]"], "data.scale=(0.9, 0.2)"),
    (["--set", "data.mean=[1,2]"], "data.mean=[1, 2]"),
    (["--set", "data.std=[0,0,0]"], "data.std=(0.0, 0.0, 0.0)"),
    (["--set", "optim.name=adam"], "optim.name='adam'"),
    (["--set", "amp.dtype=fp8"], "amp.dtype='fp8'"),
    (["--set", "data.randaugment.magnitude=40"], "data.randaugment.magnitude=40"),
    (["--set", "model.attn_impl=fast"], "model.attn_impl='fast'"),
    (["--set", "model.options={attn_impl: flex}"], "model.options={'attn_impl': 'flex'}"),
    (["--set", "model.options={img_size: 64}"], "model.options={'img_size': 64}"),  # one key per setting
]


@pytest.mark.parametrize("flags, named", CLS_BAD, ids=[" ".join(f) for f, _ in CLS_BAD])
def test_train_cls_refuses_out_of_range_values(colour_folder, tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "cls", "--data", colour_folder, "--out", out, "--epochs", "1",
                        *CLS_FAST, *flags)
    assert code == 2
    assert named in err and "must" in err
    assert listing(out) == []


def test_train_cls_refuses_a_non_square_old_input_size(colour_folder, tmp_path, capsys):
    # the old key moves to data.img_size, one side: a non-square size cannot (with --img-size it is unused)
    out = tmp_path / "run"
    fast = [f for i, f in enumerate(CLS_FAST) if "--img-size" not in CLS_FAST[max(i - 1, 0):i + 1]]
    code, err = run_cli(capsys, "train", "cls", "--data", colour_folder, "--out", out, "--epochs", "1", *fast,
                        "--set", "model.options.input_size=[64, 96]")
    assert code == 2
    assert "model.options.input_size=[64, 96]" in err and "data.img_size" in err
    assert listing(out) == []


DET_BAD = [
    (["--img-size", "0"], "data.img_size=0"),
    (["--img-size", "-64"], "data.img_size=-64"),
    (["--jitter", "2,0.5"], "data.scale_range=(2.0, 0.5)"),
    (["--jitter", "0,1"], "data.scale_range=(0.0, 1.0)"),
    (["--set", "model.score_thresh=2"], "model.score_thresh=2"),
    (["--set", "model.mask_head_channels=[]"], "model.mask_head_channels=[]"),
    (["--set", "model.anchor_sizes=[8,16]"], "model.anchor_sizes=[8, 16]"),  # was refused only by the builder
    (["--set", "model.attn_impl=fast"], "model.attn_impl='fast'"),
    (["--set", "model.options={img_size: 64}"], "model.options={'img_size': 64}"),  # the canvas is data.img_size
]


@pytest.mark.parametrize("flags, named", DET_BAD, ids=[" ".join(f) for f, _ in DET_BAD])
def test_train_det_refuses_out_of_range_values(coco_set, tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "det", "--data", coco_set.images, "--ann", coco_set.ann, "--out", out,
                        *DET_FAST, *flags)
    assert code == 2
    assert named in err
    assert listing(out) == []


def test_recipe_file_with_out_of_range_value_names_file_and_key(colour_folder, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("log: {every_steps: 0}\n")
    code, err = run_cli(capsys, "train", "cls", "--data", colour_folder, "--out", tmp_path / "run",
                        "--config", recipe)
    assert code == 2 and str(recipe) in err and "log.every_steps=0" in err


@pytest.mark.parametrize("setting, offered", [("optim.lrr=0.1", "optim.lr"), ("lr=0.1", "optim.lr"),
                                              ("train.batchsize=4", "train.batch_size"),
                                              ("optm.lr=0.1", "optim.lr")])
def test_an_unknown_set_key_offers_the_closest_valid_key(colour_folder, tmp_path, capsys, setting, offered):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", "cls", "--data", colour_folder, "--out", out, "--set", setting)
    assert code == 2 and setting.split("=")[0] in err
    assert f"(did you mean '{offered}'?)" in err
    assert listing(out) == []
