"""Classification prediction: the one path from raw images to ranked classes, and the files that
``botnet predict cls --out`` writes."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from botnet.data.images import ImageLike, read_image_or_skip
from botnet.engine.progress import Progress
from botnet.errors import UserError
from botnet.io import Outputs

#: what ``botnet predict cls --out FOLDER`` writes
PREDICTIONS_JSON, PREDICTIONS_CSV = "predictions.json", "predictions.csv"


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


def write_classifications(outputs: Outputs, images: Sequence[str | os.PathLike], results: Sequence[Classification],
                          skipped: dict[str, str] | None = None) -> tuple[Path, Path]:
    """The results of ``images`` (in order; the ``skipped`` ones have none) in ``outputs.folder``:
    :data:`PREDICTIONS_JSON`, a list of ``{"file", "classes": [{"rank", "class", "index",
    "probability"}]}`` with the unreadable files under ``"skipped"``, and :data:`PREDICTIONS_CSV`,
    one row per image and rank (``file, rank, class, index, probability``), for a spreadsheet."""
    skipped = skipped or {}
    read = [str(p) for p in images if str(p) not in skipped]
    rows = [{"file": path, "classes": [{"rank": r, "class": name, "index": i, "probability": round(prob, 6)}
                                       for r, (name, i, prob) in enumerate(zip(res.labels, res.indices, res.probs), 1)]}
            for path, res in zip(read, results)]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["file", "rank", "class", "index", "probability"])
    for row in rows:
        writer.writerows([row["file"], c["rank"], c["class"], c["index"], c["probability"]] for c in row["classes"])
    folder = outputs.folder
    with outputs:
        json_path = outputs.write_json(folder / PREDICTIONS_JSON, {"images": rows, "skipped": dict(skipped)})
        csv_path = outputs.write_text(folder / PREDICTIONS_CSV, table.getvalue())
    return json_path, csv_path
