"""The contract between the training engine and a task (classification, detection).

The engine owns everything task-independent: the loop, mixed precision, channels_last,
gradient accumulation and clipping, optimiser and schedule, EMA, distributed setup, checkpoints,
logging, progress and plots. A task owns the model, the data and the metrics. The engine prepares
the model (:func:`botnet.engine.parts.prepare_model`) and never sets anything on a task.
"""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import Dataset

from botnet.engine import distributed as du
from botnet.errors import DataError


def inputs_like(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W) in the memory format of ``model``'s convolutions: channels_last
    where the model was prepared so, which spares its first convolution a conversion. The format
    is read from the first 4-d weight whose two layouts differ (a 1x1 weight's do not)."""
    for p in model.parameters():
        if p.dim() == 4 and p.is_contiguous() != p.is_contiguous(memory_format=torch.channels_last):
            if p.is_contiguous(memory_format=torch.channels_last):
                return images.contiguous(memory_format=torch.channels_last)
            break
    return images


@dataclass
class Evaluation:
    """What :meth:`Task.evaluate` returns: flat metrics, the predictions behind them in the
    task's output format (detection: COCO results of every image; None where a task keeps none),
    and ``details``: breakdowns that are not one number (per class, per category, a confusion
    matrix), which ``botnet eval`` writes and the training logs leave out."""

    metrics: dict[str, float]
    predictions: list[Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Task(abc.ABC):
    #: the task's registered name (:mod:`botnet.tasks`): on the command line and in run folders
    name: str = ""
    #: key of the metric that selects the best checkpoint (higher is better), e.g. "top1", "box_ap"
    main_metric: str = ""
    #: whether the model's BatchNorm is synchronized across processes when it trains under
    #: torch.distributed (a model config's ``norm: syncbn``)
    sync_batchnorm: bool = False

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model (weights initialised, possibly from a backbone checkpoint)."""

    @abc.abstractmethod
    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """(train, val), validated (a task knows its classes when it is made, so it learns nothing
        here). ``val`` may be None (no evaluation). The engine wraps ``train`` so that random
        augmentations are seeded per sample (reproducible and resumable); transforms must draw
        their randomness from torch's global RNG (as torchvision's transforms do)."""

    def collate_fn(self, train: bool):
        """The DataLoader collate function (None: torch's default)."""
        return None

    @abc.abstractmethod
    def training_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """Move ``batch`` to ``device``, run the model, return losses. Must contain ``"loss"``.
        Runs inside the engine's autocast context."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, batches: Iterable[Any], device: torch.device) -> Evaluation:
        """Evaluate ``model`` (already in eval mode) on this rank's share of the val set. Under
        torch.distributed the task gathers/reduces across ranks itself (so that e.g. COCO
        evaluation sees all predictions) and every rank returns the same metrics."""

    def blank_batch(self, device: torch.device) -> Any:
        """A batch of blank images (and no objects) in the form ``training_step`` takes."""
        raise NotImplementedError(f"{type(self).__name__} has no blank batch")

    def zero_loss(self, model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
        """The loss of a step whose every image was unreadable: zero, but through a real forward
        pass (of :meth:`blank_batch`), so that every rank's gradient all-reduce stays in step under
        DistributedDataParallel, which needs the forward to expect gradients."""
        return {"loss": self.training_step(model, self.blank_batch(device), device)["loss"] * 0.0}

    def batch_size(self, batch: Any) -> int:
        """Number of images in ``batch`` (for throughput)."""
        return len(batch[0])

    def metadata(self) -> dict[str, Any]:
        """Saved with the weights: model name and overrides, class names, input size...
        JSON-able values only; also stored in each checkpoint."""
        return {}

    def skip_unreadable(self, path: str, reason: str, strict: bool) -> None:
        """Record an image that could not be read: a warning naming the file (once per file), or,
        with ``strict``, an error that stops the run."""
        if strict:
            raise DataError(f"{path}: unreadable image ({reason}); stopped because of --strict")
        skipped = self.__dict__.setdefault("skipped", {})
        if path not in skipped:
            skipped[path] = reason
            warnings.warn(f"{path}: unreadable image skipped ({reason})", stacklevel=3)

    def summary(self) -> dict[str, Any]:
        """Flat numbers for the run's ``metrics.json`` beyond the engine's own; by default how many
        unreadable images were skipped on all ranks. Called once at the end on every rank; under
        torch.distributed it is collective and every rank returns the same."""
        skipped: set[str] = set()
        for part in du.all_gather_objects(sorted(self.__dict__.get("skipped", {}))):
            skipped.update(part)
        return {"skipped_images": len(skipped)}
