"""Detection as a registered task (:mod:`botnet.tasks`): a Mask R-CNN / Faster R-CNN rebuilt from
its file, prediction on whole images, its ONNX export at the fixed canvas and the input its
backbone's attention maps are drawn on."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from botnet.data.images import read_image_or_skip
from botnet.detection.config import DetModelConfig
from botnet.detection.predict import detect
from botnet.engine.config import from_dict
from botnet.errors import UserError
from botnet.export_check import check_detections, synthetic_image
from botnet.tasks import CLASSIFICATION, DETECTION, ExportPlan, TaskKind, get_task, register_task
from botnet.weights.files import load_weights
from botnet.weights.rebuild import LoadedModel, build_checked


def build_detector_from_file(path: str | Path, meta: Mapping[str, Any], canvas: int | None = None,
                             score_thresh: float | None = None) -> nn.Module:
    """The detector of a detection weights file with its weights. ``canvas`` evaluates at another
    size than the one trained at (the attention follows)."""
    from botnet.detection.maskrcnn import build_maskrcnn

    path = Path(path)
    if meta.get("task") != DETECTION or not meta.get("class_names") or "detector" not in meta:
        raise UserError(f"{path}: not detection weights (no class names / detector description); use "
                        f"the model.safetensors or best.safetensors of a `botnet train {DETECTION}` run")
    try:
        model_cfg = dataclasses.replace(from_dict(DetModelConfig, meta["detector"], "detector"), backbone_weights=None)
        if score_thresh is not None:
            model_cfg = dataclasses.replace(model_cfg, score_thresh=score_thresh)
        size = int(canvas or meta["canvas"])
        num_classes = len(meta["class_names"])
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: the detector description in the metadata is not usable "
                        f"({type(e).__name__}: {e})") from None
    net = build_checked(path, lambda: build_maskrcnn(model_cfg, num_classes, canvas=size))
    load_weights(net, path)
    return net


class DetectorOutputs(nn.Module):
    """One canvas-sized image in, flat tensors out (torchvision detectors take and give lists)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.masks = getattr(model.roi_heads, "has_mask", lambda: False)()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([images[0]])[0]
        keys = ("boxes", "labels", "scores", "masks") if self.masks else ("boxes", "labels", "scores")
        return tuple(out[k] for k in keys)


def _to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    # the detector resizes and normalises itself: it takes RGB in [0, 1]
    return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels


class DetectionKind(TaskKind):
    name = DETECTION
    title = "detection"

    def rebuild(self, path: Path, meta: dict[str, Any], *, model: str | None, img_size: int | Sequence[int] | None,
                device: Any, overrides: dict[str, Any]) -> LoadedModel:
        if img_size is not None and not isinstance(img_size, int):
            raise UserError("a detector takes one canvas size (img_size=N), not a pair")
        net = build_detector_from_file(path, meta, img_size)
        return LoadedModel(net.to(device).eval(), self.name, list(meta["class_names"]), meta,
                           canvas=int(img_size or meta["canvas"]), path=path)

    def input_transform(self, loaded: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return _to_unit_range

    def predict(self, loaded: Any, images: list[Any], transform: Callable[[torch.Tensor], torch.Tensor], *, topk: int,
                score_thresh: float, batch_size: int, device: Any, skipped: dict[str, str] | None) -> list[Any]:
        pixels = (read_image_or_skip(item, skipped) for item in images)
        return [detect(loaded.model, p, loaded.class_names, score_thresh=score_thresh, device=device)
                for p in pixels if p is not None]

    def export_plan(self, model: nn.Module, meta: dict[str, Any], *, size: Sequence[int] | None, dynamic: bool,
                    features: bool, format: str) -> ExportPlan:
        if features:  # the backbone: a classifier's body, exported as one
            return get_task(CLASSIFICATION).export_plan(model.backbone.body, meta, size=size, dynamic=dynamic,
                                                        features=True, format=format)
        if format != "onnx":
            raise UserError("detectors export to ONNX only: torch.export cannot trace their data-dependent "
                            "post-processing (NMS)")
        if dynamic:
            raise UserError("detectors export at a fixed canvas; --dynamic is for classifiers and backbones")
        canvas = int(meta.get("canvas") or model.transform.max_size)
        if size is not None and tuple(int(s) for s in size) != (canvas, canvas):
            raise UserError(f"this detector works on a {canvas}x{canvas} canvas; --img-size must be {canvas}")
        wrapper = DetectorOutputs(model)
        outputs = ["boxes", "labels", "scores"] + (["masks"] if wrapper.masks else [])
        return ExportPlan(wrapper, synthetic_image(canvas)[None], outputs, self.name, check_detections, scripted=True)

    def attention_input(self, loaded: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the image with its longer side resized to the canvas, normalised, as the detector's transform does
        from torchvision.transforms.v2 import functional as TF

        h, w = pixels.shape[-2:]
        scale = loaded.canvas / max(h, w)
        pixels = TF.resize(pixels, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
        transform = loaded.model.transform
        mean = torch.tensor(transform.image_mean)[:, None, None]
        std = torch.tensor(transform.image_std)[:, None, None]
        return (pixels - mean) / std, mean, std


register_task(DetectionKind())
