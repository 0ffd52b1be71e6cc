"""A tiny task for engine tests: 4 classes of 8x8 images whose mean colour gives the class, a
BatchNorm-free CNN (so that N processes with batch b and one with batch N*b are the same maths),
and a random augmentation drawn from torch's RNG (to exercise per-sample seeding)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from botnet.engine import distributed as du
from botnet.engine.task import Evaluation, Task


class ToyImages(Dataset):
    def __init__(self, n: int, seed: int, augment: bool):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 4
        colours = torch.eye(4, 3) * 2 - 0.5
        self.images = colours[self.labels][:, :, None, None] + torch.randn(n, 3, 8, 8, generator=g)
        self.augment = augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment:
            x = x + 0.1 * torch.randn_like(x)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, int(self.labels[i])


class ToyTask(Task):
    name = "toy"
    main_metric = "acc"

    def __init__(self, n_train: int = 64, n_val: int = 32, nan_at_call: int | None = None, dropout: float = 0.0,
                 norm: bool = False):
        self.n_train, self.n_val, self.nan_at_call, self.dropout = n_train, n_val, nan_at_call, dropout
        self.norm = norm  # a BatchNorm after the conv: running statistics are state a resume must carry
        self.calls = 0

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if self.norm else nn.Identity(), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(self.dropout), nn.Linear(8, 4),
        )

    def build_datasets(self):
        return ToyImages(self.n_train, 0, augment=True), ToyImages(self.n_val, 1, augment=False)

    def training_step(self, model, batch, device):
        self.calls += 1
        x, y = batch
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * math.nan
        return {"loss": loss, "loss_ce": loss.detach()}

    def evaluate(self, model, batches, device):
        stats = torch.zeros(3)
        for x, y in batches:
            logits = model(x.to(device)).float()
            stats[0] += (logits.argmax(1) == y).sum()
            stats[1] += F.cross_entropy(logits, y, reduction="sum")
            stats[2] += len(y)
        du.all_reduce_sum(stats)
        return Evaluation({"acc": float(stats[0] / stats[2]), "loss": float(stats[1] / stats[2])})

    def metadata(self):
        return {"task": "toy"}


def toy_config(**sections):
    """A fast config: fp32, no workers, no TensorBoard; ``sections`` override whole fields."""
    from botnet.engine.config import TrainConfig, load_config

    overrides = [f"{k}={v}" for k, v in sections.items()]
    base = {
        "train": {"epochs": 3, "batch_size": 8, "workers": 0, "channels_last": False, "device": "cpu"},
        "optim": {"lr": 0.2},
        "amp": {"dtype": "fp32"},
        "log": {"every_steps": 1, "tensorboard": False, "progress": "never"},
        "checkpoint": {"every_steps": 4, "keep_last": 2},
    }
    return load_config(TrainConfig, base=base, overrides=overrides)
