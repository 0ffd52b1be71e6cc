import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from botnet.classification.config import ClsDataConfig
from botnet.classification.transforms import eval_transform, train_transform
from botnet.cli import main
from botnet.data.imagefolder import ImageFolderDataset, Unreadable, collate_skipping, scan_image_folder, split_folder
from botnet.errors import DataError


def test_scan_finds_classes_and_images(colour_folder):
    classes, samples = scan_image_folder(colour_folder)
    assert classes == ["blue", "green", "red", "yellow"]
    assert len(samples["train"]) == 64 and len(samples["val"]) == 24
    assert {label for _, label in samples["train"]} == {0, 1, 2, 3}
    assert all(p.endswith(".png") for p, _ in samples["val"])


def _break(root, what):
    if what == "missing val":
        shutil.rmtree(root / "val")
        return "missing val/"
    if what == "empty class":
        for f in (root / "train" / "red").iterdir():
            f.unlink()
        return "red: class folder holds no image"
    if what == "no images":
        for split in ("train", "val"):
            for f in (root / split).rglob("*.png"):
                f.unlink()
        return "no images at all"
    if what == "different classes":
        shutil.rmtree(root / "val" / "yellow")
        (root / "val" / "purple").mkdir()
        shutil.copy(root / "val" / "red" / "0000.png", root / "val" / "purple" / "0000.png")
        return "only in train/: yellow"


@pytest.mark.parametrize("what", ["missing val", "empty class", "no images", "different classes"])
def test_layout_errors_before_training(colour_copy, tmp_path, capsys, what):
    expected = _break(colour_copy, what)
    with pytest.raises(DataError, match=expected):
        scan_image_folder(colour_copy)
    out = tmp_path / "run"
    code = main(["train", "cls", "--data", str(colour_copy), "--model", "botnet_s1_tiny", "--out", str(out), "--img-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (out / "config.yaml").exists()  # nothing started


@pytest.mark.parametrize("name", ["validation", "valid"])
def test_the_validation_split_may_be_named_as_timm_accepts(colour_copy, name):
    (colour_copy / "val").rename(colour_copy / name)
    classes, samples = scan_image_folder(colour_copy)
    assert classes == ["blue", "green", "red", "yellow"] and len(samples["val"]) == 24
    assert all(f"/{name}/" in path for path, _ in samples["val"])
    assert split_folder(colour_copy, "val") == colour_copy / name  # what `eval cls` reads
    (colour_copy / name / "yellow").rename(colour_copy / name / "purple")
    with pytest.raises(DataError) as info:
        scan_image_folder(colour_copy)
    assert f"only in {name}/: purple" in str(info.value)


def test_different_class_sets_list_both_sides(colour_copy):
    _break(colour_copy, "different classes")
    with pytest.raises(DataError) as info:
        scan_image_folder(colour_copy)
    assert "only in train/: yellow" in str(info.value) and "only in val/: purple" in str(info.value)


def test_unreadable_images_become_markers_and_leave_the_batch(colour_copy):
    bad = colour_copy / "train" / "red" / "0003.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    (colour_copy / "train" / "red" / "zz.jpg").write_text("not an image")
    classes, samples = scan_image_folder(colour_copy)
    ds = ImageFolderDataset(samples["train"], classes, eval_transform(32))
    marks = [ds[i] for i in range(len(ds)) if isinstance(ds[i], Unreadable)]
    assert sorted(m.path for m in marks) == sorted([str(bad), str(colour_copy / "train" / "red" / "zz.jpg")])
    images, labels, skipped = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=collate_skipping)))
    assert images.shape == (len(ds) - 2, 3, 32, 32) and len(labels) == len(ds) - 2 and len(skipped) == 2


def test_transforms(colour_folder):
    from PIL import Image

    image = Image.open(next((colour_folder / "train" / "red").iterdir())).convert("RGB")
    cfg = ClsDataConfig()
    cfg.randaugment.layers, cfg.randaugment.magnitude = 3, 7
    train = train_transform(24, cfg)
    ra = [t for t in train.transforms if type(t).__name__ == "RandAugment"]
    assert len(ra) == 1 and ra[0].num_ops == 3 and ra[0].magnitude == 7
    torch.manual_seed(0)
    a = train(image)
    torch.manual_seed(1)
    b = train(image)
    assert a.shape == (3, 24, 24) and a.dtype == torch.float32 and not torch.equal(a, b)
    ev = eval_transform((24, 24), crop_pct=0.875)
    x = ev(image)
    assert x.shape == (3, 24, 24) and torch.equal(x, ev(image))
    assert -3 < float(x.min()) and float(x.max()) < 3  # normalised
    cfg.randaugment.layers = 0
    assert not [t for t in train_transform(24, cfg).transforms if type(t).__name__ == "RandAugment"]


def test_a_batch_of_only_unreadable_images_gives_a_zero_loss(colour_folder):
    from botnet.classification.config import ClassificationConfig
    from botnet.classification.task import ClassificationTask
    from botnet.engine.config import load_config

    cfg = load_config(ClassificationConfig, overrides=[f"data.root={colour_folder}", "model.name=botnet_s1_tiny",
                                                       "data.img_size=32"])
    task = ClassificationTask.for_training(cfg)
    model = task.build_model()
    batch = (None, torch.zeros(0, dtype=torch.long), [Unreadable("a.png", "broken"), Unreadable("b.png", "broken")])
    with pytest.warns(UserWarning) as caught:
        loss = task.training_step(model, batch, torch.device("cpu"))["loss"]
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["a.png", "b.png"]
    assert loss.item() == 0.0 and loss.requires_grad
    assert task.summary() == {"skipped_images": 2}
