"""Image classification as an engine :class:`~botnet.engine.task.Task`: ImageFolder data, a
registered model with a fresh classifier, label-smoothed cross-entropy, top-1 / top-5 accuracy
and the confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from botnet.classification.config import ClassificationConfig, ClsModelConfig
from botnet.classification.report import confusion_counts, topk_ks
from botnet.classification.transforms import eval_transform, train_transform
from botnet.data.imagefolder import ImageFolderDataset, Unreadable, collate_skipping, scan_image_folder, scan_split
from botnet.engine import distributed as du
from botnet.engine.task import Evaluation, Task, inputs_like
from botnet.errors import DataError, UserError
from botnet.tasks import CLASSIFICATION


def model_input_size(model_cfg: ClsModelConfig, img_size: int | None = None) -> tuple[int, int]:
    """The training resolution: ``img_size`` if given, else the model's default input size."""
    if img_size:
        return (img_size, img_size)
    from botnet.models import get_model_config

    size = get_model_config(model_cfg.name).img_size
    return (int(size[0]), int(size[1]))


def build_classifier(model_cfg: ClsModelConfig, num_classes: int, img_size: tuple[int, int]) -> nn.Module:
    from botnet.models import create_model

    model = create_model(model_cfg.name, num_classes=num_classes, img_size=img_size, drop_rate=model_cfg.drop_rate,
                         drop_path_rate=model_cfg.drop_path_rate, attn_impl=model_cfg.attn_impl,
                         **model_cfg.options)
    if model_cfg.init_weights:
        import sys

        from botnet.weights.pretrained import load_pretrained

        # a checkpoint's own classifier only fits when the classes are the same (else re-initialised, reported)
        model.load_report = load_pretrained(model, model_cfg.init_weights, include_classifier=True)
        if du.rank() == 0:
            print(f"weights {model_cfg.init_weights}: {model.load_report.summary()}", file=sys.stderr)
    return model


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
    """How many rows have their label among the ``k`` highest logits, for each ``k``."""
    top = logits.topk(max(ks), dim=1).indices
    hits = top == labels[:, None]
    return [hits[:, :k].any(dim=1).sum() for k in ks]


class ClassificationTask(Task):
    """Classification over a known list of classes: from a training folder (:meth:`for_training`)
    or from the metadata of trained weights (evaluation)."""

    name = CLASSIFICATION
    main_metric = "top1"

    def __init__(self, cfg: ClassificationConfig, class_names: Sequence[str] | None = None,
                 datasets: tuple[ImageFolderDataset, ImageFolderDataset] | None = None):
        self.cfg = cfg
        self.class_names: list[str] | None = list(class_names) if class_names is not None else None
        self.img_size = model_input_size(cfg.model, cfg.data.img_size)
        self.datasets = datasets

    @property
    def sync_batchnorm(self) -> bool:
        return self.cfg.model.norm == "syncbn"

    @classmethod
    def for_training(cls, cfg: ClassificationConfig) -> "ClassificationTask":
        """The task of a training run: the folder scanned and validated, its classes resolved."""
        data = cfg.data
        if not data.root:
            raise UserError("no data folder given (data.root / --data)")
        classes, samples = scan_image_folder(data.root)
        if len(classes) < 2:
            raise DataError(f"{data.root}: a classifier needs at least two class folders, found {classes}")
        task = cls(cfg, classes)
        task.datasets = (ImageFolderDataset(samples["train"], classes, train_transform(task.img_size, data)),
                         ImageFolderDataset(samples["val"], classes, task.eval_transform()))
        return task

    # -- data ------------------------------------------------------------------------------

    def build_datasets(self):
        if self.datasets is None:
            raise UserError("this classification task has no training data (ClassificationTask.for_training loads it)")
        return self.datasets

    def eval_transform(self):
        d = self.cfg.data
        return eval_transform(self.img_size, d.crop_pct, d.mean, d.std)

    def eval_dataset(self, split_dir: str | Path) -> ImageFolderDataset:
        """A split scored against the classes the weights were trained on (the folder may hold a
        subset of them, never a class the weights do not know)."""
        assert self.class_names is not None
        classes, samples = scan_split(split_dir)
        unknown = sorted(set(classes) - set(self.class_names))
        if unknown:
            raise DataError(f"{split_dir}: class folders unknown to the weights", [f"not trained on: {c}" for c in unknown])
        remap = [self.class_names.index(c) for c in classes]
        return ImageFolderDataset([(p, remap[i]) for p, i in samples], self.class_names, self.eval_transform())

    def collate_fn(self, train: bool):
        return collate_skipping

    def blank_batch(self, device):
        # two images: BatchNorm in training mode needs more than one value per channel
        return torch.zeros(2, 3, *self.img_size, device=device), torch.zeros(2, dtype=torch.long, device=device), []

    def batch_size(self, batch) -> int:
        return len(batch[1])

    def _images(self, model, batch, device: torch.device):
        images, labels, bad = batch
        for item in bad:
            self._unreadable(item)
        if images is None:
            return None, None
        return inputs_like(model, images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)

    def _unreadable(self, item: Unreadable) -> None:
        self.skip_unreadable(item.path, item.reason, self.cfg.data.strict)

    # -- model, loss, metrics --------------------------------------------------------------

    def build_model(self) -> nn.Module:
        if not self.class_names:
            raise UserError("the class names are unknown: ClassificationTask.for_training resolves them")
        return build_classifier(self.cfg.model, len(self.class_names), self.img_size)

    def training_step(self, model, batch, device):
        images, labels = self._images(model, batch, device)
        if images is None:
            return self.zero_loss(model, device)
        logits = model(images)
        return {"loss": F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.loss.label_smoothing)}

    def evaluate(self, model, batches: Iterable[Any], device) -> Evaluation:
        """top1 (and top5 for more than 5 classes: :mod:`botnet.classification.report`) in percent,
        the plain cross-entropy (no smoothing), and in ``details`` the confusion matrix."""
        num = len(self.class_names or []) or 1
        ks = topk_ks(num)
        stats = torch.zeros(len(ks) + 2, dtype=torch.float64, device=device)  # top-k hits, loss sum, count
        confusion = torch.zeros(num, num, dtype=torch.float64, device=device)
        for batch in batches:
            images, labels = self._images(model, batch, device)
            if images is None:
                continue
            logits = model(images).float()
            hits = topk_correct(logits, labels, ks)
            loss = F.cross_entropy(logits, labels, reduction="sum")
            stats += torch.stack([*(h.double() for h in hits), loss.double(),
                                  torch.tensor(len(labels), dtype=torch.float64, device=device)])
            confusion += confusion_counts(labels, logits.argmax(1), num).double()
        du.all_reduce_sum(stats)
        du.all_reduce_sum(confusion)
        n = max(stats[-1].item(), 1.0)
        metrics = {f"top{k}": 100.0 * stats[i].item() / n for i, k in enumerate(ks)}
        metrics.update(loss=stats[-2].item() / n, num_images=int(stats[-1].item()))
        return Evaluation(metrics, details={"confusion": confusion.cpu().long()})

    def metadata(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"task": self.name, "class_names": list(self.class_names or []), "img_size": list(self.img_size),
                "crop_pct": d.crop_pct, "mean": list(d.mean), "std": list(d.std)}
