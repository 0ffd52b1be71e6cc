"""Hooks a caller registers: called at the right points, after the engine's own, their state
carried by checkpoints; and a trainer built from parts made outside it."""
import math

import torch
from toy_task import ToyTask, toy_config

from botnet.engine import Hook, Trainer, build_parts, default_hooks, train
from botnet.engine import distributed as du
from botnet.engine.checkpoint import list_step_checkpoints
from botnet.engine.hooks import CheckpointHook, EvalHook, LogHook


class Recorder(Hook):
    """Writes down every call, with the trainer's step and what the run folder holds then."""

    def __init__(self, task: ToyTask):
        self.task, self.calls = task, []

    def before_train(self, trainer):
        self.calls.append(("before_train", trainer.step, self.task.calls))

    def after_step(self, trainer, result):
        saved = [p.name for p in list_step_checkpoints(trainer.out_dir)]
        self.calls.append(("after_step", trainer.step, result.losses["loss"], result.images, saved))

    def after_train(self, trainer):
        self.calls.append(("after_train", trainer.step, (trainer.out_dir / "model.safetensors").exists()))


def test_a_registered_hook_is_called_before_training_after_each_step_and_at_the_end(tmp_path):
    task = ToyTask()
    recorder = Recorder(task)
    summary = train(task, toy_config(), tmp_path, hooks=[recorder])  # 8 steps per epoch, 3 epochs
    first, *steps, last = recorder.calls
    assert first == ("before_train", 0, 0)  # before the first training step
    assert [c[0] for c in steps] == ["after_step"] * 24 and [c[1] for c in steps] == list(range(1, 25))
    assert all(math.isfinite(c[2]) and c[3] == 8 for c in steps)
    # after the engine's own hooks: the checkpoint of step 4 (every 4 steps) is on disk at step 4
    by_step = {c[1]: c[4] for c in steps}
    assert "step_00000004.pt" in by_step[4] and "step_00000004.pt" not in by_step[3]
    # after the last step, in reverse order: before the engine's checkpoint and weights
    assert last == ("after_train", 24, False)
    assert summary["step"] == 24 and (tmp_path / "model.safetensors").exists()


class StepCounter(Hook):
    """Keeps a count in the checkpoint under its own key."""

    state_key = "counter"

    def __init__(self):
        self.count, self.restored = 0, None

    def after_step(self, trainer, result):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.restored = state
        self.count = state["count"]


def test_a_hooks_state_goes_into_checkpoints_and_comes_back_on_resume(tmp_path):
    train(ToyTask(), toy_config(**{"train.stop_after_steps": 10}), tmp_path, hooks=[StepCounter()])
    resumed = StepCounter()
    train(ToyTask(), toy_config(), tmp_path, resume=tmp_path, hooks=[resumed])
    assert resumed.restored == {"count": 10}  # the pause's checkpoint, written after the hook's last step
    assert resumed.count == 24


def test_a_trainer_runs_parts_built_outside_it_with_hooks_registered_on_it(tmp_path):
    cfg = toy_config(**{"train.epochs": 1})
    task, device = ToyTask(), torch.device("cpu")
    info = du.DistInfo()  # one process
    parts = build_parts(task, cfg, info, device)
    assert [type(h) for h in default_hooks(cfg, parts)] == [LogHook, EvalHook, CheckpointHook]
    parts.optimizer = torch.optim.SGD(parts.model.parameters(), lr=0.0)  # a part replaced: nothing moves
    parts.scheduler = torch.optim.lr_scheduler.LambdaLR(parts.optimizer, lambda step: 1.0)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    trainer = Trainer(task, cfg, parts, tmp_path, info, device)
    recorder = Recorder(task)
    trainer.register_hooks([recorder])
    summary = trainer.run()
    assert summary["step"] == 8 and len(recorder.calls) == 10
    assert all(torch.equal(v, before[k]) for k, v in parts.model.state_dict().items())
