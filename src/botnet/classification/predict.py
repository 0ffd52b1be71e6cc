"""Classification prediction: the one path from raw images to ranked classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from botnet.data.images import ImageLike, read_image
from botnet.engine.progress import Progress
from botnet.errors import UserError


@dataclass
class Classification:
    """The ``topk`` classes of one image, best first."""

    labels: list[str]
    probs: list[float]
    indices: list[int]

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return self.probs[0]


@torch.no_grad()
def classify(model: nn.Module, images: Sequence[ImageLike], transform: Callable[[torch.Tensor], torch.Tensor],
             class_names: Sequence[str], *, topk: int = 5, batch_size: int = 8,
             device: torch.device | str = "cpu") -> list[Classification]:
    """The ``topk`` classes (softmax probabilities) of each image, in order.

    Each image is read as uint8 RGB (:func:`~botnet.data.images.read_image`) and goes through
    ``transform``, the evaluation transform of the run (so a file gives the same input here as in
    ``botnet eval cls``)."""
    if topk < 1:
        raise UserError(f"topk must be at least 1, got {topk}")
    k = min(topk, len(class_names))
    results = []
    progress = Progress("prediction", len(images))
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(read_image(i)) for i in images[start:start + batch_size]]).to(device)
        probs = model(batch).float().softmax(dim=1)
        p, idx = probs.topk(k, dim=1)
        for row_p, row_i in zip(p.tolist(), idx.tolist()):
            results.append(Classification([class_names[i] for i in row_i], row_p, row_i))
        progress.update(len(batch))
    return results
