"""The trainer's policies as hooks: each is a small object with its own state.

A hook is called before training, after every optimizer step and after the last one; whatever it
keeps that a resumed run needs (the best metric, the logging window, the EMA weights) it hands to
the checkpoint under its ``state_key``. The loop in :mod:`botnet.engine.trainer` knows nothing of
evaluation schedules, checkpoint schedules, logging or EMA: the same shape as detectron2's
``HookBase`` / ``TrainerBase``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from botnet.engine.ema import ModelEma
from botnet.engine.progress import duration

if TYPE_CHECKING:
    from botnet.engine.config import TrainConfig
    from botnet.engine.parts import TrainParts
    from botnet.engine.trainer import Trainer


@dataclass
class StepResult:
    """One optimizer step, as the loop reports it to the hooks."""

    #: rank-averaged losses ("loss" and the task's terms)
    losses: dict[str, float]
    #: images in the step, over all ranks
    images: int
    #: the learning rate the step used
    lr: float
    seconds: float


class Hook:
    #: key of this hook's state in a checkpoint (None: it keeps none)
    state_key: str | None = None

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer", result: StepResult) -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        """After the last step of this invocation (the run may be paused, not finished). Hooks
        are called here in reverse order, so that the checkpoint comes before the evaluation."""

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass


class EmaHook(Hook):
    """Updates ``ema``, the moving average of ``model``'s weights (a part of the run:
    :class:`~botnet.engine.parts.TrainParts`), every ``every_steps`` steps."""

    state_key = "ema"

    def __init__(self, ema: ModelEma, model: torch.nn.Module, every_steps: int):
        self.ema = ema
        self.every_steps = every_steps
        self._model = model

    @property
    def module(self) -> torch.nn.Module:
        return self.ema.module

    def after_step(self, trainer, result) -> None:
        if trainer.step % self.every_steps == 0:
            self.ema.update(self._model)

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state) -> None:
        if state is None:  # EMA switched on for the rest of the run: start it from the weights
            self.ema.module.load_state_dict(self._model.state_dict())
        else:
            self.ema.load_state_dict(state)


class LogHook(Hook):
    """Mean losses, learning rate and throughput over a window of steps, as a console line (step /
    total, epoch, loss, lr, images/s, ETA, peak CUDA memory) and a metrics.csv / TensorBoard row at
    the same moments: every ``every_steps`` steps (more often in a run too short for
    :data:`MIN_ROWS` rows) and whenever ``every_seconds`` passed without one, so that neither a log
    file nor the curves are ever sparse (the progress bar only shows on a terminal).

    When the throughput falls under :data:`SLOW_FRACTION` of the run's own early rate (another job
    sharing the CPU, usually), one line says so and names the settings that help."""

    state_key = "window"
    #: steps timed before the first estimate of the run's duration
    ESTIMATE_AFTER = 5
    #: a run has at least this many rows (when it has as many steps)
    MIN_ROWS = 10
    #: a window slower than this fraction of the early rate is reported (once per invocation)
    SLOW_FRACTION = 1 / 3

    def __init__(self, every_steps: int, every_seconds: float = 30.0):
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.window = self._empty()
        self.last_row: dict[str, float] = {}
        self._last_line = time.monotonic()
        # this invocation's pace, for the ETA and the early rate the later windows are held to
        self._session = {"steps": 0, "seconds": 0.0, "images": 0}
        self._early_rate: float | None = None
        self._warned_slow = False

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"steps": 0, "images": 0, "seconds": 0.0, "sums": {}}

    def interval(self, trainer) -> int:
        return max(1, min(self.every_steps, math.ceil(trainer.total_steps / self.MIN_ROWS)))

    def after_step(self, trainer, result) -> None:
        w, session = self.window, self._session
        w["steps"] += 1
        w["images"] += result.images
        w["seconds"] += result.seconds
        for k, v in result.losses.items():
            w["sums"][k] = w["sums"].get(k, 0.0) + v
        session["steps"] += 1
        session["seconds"] += result.seconds
        session["images"] += result.images
        rate = w["images"] / max(w["seconds"], 1e-9)
        trainer.log.step(1, loss=result.losses["loss"], img_s=rate)
        now = time.monotonic()
        if session["steps"] == self.ESTIMATE_AFTER:
            self._early_rate = session["images"] / max(session["seconds"], 1e-9)
            if trainer.step < trainer.total_steps:
                # early, so that a user knows what the run will take before waiting for it
                per_step = session["seconds"] / session["steps"]
                trainer.log.message(f"{per_step:.2f} s per step over the first {self.ESTIMATE_AFTER} steps: the remaining "
                                    f"{trainer.total_steps - trainer.step} steps take about "
                                    f"{duration(per_step * (trainer.total_steps - trainer.step))} (evaluations not included)")
        if (now - self._last_line >= self.every_seconds or trainer.step % self.interval(trainer) == 0
                or trainer.step == trainer.total_steps):
            self._last_line = now
            trainer.log.message(self._line(trainer, result, rate))
            mean = {k: s / w["steps"] for k, s in w["sums"].items()}
            row = {"loss": mean.pop("loss"), "lr": result.lr, "throughput": rate, **mean}
            trainer.log.log_train(trainer.step, trainer.step / trainer.steps_per_epoch, row)
            self.last_row = row
            self._check_pace(trainer, rate, w["steps"])
            self.window = self._empty()

    def _check_pace(self, trainer, rate: float, steps: int) -> None:
        early = self._early_rate
        if self._warned_slow or early is None or steps < 2 or rate >= early * self.SLOW_FRACTION:
            return
        self._warned_slow = True
        trainer.log.message(
            f"throughput fell to {rate:.2f} img/s, under a third of this run's early {early:.2f} img/s: another job "
            "is likely sharing the CPU. Fewer threads and processes help: OMP_NUM_THREADS=1 (torch's threads) and "
            "--workers 0 (train.workers, the loader processes); see docs/training.md")

    def _line(self, trainer, result: StepResult, rate: float) -> str:
        per_step = self._session["seconds"] / max(self._session["steps"], 1)
        eta = duration(per_step * (trainer.total_steps - trainer.step))
        mean_loss = self.window["sums"]["loss"] / max(self.window["steps"], 1)
        line = (f"step {trainer.step}/{trainer.total_steps} epoch {trainer.step / trainer.steps_per_epoch:.2f} "
                f"loss {mean_loss:.4g} lr {result.lr:.4g} {rate:.1f} img/s eta {eta}")
        if trainer.device.type == "cuda":
            line += f" mem {torch.cuda.max_memory_allocated(trainer.device) / 2**30:.2f}G"
        return line

    def state_dict(self):
        # the last row too: a resumed run that has no step left still reports its training loss
        return {**self.window, "sums": dict(self.window["sums"]), "last_row": dict(self.last_row)}

    def load_state_dict(self, state) -> None:
        if state is not None:
            state = dict(state)
            self.last_row = state.pop("last_row", {})
            self.window = state


class EvalHook(Hook):
    """Evaluation every ``every_epochs`` epochs and / or ``every_steps`` steps and at the end of the
    run, with the best value of the task's main metric tracked (and its weights kept)."""

    state_key = "best"

    def __init__(self, every_epochs: int, every_steps: int, keep_best: bool):
        self.every_epochs, self.every_steps, self.keep_best = every_epochs, every_steps, keep_best
        self.best: dict[str, Any] | None = None
        self.last_step = -1
        self.last_metrics: dict[str, float] = {}
        self._evaluated: int | None = None  # the step of the last evaluation, as the checkpoint recorded

    def before_train(self, trainer) -> None:
        if self.best is None:
            self.best = {"metric": trainer.task.main_metric, "value": -math.inf, "step": -1}
        # the final checkpoint is written before the final evaluation: resuming it evaluates again
        self.last_step = self._evaluated if self._evaluated is not None else (trainer.step if trainer.step else -1)

    def after_step(self, trainer, result) -> None:
        step, spe = trainer.step, trainer.steps_per_epoch
        epoch_end = step % spe == 0
        if trainer.val_set is not None and step < trainer.total_steps and (
            (self.every_steps and step % self.every_steps == 0)
            or (epoch_end and self.every_epochs and (step // spe) % self.every_epochs == 0)
        ):
            self.run(trainer)

    def after_train(self, trainer) -> None:
        if trainer.val_set is not None and self.last_step != trainer.step and trainer.step == trainer.total_steps:
            self.run(trainer)

    def run(self, trainer) -> dict[str, float]:
        metrics = trainer.evaluate()
        self.last_step, self.last_metrics = trainer.step, metrics
        trainer.log.log_eval(trainer.step, trainer.step / trainer.steps_per_epoch, metrics)
        value = metrics.get(trainer.task.main_metric)
        if value is not None and value > self.best["value"]:
            self.best = {"metric": trainer.task.main_metric, "value": float(value), "step": trainer.step}
            if self.keep_best:
                trainer.save_checkpoint(best=True)
                trainer.export_weights("best.safetensors")
        trainer.log.flush()
        return metrics

    def state_dict(self):
        return {**self.best, "evaluated": self.last_step} if self.best is not None else None

    def load_state_dict(self, state) -> None:
        state = dict(state) if state is not None else None
        self._evaluated = state.pop("evaluated", None) if state is not None else None
        self.best = state


class CheckpointHook(Hook):
    """A checkpoint every ``every_steps`` steps (0: at the end of each epoch) and at the end."""

    def __init__(self, every_steps: int):
        self.every_steps = every_steps
        self.last_step = -1

    def before_train(self, trainer) -> None:
        self.last_step = trainer.step if trainer.step else -1

    def after_step(self, trainer, result) -> None:
        step = trainer.step
        due = step % self.every_steps == 0 if self.every_steps else step % trainer.steps_per_epoch == 0
        if step < trainer.total_steps and due:
            self.save(trainer)

    def after_train(self, trainer) -> None:
        # the trained weights reach the disk before anything else can fail (the final evaluation)
        if self.last_step != trainer.step:
            self.save(trainer)
        trainer.export_weights("model.safetensors")

    def save(self, trainer) -> None:
        trainer.log.flush()  # first, so the log on disk always reaches the newest checkpoint
        trainer.save_checkpoint()
        self.last_step = trainer.step


def default_hooks(cfg: "TrainConfig", parts: "TrainParts") -> list[Hook]:
    """The policies of every run, in the order they act after a step: EMA update, logging,
    evaluation (with the best weights kept), checkpoints."""
    hooks: list[Hook] = [EmaHook(parts.ema, parts.model, cfg.ema.every_steps)] if parts.ema is not None else []
    return hooks + [LogHook(cfg.log.every_steps),
                    EvalHook(cfg.eval.every_epochs, cfg.eval.every_steps, cfg.checkpoint.keep_best),
                    CheckpointHook(cfg.checkpoint.every_steps)]
