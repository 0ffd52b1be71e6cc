"""Optimiser and learning-rate schedule. The schedule is stepped once per optimizer step."""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from botnet.engine.config import OptimConfig, ScheduleConfig
from botnet.errors import UserError


def param_groups(model: nn.Module, weight_decay: float, no_decay_1d: bool = True) -> list[dict]:
    """Two groups: weights with decay; biases and normalisation scales (1-D tensors) without,
    since decaying them only fights the normalisation they belong to."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_1d and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def effective_lr(cfg: OptimConfig, global_batch: int) -> float:
    return cfg.lr * global_batch / cfg.base_batch if cfg.base_batch else cfg.lr


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_1d)
    lr = effective_lr(cfg, global_batch) if global_batch else cfg.lr
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    raise UserError(f"optim.name={cfg.name!r}: expected sgd or adamw")


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base lr after ``step`` optimizer steps (a pure function, easy to test
    and to plot)."""
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, math.floor(cfg.max_warmup_fraction * total_steps))
    if step < warmup:
        t = step / warmup
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * t
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        span = max(1, total_steps - warmup)
        t = min(1.0, (step - warmup) / span)
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.name == "step":
        if cfg.milestone_fractions:
            passed = sum(step >= round(f * total_steps) for f in cfg.milestone_fractions)
        else:
            passed = sum(step >= round(m * steps_per_epoch) for m in cfg.milestones)
        return cfg.gamma**passed
    raise UserError(f"schedule.name={cfg.name!r}: expected cosine, step or constant")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, total_steps, steps_per_epoch, cfg)  # validates the name before training starts
    # a partial (not a custom callable) so that the scheduler's state_dict holds no config object
    # and loads with torch.load(weights_only=True)
    factor = functools.partial(lr_factor, total_steps=total_steps, steps_per_epoch=steps_per_epoch, cfg=cfg)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
