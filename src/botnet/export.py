"""Export for deployment: ONNX (run with onnxruntime) and ``torch.export`` (ExportedProgram, .pt2).

What can be exported:

- a classifier: input ``images`` (B, 3, H, W), normalised as in training; output ``logits``;
- a backbone (``features=True``): the same input; outputs ``c2``..``c5``, the feature maps;
- a Mask R-CNN / Faster R-CNN (ONNX only): input ``images`` (1, 3, C, C), RGB in [0, 1] on the
  fixed canvas C (letterbox first: :func:`botnet.detection.predict.letterbox`); outputs ``boxes`` (N, 4) in
  canvas pixels, ``labels`` (N,), ``scores`` (N,) and, with a mask head, ``masks`` (N, 1, C, C)
  probabilities.

With ``dynamic=True`` the batch, height and width of classifiers and backbones are dynamic axes,
named ``batch``, ``height`` and ``width`` in the ONNX file; without an ``img_size`` the export runs at
the smallest valid size not below the model's (a classifier trained at 32 px exports at 64).
Heights and widths are multiples of :data:`botnet.export_check.SIZE_MULTIPLE` from 64 to 4096:
every stride-2 layer then halves evenly, which is what lets ``torch.export`` prove the network's
shape arithmetic for the whole range (the attention itself takes any size). Detectors export at a fixed canvas: their
post-processing (NMS) has data-dependent shapes that ``torch.export`` cannot trace, so they go
through the TorchScript-based ONNX exporter, which torchvision supports for its detectors.

Every export is checked before the file appears (:mod:`botnet.export_check` says what is
compared, and within what); a failed check raises :class:`ExportCheckError` and leaves nothing
behind. The ONNX file carries the model's metadata (task, class names, preprocessing) as the JSON
metadata property ``botnet``. What is exported for a task, and how it is compared, is the task's
:meth:`~botnet.tasks.TaskKind.export_plan`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from botnet import export_formats as formats
from botnet.engine.progress import Phases
from botnet import limits
from botnet.errors import UserError, old_argument
from botnet.export_check import (  # noqa: F401 (ExportCheckError, run_onnx: part of this module's API)
    ExportCheckError,
    check_export,
    check_inputs,
    check_size,
    run_onnx,
)
from botnet.io import Outputs, atomic_path
from botnet.tasks import CLASSIFICATION, DETECTION, get_task
from botnet.weights.rebuild import load_model

FORMATS = ("onnx", "torch")
DEFAULT_OPSET = 18
#: the TorchScript-based exporter (detectors) supports opsets up to 17 for torchvision's ops
DETECTION_OPSET = 17
#: opsets each exporter writes: the dynamo exporter (classifiers, backbones) from 18 to the newest
#: opset torch knows; the TorchScript exporter (detectors) from 11 (torchvision's RoIAlign) to 17
OPSETS = {False: (18, 23), True: (11, DETECTION_OPSET)}  # keyed by "TorchScript-based exporter"
OPSET_RANGE = limits.between(min(lo for lo, _ in OPSETS.values()), max(hi for _, hi in OPSETS.values()),
                             integer=True)
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass
class ExportResult:
    path: Path
    format: str
    #: the task name, or "features" for a backbone's feature maps
    task: str
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


def _is_detector(model: nn.Module) -> bool:
    return hasattr(model, "roi_heads") and hasattr(model, "rpn")


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(WEIGHTS_SUFFIXES) or "/" in text or os.sep in text


def _preprocessing(loaded: Any) -> dict[str, Any]:
    # what a Predictor / LoadedModel knows beyond the file's metadata (a detector has no crop)
    meta = dict(loaded.metadata)
    if loaded.img_size is not None:
        meta.setdefault("img_size", list(loaded.img_size))
        meta.setdefault("mean", list(loaded.mean))
        meta.setdefault("std", list(loaded.std))
        meta.setdefault("crop_pct", loaded.crop_pct)
    meta["class_names"] = list(loaded.class_names)
    return meta


def resolve_model(source: Any, *, model: str | None = None, num_classes: int | None = None,
                  img_size: Sequence[int] | None = None) -> tuple[nn.Module, str, dict[str, Any]]:
    """``(model, task, metadata)`` for a loaded model (:class:`botnet.Predictor` or
    :class:`~botnet.weights.rebuild.LoadedModel`), a module, a weights file or a registered model name
    (random weights: for checking a deployment path, not for use)."""
    if all(hasattr(source, a) for a in ("model", "task", "metadata", "class_names")):
        return source.model, source.task, _preprocessing(source)
    if isinstance(source, nn.Module):
        return source, DETECTION if _is_detector(source) else CLASSIFICATION, {}
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
    return net, CLASSIFICATION, {"model": text, "config": net.cfg.to_dict(), "num_classes": net.num_classes,
                        "random_weights": True}


def _check_opset(opset: int | None, scripted: bool) -> None:
    lo, hi = OPSETS[scripted]
    if opset is not None and not lo <= opset <= hi:
        what = "detectors (TorchScript exporter)" if scripted else "classifiers and backbones"
        raise UserError(f"--opset {opset}: {what} export to ONNX opsets {lo} to {hi}")


def export_model(
    source: Any,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    img_size: int | Sequence[int] | None = None,
    dynamic: bool = False,
    features: bool = False,
    model: str | None = None,
    num_classes: int | None = None,
    opset: int | None = None,
    check: bool = True,
    say: Callable[[str], None] | None = None,
    size: Sequence[int] | None = None,
) -> ExportResult:
    """Export ``source`` (weights file, registered model name, module or Predictor) to ``out``.

    ``format``: "onnx" or "torch" (an ExportedProgram saved with ``torch.export.save``).
    ``img_size``: S or (H, W) of the export input (default: the model's input size or canvas;
    ``size=`` is its old name).
    ``dynamic``: batch, height and width dynamic (classifiers and backbones).
    ``features``: export the backbone's c2..c5 feature maps instead of the classifier.
    ``model`` names the architecture of a weights file without a description (and is checked
    against one with a description); ``num_classes`` sizes the classifier of a bare model name.
    ``say`` receives a line as each phase (tracing, writing, checking) begins: an export of a
    large model takes minutes.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    if size is not None:
        check_size(size, dynamic)
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
    size = old_argument("export_model", "size", size, "img_size", img_size)
    if isinstance(size, int):
        size = (size, size)
    net, task, meta = resolve_model(source, model=model, num_classes=num_classes, img_size=size)
    plan = get_task(task).export_plan(net.eval(), meta, size=size, dynamic=dynamic, features=features, format=format)
    wrapper, example, outputs, kind = plan.wrapper, plan.example, plan.outputs, plan.kind
    if format == "onnx":
        _check_opset(opset, plan.scripted)
    wrapper.eval()  # the exporters restore the mode they find, on the wrapper and all it holds
    meta_json = formats.onnx_metadata(kind, meta, outputs)
    shape: list[int | str] = list(example.shape)
    if dynamic:  # the axis names the ONNX file carries (export_formats.name_dynamic_axes)
        shape = [formats.DYNAMIC_AXES.get(i, n) for i, n in enumerate(shape)]
    result = ExportResult(out, format, kind, shape, list(outputs), random_weights=bool(meta.get("random_weights")))
    phase = Phases(say)
    what = f"{kind} {'x'.join(map(str, example.shape))}"
    with atomic_path(out) as tmp:
        phase(f"exporting {what} to {format} ({'TorchScript-based exporter' if plan.scripted else 'torch.export'})")
        if format == "torch":
            program = formats.export_program(wrapper, example, dynamic)
            # through a file object: torch.export.save wants a name ending in .pt2, the
            # temporary name of the atomic write does not
            with open(tmp, "wb") as f:
                torch.export.save(program, f)
        elif plan.scripted:
            formats.write_onnx_detector(wrapper, example, tmp, outputs, opset or DETECTION_OPSET, meta_json)
        else:
            formats.write_onnx_dynamo(wrapper, example, tmp, dynamic, outputs, opset or DEFAULT_OPSET, meta_json)
        if check:
            inputs = check_inputs(example, dynamic)
            phase(f"checking the export against PyTorch at {', '.join('x'.join(map(str, x.shape)) for x in inputs)}")
            result.checks = check_export(tmp, format, wrapper, inputs, plan.compare)
        phase(None)
    return result

