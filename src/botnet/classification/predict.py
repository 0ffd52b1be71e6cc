"""Classification prediction: the one path from raw images to ranked classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from botnet.data.images import ImageLike, read_image_or_skip
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
             device: torch.device | str = "cpu", skipped: dict[str, str] | None = None) -> list[Classification]:
    """The ``topk`` classes (softmax probabilities) of each image, in order.

    Each image is read as uint8 RGB (:func:`~botnet.data.images.read_image`) and goes through
    ``transform``, the evaluation transform of the run (so a file gives the same input here as in
    ``botnet eval cls``). With ``skipped`` (a dict), a file that cannot be read is left out of the
    results, with a warning, and recorded there; without, it is an error."""
    if topk < 1:
        raise UserError(f"topk must be at least 1, got {topk}")
    k = min(topk, len(class_names))
    results = []
    progress = Progress("prediction", len(images))
    for start in range(0, len(images), batch_size):
        pixels = [read_image_or_skip(i, skipped) for i in images[start:start + batch_size]]
        progress.update(len(pixels))
        pixels = [p for p in pixels if p is not None]
        if not pixels:
            continue
        batch = torch.stack([transform(p) for p in pixels]).to(device)
        probs = model(batch).float().softmax(dim=1)
        p, idx = probs.topk(k, dim=1)
        for row_p, row_i in zip(p.tolist(), idx.tolist()):
            results.append(Classification([class_names[i] for i in row_i], row_p, row_i))
    return results
