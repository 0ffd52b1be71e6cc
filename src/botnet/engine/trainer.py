"""The training loop shared by every task.

``train(task, cfg, out_dir)`` runs unchanged in one process or under ``torchrun`` (one process per
device). The loop runs ``accum_steps`` micro-batches per optimizer step through
``task.training_step`` under autocast, checks the loss is finite on every rank, clips, and steps
the optimizer and the schedule; everything else (EMA, logging, evaluation with the best checkpoint,
periodic checkpoints) is a hook of :mod:`botnet.engine.hooks`, and a caller adds its own
(``train(..., hooks=[...])``, :meth:`Trainer.register_hooks`). The trainer builds nothing: it is
given the run's model, data, optimizer... (:func:`botnet.engine.parts.build_parts`). Only rank 0
writes files; every rank takes part in the collectives (loss reduction, evaluation, RNG gathering).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from botnet.engine import checkpoint as ckpt
from botnet.engine import distributed as du
from botnet.engine.amp_choice import choose_training_amp
from botnet.engine.config import TrainConfig, save_config, to_dict
from botnet.engine.evaluate import EVAL_AMP, autocast, evaluate
from botnet.engine.hooks import EvalHook, Hook, LogHook, StepResult, default_hooks
from botnet.engine.parts import TrainParts, build_parts, seed_all
from botnet.engine.run_dir import finished_summary, hold_run_dir
from botnet.engine.run_log import NullRunLog, RunLog
from botnet.engine.task import Task
from botnet.engine.threads import apply_cpu_setting, cpu_setting
from botnet.errors import UserError
from botnet.weights import save_weights


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; usually a learning rate too high for the batch size, or
    bad data. Training stops before the bad step reaches the weights; earlier checkpoints stay."""


def train(task: Task, cfg: TrainConfig, out_dir: str | os.PathLike, resume: str | os.PathLike | None = None,
          hooks: Iterable[Hook] = ()) -> dict[str, Any]:
    """Train ``task`` with ``cfg`` into ``out_dir``; continue from ``resume`` (a checkpoint file or
    a run folder) if given. ``hooks`` run after the default ones (:func:`default_hooks`). Returns
    the final summary (also written to ``metrics.json``)."""
    device = du.select_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", 0)))
    apply_cpu_setting(cpu_setting())
    info = du.setup(cfg.dist.backend, device)
    try:
        resume_from = ckpt.resolve_resume(resume) if resume is not None else None
        with hold_run_dir(out_dir, resume_from, main=info.is_main):  # locked, writable, not another run's
            parts = build_parts(task, cfg, info, device)
            trainer = Trainer(task, cfg, parts, Path(out_dir), info, device, resume_from=resume_from)
            trainer.register_hooks(hooks)
            return trainer.run()
    finally:
        du.teardown(info)


class Trainer:
    """The loop over a run's :class:`~botnet.engine.parts.TrainParts`, and the hooks it calls.

    ``hooks`` (default: :func:`default_hooks`) and those added by :meth:`register_hooks` are
    called in order before training and after each step, and in reverse order after the last step
    (see :meth:`Hook.after_train`). ``resume_from``: a checkpoint that :meth:`run` restores first.
    """

    def __init__(self, task: Task, cfg: TrainConfig, parts: TrainParts, out_dir: Path, info: du.DistInfo,
                 device: torch.device, *, resume_from: Path | None = None, hooks: Iterable[Hook] | None = None):
        self.task, self.cfg, self.parts, self.out_dir, self.info, self.device = task, cfg, parts, out_dir, info, device
        self.model, self.ddp, self.ema, self.loader = parts.model, parts.ddp, parts.ema, parts.loader
        self.train_set, self.val_set = parts.train_set, parts.val_set
        self.optimizer, self.scheduler, self.scaler = parts.optimizer, parts.scheduler, parts.scaler
        self.steps_per_epoch, self.total_steps, self.global_batch = (
            parts.steps_per_epoch, parts.total_steps, parts.global_batch)
        self.resume_from = resume_from
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.amp, self.amp_note = None, ""  # the steps' and evaluations' precision ("auto" resolved), and how
        self.log: RunLog | NullRunLog = NullRunLog()
        self.hooks: list[Hook] = []
        self.register_hooks(default_hooks(cfg, parts) if hooks is None else hooks)

    def register_hooks(self, hooks: Iterable[Hook]) -> None:
        """Add ``hooks`` after those already registered; before :meth:`run`, which restores their
        checkpoint state."""
        self.hooks.extend(hooks)

    @property
    def logger(self) -> LogHook | None:
        return next((h for h in self.hooks if isinstance(h, LogHook)), None)

    @property
    def evaluator(self) -> EvalHook | None:
        return next((h for h in self.hooks if isinstance(h, EvalHook)), None)

    def _start(self) -> None:
        """Restore the checkpoint being resumed, settle the precision, seed each rank, and open the
        run's log (rank 0)."""
        cfg, info = self.cfg, self.info
        rng = self._load(self.resume_from) if self.resume_from is not None else None
        if self.amp is None:
            self.amp, self.amp_note = choose_training_amp(self.task, self.model, self.train_set, cfg, self.device)
        seed_all(cfg.train.seed + info.rank)  # per-rank dropout / drop-path masks
        if rng is not None:
            ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])

        if info.is_main:  # the folder exists: hold_run_dir made it
            # a pause point belongs to one invocation, not to the run: `--resume` must not stop again
            saved = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stop_after_steps=None))
            save_config(saved, self.out_dir / "config.yaml")
            prior = ckpt.run_dir_of(self.resume_from) / "metrics.csv" if self.resume_from else None
            self.log = RunLog(self.out_dir, self.total_steps, self.step, tensorboard=cfg.log.tensorboard,
                              plot=cfg.log.plot, progress=cfg.log.progress, prior_csv=prior,
                              mlflow_params=cfg.log.mlflow and to_dict(cfg))

    # -- checkpoints -----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        state = {"step": self.step, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                 "world_size": self.info.world_size, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "amp": self.amp, "config": to_dict(self.cfg),
                 "metadata": self.task.metadata()}
        state.update({h.state_key: h.state_dict() for h in self.hooks if h.state_key})
        return state

    def save_checkpoint(self, best: bool = False) -> None:
        rng = du.all_gather_objects(ckpt.rng_state())  # collective: every rank calls this
        if self.info.is_main:
            state = {**self._state(), "rng": rng}
            if best:
                ckpt.save_checkpoint(state, ckpt.best_path(self.out_dir))
            else:
                self.last_checkpoint = ckpt.save_checkpoint(state, ckpt.step_path(self.out_dir, self.step))
                ckpt.prune(self.out_dir, self.cfg.checkpoint.keep_last)
        du.barrier()

    def _load(self, path: Path) -> list:
        # on the CPU: RNG states must stay CPU tensors; weights and optimizer state are copied
        # to the model's device by load_state_dict
        state = ckpt.load_checkpoint(path, map_location="cpu", task=self.task.name)
        try:
            self.model.load_state_dict(state["model"])
            for hook in self.hooks:
                if hook.state_key:
                    hook.load_state_dict(state.get(hook.state_key))
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as e:
            why = " ".join(str(e).split())  # torch lists every key: the start says enough
            raise UserError(f"{path}: this checkpoint does not match the configured model/optimizer ({why[:300]})") from None
        self.step = int(state["step"])
        if self.cfg.amp.dtype == "auto" and state.get("amp"):  # the run goes on in its precision
            self.amp, self.amp_note = state["amp"], " (amp auto, as the checkpoint recorded)"
        if state["steps_per_epoch"] != self.steps_per_epoch:
            warnings.warn(f"{path}: saved with {state['steps_per_epoch']} steps per epoch, now "
                          f"{self.steps_per_epoch}; the data order of the resumed run differs")
        return state["rng"]

    # -- what the hooks call ----------------------------------------------------------------

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None and self.cfg.eval.use_ema else self.model

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the evaluated weights (EMA or raw) on the validation set."""
        tc = self.cfg.train
        return evaluate(
            self.task, self.eval_model(), self.val_set, batch_size=self.cfg.eval.batch_size or tc.batch_size,
            workers=tc.workers, device=self.device, amp=self.amp, channels_last=tc.channels_last,
        ).metrics

    def export_weights(self, name: str) -> None:
        """Inference weights of the evaluated model (safetensors + the task's metadata, written
        atomically) for ``botnet eval`` / ``predict``."""
        if self.info.is_main:
            # with the precision of the run's evaluations, which `botnet eval` then repeats
            save_weights(self.eval_model(), self.out_dir / name, {**self.task.metadata(), EVAL_AMP: self.amp})

    # -- the loop --------------------------------------------------------------------------

    def train_step(self, batches) -> StepResult:
        """One optimizer step over ``accum_steps`` micro-batches."""
        accum, model = self.cfg.train.accum_steps, self.ddp
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        images = 0
        for i in range(accum):
            batch = next(batches)
            images += self.task.batch_size(batch)
            last = i == accum - 1
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            sync = model.no_sync() if self.info.enabled and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.amp):
                    losses = self.task.training_step(model, batch, self.device)
                self.scaler.scale(losses["loss"].float() / accum).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() / accum
        keys = sorted(sums)
        reduced = du.all_reduce_mean(torch.stack([sums[k] for k in keys]).to(self.device)).tolist()
        values = dict(zip(keys, reduced))
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"the loss is {values['loss']} at step {self.step + 1} (epoch {self.step // self.steps_per_epoch + 1}); "
                f"training stopped before this step changed the weights. Last good checkpoint: "
                f"{self.last_checkpoint or 'none written yet'}"
            )
        if self.cfg.train.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used, for the log
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return StepResult(values, images * self.info.world_size, lr, time.perf_counter() - started)

    def run(self) -> dict[str, Any]:
        self._start()
        tc, spe = self.cfg.train, self.steps_per_epoch
        done = finished_summary(self.out_dir) if self.step == self.total_steps else None
        if done is not None and done.get("step") == self.step:  # its metrics.json is kept as it is
            self.log.message(f"{self.out_dir}: this run is finished (step {self.step}); nothing to do")
            self.log.close()
            return done
        self.log.message(
            f"training {self.task.name}: {self.total_steps} steps ({tc.epochs} epochs x {spe}), global batch "
            f"{self.global_batch}, lr {self.optimizer.param_groups[0]['initial_lr']:.4g}, {self.info.world_size} process(es) on "
            f"{self.device.type} in {self.amp}{self.amp_note}"
            + (f", resumed at step {self.step}" if self.step else "")
        )
        for hook in self.hooks:
            hook.before_train(self)
        self.ddp.train()
        stop_at = min(self.total_steps, tc.stop_after_steps or self.total_steps)
        started = time.perf_counter()
        try:
            while self.step < stop_at:
                epoch, done = divmod(self.step, spe)
                self.loader.sampler.set_epoch(epoch, skip=done * tc.accum_steps * tc.batch_size)
                batches = iter(self.loader)
                for _ in range(spe - done):
                    result = self.train_step(batches)
                    for hook in self.hooks:
                        hook.after_step(self, result)
                    if self.step >= stop_at:
                        break
                del batches
        except BaseException:
            self.log.flush()  # every good step stays in metrics.csv
            self.log.close()
            raise
        seconds = time.perf_counter() - started
        for hook in reversed(self.hooks):
            hook.after_train(self)
        return self.finish(seconds)

    def finish(self, seconds: float) -> dict[str, Any]:
        extra = self.task.summary()  # collective under torch.distributed
        summary: dict[str, Any] = {
            "finished": self.step == self.total_steps,
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "train_seconds": round(seconds, 2),
        }
        logger, evaluator = self.logger, self.evaluator
        row = logger.last_row if logger is not None else None
        if row:
            summary.update(train_loss=row["loss"], lr=row["lr"], images_per_s=round(row["throughput"], 2))
        if evaluator is not None:
            summary.update({f"val_{k}": v for k, v in evaluator.last_metrics.items()})
        best = evaluator.best if evaluator is not None else None
        if best is not None and best["step"] >= 0:
            summary[f"best_val_{best['metric']}"] = best["value"]
            summary["best_step"] = best["step"]
        summary.update(extra)
        if self.info.is_main:
            self.log.finish(summary)
        du.barrier()
        return summary
