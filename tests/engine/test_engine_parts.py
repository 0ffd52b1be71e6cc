"""The parts of a run: SyncBatchNorm and the memory format decided once, where the model is prepared."""
import warnings

import pytest
import torch
from toy_task import ToyTask, toy_config

from botnet.engine import distributed as du
from botnet.engine.parts import prepare_model
from botnet.engine.task import inputs_like


class NormTask(ToyTask):
    """The toy task with BatchNorm, asking for it synchronized or not (as a detector's norm does)."""

    def __init__(self, sync: bool):
        super().__init__(norm=True)
        self.sync_batchnorm = sync


def prepare_on_cpu(monkeypatch, task, world: int):
    """``task``'s model prepared on the CPU as process 0 of ``world``: the ``sync`` each
    ``batchnorm_for_device`` call got, the model, and the warnings raised."""
    seen = []
    real = du.batchnorm_for_device
    monkeypatch.setattr(du, "batchnorm_for_device", lambda m, d, sync: seen.append(sync) or real(m, d, sync))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = prepare_model(task.build_model(), task, toy_config(), du.DistInfo(0, world), torch.device("cpu"))
    return seen, model, caught


@pytest.mark.parametrize("world, task_sync, expected", [
    (1, True, False),     # one process: nothing to synchronize with
    (2, False, False),
    (2, True, True),      # the task asks (a model with norm: syncbn)
])
def test_batchnorm_is_synchronized_for_several_processes_when_the_task_asks(monkeypatch, world, task_sync, expected):
    seen, model, caught = prepare_on_cpu(monkeypatch, NormTask(task_sync), world)
    assert seen[0] == expected  # (the first call: the rest are its recursion into the children)
    # on the CPU, where PyTorch's SyncBatchNorm does not run, the BatchNorm stays per process, and says so
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any("syncbn is CUDA-only" in str(w.message) for w in caught) == expected


@pytest.mark.parametrize("sync_bn, expected", [(False, False), (True, True)])
def test_the_old_dist_sync_bn_key_still_synchronizes_a_classifier(monkeypatch, capsys, sync_bn, expected):
    # dist.sync_bn was the second key of model.norm: syncbn; a recipe that still says it keeps its meaning
    from botnet.classification.config import ClassificationConfig
    from botnet.classification.task import ClassificationTask
    from botnet.engine.config import load_config

    cfg = load_config(ClassificationConfig, overrides=["model.name=resnet_tiny", f"dist.sync_bn={str(sync_bn).lower()}"])
    seen, model, caught = prepare_on_cpu(monkeypatch, ClassificationTask(cfg, class_names=["a", "b"]), world=2)
    assert seen[0] == expected
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any("syncbn is CUDA-only" in str(w.message) for w in caught) == expected
    assert ("dist.sync_bn" in capsys.readouterr().err) == sync_bn  # the one deprecation line


def test_inputs_follow_the_memory_format_the_model_was_prepared_in():
    task = ToyTask()
    images = torch.randn(2, 3, 8, 8)
    for channels_last in (False, True):
        cfg = toy_config(**{"train.channels_last": str(channels_last).lower()})
        model = prepare_model(task.build_model(), task, cfg, du.DistInfo(), torch.device("cpu"))
        out = inputs_like(model, images)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert out.is_contiguous() != channels_last and torch.equal(out, images)
