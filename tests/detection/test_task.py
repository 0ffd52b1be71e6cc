"""DetectionTask against the engine contract: data checks, unreadable images, metrics keys."""
import pytest
import torch

from botnet.data.shapes import make_shapes_dataset
from botnet.detection.config import DetDataConfig, DetectionConfig, DetModelConfig
from botnet.detection.task import DetectionTask
from botnet.errors import DataError, UserError

SMALL_MODEL = dict(name="resnet_tiny", norm="bn", fpn_channels=32, anchor_sizes=[8, 16, 32, 64, 128],
                   rpn_batch_size=32, rpn_pre_nms_train=100, rpn_post_nms_train=50, rpn_pre_nms_test=100,
                   rpn_post_nms_test=50, box_batch_size=32, box_representation=64, mask_head_channels=[32])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train=6, val=3, img_size=48, seed=2)


def _task(shapes, masks=True, strict=False, **model):
    data = DetDataConfig(train_images=str(shapes["train_images"]), train_ann=str(shapes["train_ann"]),
                         val_images=str(shapes["val_images"]), val_ann=str(shapes["val_ann"]), img_size=48,
                         strict=strict)
    return DetectionTask.for_training(DetectionConfig(model=DetModelConfig(**{**SMALL_MODEL, "masks": masks, **model}),
                                                      data=data))


def test_training_step_and_evaluation_follow_the_contract(shapes):
    task = _task(shapes)
    train, val = task.build_datasets()
    assert task.class_names == ["circle", "square", "triangle", "star", "cross"]
    model = task.build_model()
    batch = task.collate_fn(True)([train[i] for i in range(2)])
    losses = task.training_step(model, batch, torch.device("cpu"))
    assert "loss" in losses and torch.isfinite(losses["loss"])
    assert losses["loss"].item() == pytest.approx(sum(v.item() for k, v in losses.items() if k != "loss"), rel=1e-5)
    model.eval()
    with torch.no_grad():
        result = task.evaluate(model, [task.collate_fn(False)([val[i] for i in range(3)])], torch.device("cpu"))
    metrics = result.metrics
    assert isinstance(result.predictions, list)
    assert metrics["num_images"] == 3 and "box_ap" in metrics and "mask_ap75" in metrics
    meta = task.metadata()
    assert meta["task"] == "det" and meta["cat_ids"] == [1, 2, 3, 4, 5] and meta["detector"]["name"] == "resnet_tiny"


def test_box_only_model_reports_box_metrics_only(shapes):
    task = _task(shapes, masks=False)
    _, val = task.build_datasets()
    model = task.build_model().eval()
    with torch.no_grad():
        metrics = task.evaluate(model, [task.collate_fn(False)([val[0]])], torch.device("cpu")).metrics
    assert "box_ap" in metrics and not any(k.startswith("mask_") for k in metrics)


def test_unreadable_images_are_skipped_with_a_warning_once_or_stop_when_strict(shapes, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(shapes["train_images"].parent, root)
    paths = {k: root / v.relative_to(shapes["train_images"].parent) for k, v in shapes.items()}
    task = _task(paths)
    train, _ = task.build_datasets()
    name = train.coco.imgs[train.ids[0]]["file_name"]
    (paths["train_images"] / name).write_bytes(b"\x89PNG broken")
    batch = task.collate_fn(True)([train[i] for i in range(len(train))])
    model = task.build_model()
    with pytest.warns(UserWarning, match=name):
        task.training_step(model, batch, torch.device("cpu"))
    task.training_step(model, batch, torch.device("cpu"))  # warned once per file
    assert task.summary() == {"skipped_images": 1}
    strict = _task(paths, strict=True)
    strict_train, _ = strict.build_datasets()
    with pytest.raises(DataError, match=name):
        strict_train[0]


def test_backbone_weights_fill_the_resnet_layers(shapes, tmp_path):
    from botnet.models import create_model

    donor = create_model("botnet_tiny", num_classes=10)
    torch.nn.init.constant_(donor.conv1.weight, 0.125)
    torch.save(donor.state_dict(), tmp_path / "r.pth")
    task = _task(shapes, name="botnet_tiny", backbone_weights=str(tmp_path / "r.pth"))
    task.build_datasets()
    model = task.build_model()
    assert torch.all(model.backbone.body.conv1.weight == 0.125)
    assert model.backbone.body.load_report.loaded
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(UserError, match="no tensor fits"):
        junk = _task(shapes, backbone_weights=str(tmp_path / "junk.pth"))
        junk.build_model()


def test_missing_training_paths_are_user_errors():
    with pytest.raises(UserError, match="--data"):
        DetectionTask.for_training(DetectionConfig())


def test_a_batch_of_only_unreadable_images_gives_a_zero_loss_through_a_forward_pass(shapes):
    from botnet.data.imagefolder import Unreadable

    task = _task(shapes)
    model = task.build_model()
    with pytest.warns(UserWarning, match="broken.png"):
        losses = task.training_step(model, ([], [], [Unreadable("broken.png", "truncated")]), torch.device("cpu"))
    assert losses["loss"].item() == 0.0 and losses["loss"].requires_grad
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None for g in grads) > len(grads) // 2  # the forward reached the model's layers


@pytest.mark.parametrize("train_empty", [False, True])
def test_train_empty_keeps_or_drops_images_without_objects(shapes, tmp_path, train_empty):
    import json
    import shutil

    from botnet.cli import build_cli
    from botnet.cli.det import train_overrides
    from botnet.detection.task import load_training_data
    from botnet.engine.config import resolve_run_config

    # the training set plus two images without annotations (the set may hold some already)
    doc = json.loads(shapes["train_ann"].read_text())
    images = tmp_path / "images"
    shutil.copytree(shapes["train_images"], images)
    first = doc["images"][0]
    for k in (1, 2):
        shutil.copy(images / first["file_name"], images / f"empty{k}.png")
        doc["images"].append({**first, "id": 1000 + k, "file_name": f"empty{k}.png"})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(doc))
    annotated = len({a["image_id"] for a in doc["annotations"]})
    argv = ["train", "det", "--data", str(images), "--ann", str(ann), "--out", str(tmp_path / "run")]
    args = build_cli().parser.parse_args(argv + (["--train-empty"] if train_empty else []))
    cfg = resolve_run_config(DetectionConfig, args.config, train_overrides(args))  # as `botnet train det` does
    train, _ = load_training_data(cfg)
    assert len(train) == (len(doc["images"]) if train_empty else annotated) and len(doc["images"]) > annotated
