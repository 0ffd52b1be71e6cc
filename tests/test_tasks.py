"""The task registry: a file's task name selects its task object, and a new task plugs in by
registering one, with no other module knowing its name."""
import pytest
import torch

import botnet
from botnet import tasks
from botnet.errors import UserError
from botnet.export import export_model
from botnet.models import create_model
from botnet.weights.rebuild import LoadedModel


class Counting(tasks.TaskKind):
    """A third task: rebuilds a classifier from the file, predicts the mean pixel of each image."""

    name = "count"
    title = "counting"

    def rebuild(self, path, meta, *, model, img_size, device, overrides):
        net = tasks.get_task(tasks.CLASSIFICATION).rebuild(path, {**meta, "task": tasks.CLASSIFICATION}, model=model,
                                                           img_size=img_size, device=device, overrides=overrides).model
        return LoadedModel(net, self.name, ["many"], meta, path=path)

    def input_transform(self, loaded):
        return lambda pixels: pixels.float()

    def predict(self, loaded, images, transform, *, topk, score_thresh, batch_size, device, skipped):
        return [float(transform(image).mean()) for image in images]

    def export_plan(self, model, meta, *, size, dynamic, features, format):
        raise UserError("counting models do not export")

    def attention_input(self, loaded, pixels):
        return pixels, torch.zeros(3, 1, 1), torch.ones(3, 1, 1)


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(tasks._REGISTRY, Counting.name, Counting())
    return Counting.name


def test_both_tasks_are_registered_under_their_names():
    assert set(tasks.task_names()) >= {tasks.CLASSIFICATION, tasks.DETECTION}
    for name in (tasks.CLASSIFICATION, tasks.DETECTION):
        assert tasks.get_task(name).name == name and tasks.task_title(name) != repr(name)
    assert tasks.task_title("segmentation") == "'segmentation'"


def test_a_registered_task_is_loaded_and_predicts_through_its_object(counting, tmp_path):
    path = botnet.save_weights(create_model("resnet_tiny", num_classes=2), tmp_path / "w.safetensors",
                               {"task": counting})
    predictor = botnet.load(path)
    assert predictor.task == counting and predictor.class_names == ["many"]
    image = torch.full((3, 8, 8), 0.25)
    assert predictor.predict([image, image * 2]) == [pytest.approx(0.25), pytest.approx(0.5)]
    with pytest.raises(UserError, match="counting models do not export"):
        export_model(predictor, tmp_path / "w.onnx", format="torch")
    assert not (tmp_path / "w.onnx").exists()


def test_an_unregistered_task_is_named_with_the_file(tmp_path):
    path = botnet.save_weights(create_model("resnet_tiny", num_classes=2), tmp_path / "w.safetensors",
                               {"task": "count"})
    with pytest.raises(UserError, match=r"w.safetensors: unknown task 'count' in the metadata \(expected one of"):
        botnet.load(path)
