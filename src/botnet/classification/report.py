"""What ``botnet eval cls`` reports beyond the overall accuracy: each class's accuracy and the
confusion matrix, as numbers and as a picture.

Top-k follows the class count: top-5 is reported only for more than 5 classes. With 5 or fewer
every class is among the top 5, so the figure would be 100 by construction (timm clamps k to the
class count and still prints "top5"; we leave the key out rather than print a constant).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

#: the k of top-k accuracy beyond top-1 (reported when there are more classes than k)
TOP_K = 5
#: the confusion matrix picture writes class names on its axes up to this many classes
NAMED_TICKS = 40


def topk_ks(num_classes: int) -> tuple[int, ...]:
    """The k of each top-k accuracy reported for ``num_classes`` classes."""
    return (1, TOP_K) if num_classes > TOP_K else (1,)


def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each class's accuracy (percent of its images predicted as it; None without images) and
    image count, by name."""
    counts = confusion.sum(1)
    out = {}
    for i, name in enumerate(class_names):
        n = int(counts[i])
        out[name] = {"accuracy": round(100.0 * float(confusion[i, i]) / n, 3) if n else None, "images": n}
    return out


def confusion_document(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    return {"classes": list(class_names), "rows": "true class", "columns": "predicted class",
            "matrix": confusion.long().tolist()}


def draw_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: str | os.PathLike,
                   title: str = "") -> Path:
    """The confusion matrix as a picture, each row normalised by its class's images (so that a
    small class shows as clearly as a large one), with the counts written in when they fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from botnet.io import atomic_path

    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    side = min(4 + 0.45 * n, 20)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= NAMED_TICKS:
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)
