"""What a training run is made of, built from its config and its task.

:func:`build_parts` makes everything the loop of :class:`~botnet.engine.trainer.Trainer` works
with: the datasets (validated first, so that a user error surfaces before any model is built),
the model prepared for the run's device, its EMA copy, the DistributedDataParallel wrapper, the
training loader, the optimizer, the schedule and the loss scaler. The trainer is given these
parts and builds nothing itself (detectron2's ``SimpleTrainer`` is given its model, data and
optimizer in the same way), so a caller can build them, change one, and hand them over.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from botnet.engine import distributed as du
from botnet.engine.config import TrainConfig
from botnet.engine.ema import ModelEma
from botnet.engine.evaluate import autocast
from botnet.engine.loader import train_loader
from botnet.engine.optim import build_optimizer, build_scheduler
from botnet.engine.task import Task
from botnet.errors import UserError


@dataclass
class TrainParts:
    """The objects one training run works with (see :func:`build_parts`)."""

    #: the model being trained: on the device, in the run's memory format, BatchNorm as the run needs
    model: nn.Module
    #: what the steps call: ``model``, or its DistributedDataParallel wrapper under torch.distributed
    ddp: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    #: the exponential moving average of the weights (None: ``ema.enabled`` is off)
    ema: ModelEma | None
    steps_per_epoch: int
    total_steps: int
    #: images per optimizer step over all processes (the learning rate scales with it)
    global_batch: int


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_model(model: nn.Module, task: Task, cfg: TrainConfig, info: du.DistInfo,
                  device: torch.device) -> nn.Module:
    """``model`` as the run trains it: BatchNorm synchronized across processes or not, on
    ``device``, in channels_last memory format when ``train.channels_last`` is set (a task's
    inputs follow the model's format: :func:`botnet.engine.task.inputs_like`).

    BatchNorm is synchronized when the run has several processes and the task asks for it (a
    model with ``norm: syncbn``: a detector's default, as the paper trains Mask R-CNN); this is the
    one place that decides it. PyTorch's SyncBatchNorm runs on CUDA only: elsewhere each process
    keeps its own statistics."""
    sync = info.enabled and task.sync_batchnorm
    if sync and device.type != "cuda":
        warnings.warn(f"model.norm: syncbn is CUDA-only in PyTorch; BatchNorm stays per process on {device.type}")
    model = du.batchnorm_for_device(model, device, sync)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_parts(task: Task, cfg: TrainConfig, info: du.DistInfo, device: torch.device) -> TrainParts:
    """The parts of a run of ``task`` with ``cfg`` in the process ``info`` on ``device``. The
    model's initial weights are drawn from ``train.seed``, the same on every process."""
    tc = cfg.train
    if tc.accum_steps < 1 or tc.batch_size < 1 or tc.epochs < 1:
        raise UserError("train.epochs, train.batch_size and train.accum_steps must be at least 1")
    autocast(device, cfg.amp.dtype)  # validates the precision before any work

    train_set, val_set = task.build_datasets()  # the data first: its errors before any model is built
    seed_all(tc.seed)  # identical initial weights on every rank
    model = prepare_model(task.build_model(), task, cfg, info, device)
    ema = ModelEma(model, cfg.ema.decay) if cfg.ema.enabled else None
    ddp = model
    if info.enabled:
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if tc.channels_last:
            # 1x1 conv weights in channels_last have strides that differ from their (equally
            # laid out) gradients only in size-1 dims; DDP warns about it on every step
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    loader = train_loader(
        train_set, tc.batch_size, rank=info.rank, world_size=info.world_size, seed=tc.seed,
        workers=tc.workers, collate_fn=task.collate_fn(train=True), pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader) // tc.accum_steps
    if steps_per_epoch == 0:
        raise UserError(f"the training set has {len(train_set)} images: fewer than one optimizer step "
                        f"({tc.batch_size} x {tc.accum_steps} accumulation x {info.world_size} processes); set "
                        f"--batch-size (train.batch_size) to at most "
                        f"{max(1, len(train_set) // (tc.accum_steps * info.world_size))}")
    total_steps = tc.epochs * steps_per_epoch
    global_batch = tc.batch_size * tc.accum_steps * info.world_size
    optimizer = build_optimizer(model, cfg.optim, global_batch)
    return TrainParts(
        model=model, ddp=ddp, train_set=train_set, val_set=val_set, loader=loader, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.schedule, total_steps, steps_per_epoch),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp.dtype == "fp16"), ema=ema,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, global_batch=global_batch,
    )
