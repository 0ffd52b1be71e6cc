"""Classification as a registered task (:mod:`botnet.tasks`): a classifier rebuilt from its file,
its evaluation crop, top-k prediction, its export (logits, or a backbone's feature maps) and the
input its attention maps are drawn on."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from botnet.classification.predict import classify
from botnet.classification.transforms import eval_transform
from botnet.errors import UserError
from botnet.export_check import check_size, dynamic_size, max_diff
from botnet.models.botnet import IMAGENET_MEAN, IMAGENET_STD
from botnet.tasks import CLASSIFICATION, ExportPlan, TaskKind, register_task
from botnet.weights.rebuild import LoadedModel, build_classifier_from_file


class Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class FeatureMaps(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = list(model.feature_channels)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_features(images).values())


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ClassificationKind(TaskKind):
    name = CLASSIFICATION
    title = "classification"

    def rebuild(self, path: Path, meta: dict[str, Any], *, model: str | None, img_size: int | Sequence[int] | None,
                device: Any, overrides: dict[str, Any]) -> LoadedModel:
        net = build_classifier_from_file(path, meta, model, img_size, **overrides)
        names = list(meta.get("class_names") or [str(i) for i in range(net.num_classes)])
        if len(names) != net.num_classes:
            raise UserError(f"{path}: {len(names)} class names in the metadata but the classifier has "
                            f"{net.num_classes} outputs")
        return LoadedModel(net.to(device).eval(), self.name, names, meta,
                           img_size=_size_pair(img_size or meta.get("img_size") or net.cfg.img_size),
                           crop_pct=float(meta.get("crop_pct", 0.875)), mean=tuple(meta.get("mean", IMAGENET_MEAN)),
                           std=tuple(meta.get("std", IMAGENET_STD)), path=path)

    def input_transform(self, loaded: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return eval_transform(loaded.img_size, loaded.crop_pct, loaded.mean, loaded.std)

    def predict(self, loaded: Any, images: list[Any], transform: Callable[[torch.Tensor], torch.Tensor], *, topk: int,
                score_thresh: float, batch_size: int, device: Any, skipped: dict[str, str] | None) -> list[Any]:
        return classify(loaded.model, images, transform, loaded.class_names, topk=topk, batch_size=batch_size,
                        device=device, skipped=skipped)

    def export_plan(self, model: nn.Module, meta: dict[str, Any], *, size: Sequence[int] | None, dynamic: bool,
                    features: bool, format: str) -> ExportPlan:
        default = meta.get("img_size") or model.cfg.img_size
        if size is None and dynamic:
            default = dynamic_size(default)  # a 32 px classifier exports at 64, whatever it was trained at
        h, w = check_size(size if size is not None else default, dynamic)
        if features:
            wrapper = FeatureMaps(model)
            outputs, kind = wrapper.names, "features"
        else:
            if not model.num_classes:
                raise UserError("this model has no classifier (num_classes=0); export its features (--features)")
            wrapper, outputs, kind = Logits(model), ["logits"], self.name
        # batch 2 when dynamic: an example of batch 1 would let torch.export fix the batch at 1
        example = torch.randn(2 if dynamic else 1, 3, h, w)
        return ExportPlan(wrapper, example, list(outputs), kind, max_diff)

    def attention_input(self, loaded: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_transform(loaded)(pixels)
        return x, torch.tensor(loaded.mean)[:, None, None], torch.tensor(loaded.std)[:, None, None]


register_task(ClassificationKind())
