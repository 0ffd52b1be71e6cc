"""Export for deployment: ONNX (run with onnxruntime) and ``torch.export`` (ExportedProgram, .pt2).

What can be exported:

- a classifier: input ``images`` (B, 3, H, W), normalised as in training; output ``logits``;
- a backbone (``features=True``): the same input; outputs ``c2``..``c5``, the feature maps;
- a Mask R-CNN / Faster R-CNN (ONNX only): input ``images`` (1, 3, C, C), RGB in [0, 1] on the
  fixed canvas C (letterbox first: :func:`botnet.detection.predict.letterbox`); outputs ``boxes`` (N, 4) in
  canvas pixels, ``labels`` (N,), ``scores`` (N,) and, with a mask head, ``masks`` (N, 1, C, C)
  probabilities.

With ``dynamic=True`` the batch, height and width of classifiers and backbones are dynamic axes.
Heights and widths are multiples of :data:`SIZE_MULTIPLE` from 64 to 4096: every stride-2 layer
then halves evenly, which is what lets ``torch.export`` prove the network's shape arithmetic for
the whole range (the attention itself takes any size). Detectors export at a fixed canvas: their
post-processing (NMS) has data-dependent shapes that ``torch.export`` cannot trace, so they go
through the TorchScript-based ONNX exporter, which torchvision supports for its detectors.

Every export is checked before the file appears (:mod:`botnet.export_check` says what is
compared, and within what); a failed check raises :class:`ExportCheckError` and leaves nothing
behind. The ONNX file carries the model's
metadata (task, class names, preprocessing) as the JSON metadata property ``botnet``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from botnet import export_formats as formats
from botnet import limits
from botnet.errors import UserError
from botnet.export_check import (  # noqa: F401 (ExportCheckError, run_onnx: part of this module's API)
    SIZE_MULTIPLE,
    ExportCheckError,
    check_export,
    check_inputs,
    run_onnx,
    synthetic_image,
)
from botnet.export_formats import MAX_DYNAMIC_SIZE, MIN_DYNAMIC_SIZE
from botnet.io import Outputs, atomic_path

FORMATS = ("onnx", "torch")
DEFAULT_OPSET = 18
#: the TorchScript-based exporter (detectors) supports opsets up to 17 for torchvision's ops
DETECTION_OPSET = 17
#: opsets each exporter writes: the dynamo exporter (classifiers, backbones) from 18 to the newest
#: opset torch knows; the TorchScript exporter (detectors) from 11 (torchvision's RoIAlign) to 17
OPSETS = {"cls": (18, 23), "det": (11, DETECTION_OPSET)}
OPSET_RANGE = limits.between(min(lo for lo, _ in OPSETS.values()), max(hi for _, hi in OPSETS.values()),
                             integer=True)
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass
class ExportResult:
    path: Path
    format: str
    task: str  # "cls", "features" or "det"
    input_shape: list[int | str]
    outputs: list[str]
    #: (input shape, largest absolute difference to PyTorch) for each checked input
    checks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)
    #: exported from a bare model name: the weights are random
    random_weights: bool = False

    def summary(self) -> str:
        text = (f"wrote {self.path} ({self.format}, {self.task}): input images {self.input_shape}, "
                f"outputs {', '.join(self.outputs)}")
        if self.checks:
            done = "; ".join(f"{'x'.join(map(str, s))} max |diff| {d:.2e}" for s, d in self.checks)
            text += f"\nchecked against PyTorch: {done}"
        if self.random_weights:
            text += "\nnote: exported from a model name, so the weights are random (pass a weights file to deploy)"
        return text


# -- what to export ------------------------------------------------------------------------------


class _Logits(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class _Features(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = list(model.feature_channels)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_features(images).values())


class _Detector(nn.Module):
    """One canvas-sized image in, flat tensors out (torchvision detectors take and give lists)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.masks = getattr(model.roi_heads, "has_mask", lambda: False)()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([images[0]])[0]
        keys = ("boxes", "labels", "scores", "masks") if self.masks else ("boxes", "labels", "scores")
        return tuple(out[k] for k in keys)


def _is_detector(model: nn.Module) -> bool:
    return hasattr(model, "roi_heads") and hasattr(model, "rpn")


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(WEIGHTS_SUFFIXES) or "/" in text or os.sep in text


def _preprocessing(loaded: Any) -> dict[str, Any]:
    # what a Predictor / LoadedModel knows beyond the file's metadata
    meta = dict(loaded.metadata)
    if loaded.task == "cls":
        meta.setdefault("img_size", list(loaded.img_size))
        meta.setdefault("mean", list(loaded.mean))
        meta.setdefault("std", list(loaded.std))
        meta.setdefault("crop_pct", loaded.crop_pct)
    meta["class_names"] = list(loaded.class_names)
    return meta


def resolve_model(source: Any, *, model: str | None = None, num_classes: int | None = None,
                  img_size: Sequence[int] | None = None) -> tuple[nn.Module, str, dict[str, Any]]:
    """``(model, task, metadata)`` for a loaded model (:class:`botnet.Predictor` or
    :class:`~botnet.loading.LoadedModel`), a module, a weights file or a registered model name
    (random weights: for checking a deployment path, not for use)."""
    from botnet.loading import load_model

    if all(hasattr(source, a) for a in ("model", "task", "metadata", "class_names")):
        return source.model, source.task, _preprocessing(source)
    if isinstance(source, nn.Module):
        return source, "det" if _is_detector(source) else "cls", {}
    text = str(source)
    path = Path(text)
    if path.is_file():
        return resolve_model(load_model(path, model=model))
    if path.exists():
        raise UserError(f"{path}: is a folder, not a weights file")
    if _looks_like_path(text):
        raise UserError(f"{path}: no such weights file")
    from botnet.models import create_model, get_model_config, list_models

    try:
        get_model_config(text)
    except UserError:
        raise UserError(f"{text!r} is neither a weights file nor a registered model; "
                        f"known models: {', '.join(list_models())}") from None
    net = create_model(text, num_classes=1000 if num_classes is None else num_classes,
                       img_size=tuple(img_size) if img_size else None)
    return net, "cls", {"model": text, "config": net.cfg.to_dict(), "num_classes": net.num_classes,
                        "random_weights": True}


def _check_size(size: Sequence[int], dynamic: bool) -> tuple[int, int]:
    if len(size) != 2 or any(limits.IMAGE_SIDE(s) for s in size):
        raise UserError(f"--size takes two numbers H W from 1 to {limits.MAX_IMAGE_SIDE}, got {list(size)}")
    h, w = int(size[0]), int(size[1])
    if dynamic and not all(s % SIZE_MULTIPLE == 0 and MIN_DYNAMIC_SIZE <= s <= MAX_DYNAMIC_SIZE for s in (h, w)):
        raise UserError(f"with --dynamic the export size must be a multiple of {SIZE_MULTIPLE} between "
                        f"{MIN_DYNAMIC_SIZE} and {MAX_DYNAMIC_SIZE}, got {h}x{w}")
    return h, w


def _check_opset(opset: int | None, kind: str) -> None:
    lo, hi = OPSETS[kind]
    if opset is not None and not lo <= opset <= hi:
        what = "detectors (TorchScript exporter)" if kind == "det" else "classifiers and backbones"
        raise UserError(f"--opset {opset}: {what} export to ONNX opsets {lo} to {hi}")


def export_model(
    source: Any,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    size: Sequence[int] | None = None,
    dynamic: bool = False,
    features: bool = False,
    model: str | None = None,
    num_classes: int | None = None,
    opset: int | None = None,
    check: bool = True,
) -> ExportResult:
    """Export ``source`` (weights file, registered model name, module or Predictor) to ``out``.

    ``format``: "onnx" or "torch" (an ExportedProgram saved with ``torch.export.save``).
    ``size``: (H, W) of the export input (default: the model's input size or canvas).
    ``dynamic``: batch, height and width dynamic (classifiers and backbones).
    ``features``: export the backbone's c2..c5 feature maps instead of the classifier.
    ``model`` names the architecture of a weights file without a description (and is checked
    against one with a description); ``num_classes`` sizes the classifier of a bare model name.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if size is not None:
        _check_size(size, dynamic)
    if num_classes is not None:
        limits.check("--num-classes", num_classes, limits.NUM_CLASSES)
    if opset is not None:
        limits.check("--opset", opset, OPSET_RANGE)
    if format == "onnx":
        formats.require_onnx()
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give the file to write")
    Outputs([source] if isinstance(source, (str, os.PathLike)) else []).claim(out)  # never over the weights read
    net, task, meta = resolve_model(source, model=model, num_classes=num_classes, img_size=size)
    net = net.eval()
    if task == "det" and features:
        net, task = net.backbone.body, "cls"
    if task == "det":
        if format != "onnx":
            raise UserError("detectors export to ONNX only: torch.export cannot trace their data-dependent "
                            "post-processing (NMS)")
        if dynamic:
            raise UserError("detectors export at a fixed canvas; --dynamic is for classifiers and backbones")
        canvas = int(meta.get("canvas") or net.transform.max_size)
        if size is not None and tuple(int(s) for s in size) != (canvas, canvas):
            raise UserError(f"this detector works on a {canvas}x{canvas} canvas; --size must be {canvas} {canvas}")
        _check_opset(opset, "det")
        wrapper, h, w = _Detector(net), canvas, canvas
        outputs = ["boxes", "labels", "scores"] + (["masks"] if wrapper.masks else [])
        example = synthetic_image(canvas)[None]
        kind = "det"
    else:
        default = meta.get("img_size") or net.cfg.input_size
        h, w = _check_size(size if size is not None else default, dynamic)
        _check_opset(opset, "cls")
        if features:
            wrapper = _Features(net)
            outputs, kind = wrapper.names, "features"
        else:
            if not net.num_classes:
                raise UserError("this model has no classifier (num_classes=0); export its features (--features)")
            wrapper, outputs, kind = _Logits(net), ["logits"], "cls"
        # batch 2 when dynamic: an example of batch 1 would let torch.export fix the batch at 1
        example = torch.randn(2 if dynamic else 1, 3, h, w)
    wrapper.eval()  # the exporters restore the mode they find, on the wrapper and all it holds
    meta_json = formats.onnx_metadata(kind, meta, outputs)
    shape: list[int | str] = ["batch", 3, "height", "width"] if dynamic else list(example.shape)
    result = ExportResult(out, format, kind, shape, list(outputs), random_weights=bool(meta.get("random_weights")))
    with atomic_path(out) as tmp:
        if format == "torch":
            program = formats.export_program(wrapper, example, dynamic)
            # through a file object: torch.export.save wants a name ending in .pt2, the
            # temporary name of the atomic write does not
            with open(tmp, "wb") as f:
                torch.export.save(program, f)
        elif kind == "det":
            formats.write_onnx_detector(wrapper, example, tmp, outputs, opset or DETECTION_OPSET, meta_json)
        else:
            formats.write_onnx_dynamo(wrapper, example, tmp, dynamic, outputs, opset or DEFAULT_OPSET, meta_json)
        if check:
            result.checks = check_export(tmp, format, wrapper, check_inputs(example, dynamic), kind)
    return result


