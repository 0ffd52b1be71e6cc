"""Rebuilding a model from a weights file: the one place where that happens.

``load_model(path)`` reads the file's metadata, builds the architecture it describes (a classifier
from its :class:`~botnet.models.ModelConfig`, a detector from its ``detector`` description), checks
that the description agrees with the tensors in the file before anything is allocated, loads the
weights and returns a :class:`LoadedModel` with the preprocessing the model was trained with.
``botnet.load`` (prediction), the ``eval`` commands and ``export`` all go through it.

Metadata convention
-------------------
A weights file is a safetensors file whose header holds a JSON object (``botnet.weights``
writes it; :func:`botnet.weights.read_metadata` reads it). These keys are used:

``task``
    ``"cls"`` (classification) or ``"det"`` (detection). Absent: ``"cls"``.
``class_names``
    The class names in index order. Detection: the object categories only (label ``i`` of the
    detector, 1-based, is ``class_names[i - 1]``; 0 is the background). Absent: ``"0"``, ``"1"``...
``model``, ``config``, ``num_classes`` (classification)
    The registered preset, its ModelConfig as a dict (the architecture is rebuilt from this, so
    presets may change without breaking old files) and the classifier size.
``img_size`` ([H, W]), ``crop_pct``, ``mean``, ``std`` (classification)
    Evaluation preprocessing: resize the shorter side to ``max(img_size) / crop_pct``, center-crop
    ``img_size``, normalise. Defaults: the config's ``input_size``, 0.875, ImageNet mean / std.
``canvas``, ``detector``, ``cat_ids`` (detection)
    The square training canvas (at inference the longer side is resized to it), the
    :class:`~botnet.detection.config.DetModelConfig` as a dict, and the dataset's category id of
    each class (COCO output).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from botnet import limits
from botnet.errors import UserError
from botnet.reading import regular_file
from botnet.models.botnet import IMAGENET_MEAN, IMAGENET_STD

TASKS = ("cls", "det")
#: ModelConfig fields that do not change the weights or the function of a trained model:
#: position tables are resized to any input size, the rest only act during training or at init.
CONFIG_FIELDS_FREE_AT_INFERENCE = ("input_size", "drop_rate", "drop_path_rate", "zero_init_last", "description")
#: position tables: resized on load (any length), so only their width must match
_RESIZED_TABLES = ("rel_h", "rel_w", "abs_h", "abs_w")


@dataclass
class LoadedModel:
    """A model rebuilt from a file, in eval mode, with what running it on raw images needs."""

    model: nn.Module
    task: str
    class_names: list[str]
    metadata: dict[str, Any]
    #: classification preprocessing
    img_size: tuple[int, int] | None = None
    crop_pct: float = 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    #: detection: the longer side of an image is resized to this
    canvas: int | None = None
    path: Path | None = field(default=None, repr=False)


# -- checking a description against a file ------------------------------------------------------


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


#: what each metadata key may hold (botnet.limits' rules); anything else is refused by name (``task``
#: is checked against TASKS where it is read)
METADATA_LIMITS = {
    "model": _text, "num_classes": limits.between(0, limits.MAX_CLASSES, integer=True),
    "class_names": limits.each(_text), "img_size": limits.each(limits.IMAGE_SIDE, length=2),
    "crop_pct": limits.fraction(lo_open=True), "mean": limits.each(limits.between(), length=3),
    "std": limits.each(limits.above(0), length=3), "canvas": limits.CANVAS_SIDE,
    "cat_ids": limits.each(limits.between(integer=True)),
}


def check_metadata(path: Path, meta: Any) -> dict[str, Any]:
    """``meta`` if every key it holds is in range (``METADATA_LIMITS``), else a :class:`UserError`
    naming the file and the key: a crafted or damaged header is refused before anything is built."""
    if not isinstance(meta, dict):
        raise UserError(f"{path}: corrupt botnet metadata: a {type(meta).__name__}, not a mapping of keys")
    for key, rule in METADATA_LIMITS.items():
        why = rule(meta[key]) if key in meta else None
        if why:
            raise UserError(f"{path}: corrupt botnet metadata: {key}={meta[key]!r}: {why}")
    names, cat_ids = meta.get("class_names"), meta.get("cat_ids")
    if names is not None and len(names) > limits.MAX_CLASSES:
        raise UserError(f"{path}: corrupt botnet metadata: {len(names)} class names, more than {limits.MAX_CLASSES}")
    if cat_ids is not None and names is not None and len(cat_ids) != len(names):
        raise UserError(f"{path}: corrupt botnet metadata: {len(cat_ids)} cat_ids for {len(names)} class names")
    for key in ("config", "detector"):
        if key in meta and not isinstance(meta[key], dict):
            raise UserError(f"{path}: corrupt botnet metadata: {key} must be a mapping, got {meta[key]!r}")
    return meta


def config_differences(file_config: Mapping[str, Any], model_config: Mapping[str, Any]) -> list[str]:
    """``"field: file X, model Y"`` for every architecture field that differs between two config
    dicts (fields free at inference, such as ``input_size``, are ignored)."""
    diffs = []
    for key in sorted(set(file_config) | set(model_config)):
        if key in CONFIG_FIELDS_FREE_AT_INFERENCE:
            continue
        a, b = file_config.get(key), model_config.get(key)
        a = list(a) if isinstance(a, tuple) else a
        b = list(b) if isinstance(b, tuple) else b
        if a != b:
            diffs.append(f"{key}: file {a!r}, model {b!r}")
    return diffs


def header_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header, without reading (or allocating) the data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def _build_checked(path: Path, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` once on the meta device (no memory) to compare its tensor shapes with the file's,
    then for real: a description that does not fit the tensors, crafted or stale, is refused before
    a large model is allocated."""
    if path.suffix == ".safetensors":
        with torch.device("meta"):
            skeleton = build()
        shapes = header_shapes(path)
        bad = []
        for key, value in skeleton.state_dict().items():
            want = shapes.get(key)
            if want is None:
                continue
            if key.rsplit(".", 1)[-1] in _RESIZED_TABLES:
                ok = len(want) == 2 and want[1] == value.shape[1]
            else:
                ok = want == tuple(value.shape)
            if not ok:
                bad.append(f"{key}: file {want}, described model {tuple(value.shape)}")
        if bad:
            raise UserError(f"{path}: the model described in the metadata does not fit the tensors in the file:\n  "
                            + "\n  ".join(bad[:10]) + (f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else ""))
    return build()


# -- classifiers ---------------------------------------------------------------------------------


def _config_from_metadata(path, meta: Mapping[str, Any]):
    from botnet.models import ModelConfig

    try:
        return ModelConfig.from_dict(dict(meta["config"]))
    except UserError as e:
        raise UserError(f"{path}: the model config in the metadata is not usable ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: corrupt model config in the metadata ({type(e).__name__}: {e})") from None


def _num_classes(path: Path, meta: Mapping[str, Any]) -> int:
    if meta.get("num_classes") is not None:
        return int(meta["num_classes"])
    if meta.get("class_names"):
        return len(meta["class_names"])
    shape = header_shapes(path).get("fc.weight") if path.suffix == ".safetensors" else None
    if shape is None:
        from botnet.weights import load_state_dict

        weight = load_state_dict(path).get("fc.weight")
        shape = tuple(weight.shape) if weight is not None else None
    return int(shape[0]) if shape else 0


def build_classifier_from_file(path: str | os.PathLike, meta: Mapping[str, Any], model: str | None = None,
                               img_size: int | Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """A BoTNet / ResNet described by ``meta`` (or by ``model`` for files without a description),
    with the file's weights loaded. When both describe it, they must agree."""
    from botnet.models import BoTNet, get_model_config
    from botnet.weights import load_weights

    path = Path(path)
    name = model or meta.get("model") or ""
    if "config" in meta:
        cfg = _config_from_metadata(path, meta)
        if model is not None:
            diffs = config_differences(cfg.to_dict(), get_model_config(model).replace(**dict(overrides)).to_dict())
            if diffs:
                raise UserError(f"{path}: the weights were made for a different architecture than {model!r}; "
                                "config fields that differ:\n  " + "\n  ".join(diffs))
        elif overrides:
            cfg = cfg.replace(**dict(overrides))
    elif model is not None:
        cfg = get_model_config(model).replace(**dict(overrides))
    else:
        raise UserError(f"{path}: the file does not say which model it holds (no 'config' in its metadata); "
                        "name the architecture (--model NAME, or model=NAME)")
    if img_size is not None:
        cfg = cfg.replace(input_size=(img_size, img_size) if isinstance(img_size, int) else tuple(img_size))
    num_classes = _num_classes(path, meta)
    net = _build_checked(path, lambda: BoTNet(cfg, num_classes=num_classes, name=name))
    load_weights(net, path)
    return net


# -- detectors -----------------------------------------------------------------------------------


def build_detector_from_file(path: str | os.PathLike, meta: Mapping[str, Any], canvas: int | None = None,
                             score_thresh: float | None = None) -> nn.Module:
    """The Mask R-CNN / Faster R-CNN of a ``"det"`` file with its weights. ``canvas`` evaluates at
    another size than the one trained at (the attention follows)."""
    from botnet.detection.config import DetModelConfig
    from botnet.detection.maskrcnn import build_maskrcnn
    from botnet.engine.config import from_dict
    from botnet.weights import load_weights

    path = Path(path)
    if meta.get("task") != "det" or not meta.get("class_names") or "detector" not in meta:
        raise UserError(f"{path}: not detection weights (no class names / detector description); use "
                        "the model.safetensors or best.safetensors of a `botnet train det` run")
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
    net = _build_checked(path, lambda: build_maskrcnn(model_cfg.name, num_classes, canvas=size,
                                                      **model_cfg.builder_kwargs()))
    load_weights(net, path)
    return net


# -- any file ------------------------------------------------------------------------------------


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_model(weights: str | os.PathLike, model: str | None = None, *, img_size: int | Sequence[int] | None = None,
               device: str | torch.device = "cpu", **overrides: Any) -> LoadedModel:
    """Rebuild the model stored in ``weights`` (in eval mode, on ``device``).

    ``model`` names the architecture of a file without a description (a converted or foreign
    checkpoint); for a file with one it is checked against it and a difference names the field.
    ``img_size`` changes the classification input size (position tables are resized), or a
    detector's canvas; ``overrides`` are ModelConfig fields for files without a config."""
    from botnet.weights import read_metadata

    path = Path(weights)
    if not path.exists():
        raise UserError(f"{path}: no such weights file")
    regular_file(path, "weights file")  # a FIFO would block the reader
    meta = check_metadata(path, read_metadata(path)) if path.suffix == ".safetensors" else {}
    task = meta.get("task", "cls")
    if task not in TASKS:
        raise UserError(f"{path}: unknown task {task!r} in the metadata (expected one of {TASKS})")
    if task == "det":
        if img_size is not None and not isinstance(img_size, int):
            raise UserError("a detector takes one canvas size (img_size=N), not a pair")
        net = build_detector_from_file(path, meta, img_size)
        return LoadedModel(net.to(device).eval(), "det", list(meta["class_names"]), meta,
                           canvas=int(img_size or meta["canvas"]), path=path)
    net = build_classifier_from_file(path, meta, model, img_size, **overrides)
    names = list(meta.get("class_names") or [str(i) for i in range(net.num_classes)])
    if len(names) != net.num_classes:
        raise UserError(f"{path}: {len(names)} class names in the metadata but the classifier has "
                        f"{net.num_classes} outputs")
    return LoadedModel(net.to(device).eval(), "cls", names, meta,
                       img_size=_size_pair(img_size or meta.get("img_size") or net.cfg.input_size),
                       crop_pct=float(meta.get("crop_pct", 0.875)), mean=tuple(meta.get("mean", IMAGENET_MEAN)),
                       std=tuple(meta.get("std", IMAGENET_STD)), path=path)
