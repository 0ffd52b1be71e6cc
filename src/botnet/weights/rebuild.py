"""Rebuilding a model from a weights file: the one place where that happens.

``load_model(path)`` reads the file's metadata (the convention: below) and hands the file to the task it names (:mod:`botnet.tasks`), which builds the architecture the
metadata describes, checks it against the tensors in the file before anything is allocated
(:func:`build_checked`), loads the weights and returns a :class:`LoadedModel` with the
preprocessing the model was trained with. ``botnet.load`` (prediction), the ``eval`` commands and
``export`` all go through it. A classifier is rebuilt here (:func:`build_classifier_from_file`):
it is a model of :mod:`botnet.models` and needs no task code.

Metadata convention
-------------------
A weights file is a safetensors file whose header holds a JSON object under the key ``botnet``
(:func:`botnet.weights.files.save_weights` writes it; :func:`botnet.weights.files.read_metadata`
reads it). These keys are used:

``task``
    The registered task name (:mod:`botnet.tasks`); absent: :data:`botnet.tasks.DEFAULT`.
``class_names``
    The class names in index order. Detection: the object categories only (label ``i`` of the
    detector, 1-based, is ``class_names[i - 1]``; 0 is the background). Absent: ``"0"``, ``"1"``...
``model``, ``config``, ``num_classes`` (classification)
    The registered preset, its ModelConfig as a dict (the architecture is rebuilt from this, so
    presets may change without breaking old files) and the classifier size.
``img_size`` ([H, W]), ``crop_pct``, ``mean``, ``std`` (classification)
    Evaluation preprocessing: resize the shorter side to ``max(img_size) / crop_pct``, center-crop
    ``img_size``, normalise. Defaults: the config's ``img_size``, 0.875, ImageNet mean / std.
``canvas``, ``detector``, ``cat_ids`` (detection)
    The square training canvas (at inference the longer side is resized to it), the
    :class:`~botnet.detection.config.DetModelConfig` as a dict, and the dataset's category id of
    each class (COCO output).
``eval_amp``
    The precision the training run evaluated the weights in; ``botnet eval --amp auto`` repeats it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from botnet import limits
from botnet.errors import UserError
from botnet.models import BoTNet, ModelConfig, get_model_config
from botnet.reading import regular_file
from botnet.models.botnet import IMAGENET_MEAN, IMAGENET_STD
from botnet.tasks import DEFAULT, get_task
from botnet.weights.files import load_state_dict, load_weights, read_metadata
from botnet.weights.fit import differences

#: ModelConfig fields that do not change the weights or the function of a trained model:
#: position tables are resized to any input size, the rest only act during training or at init.
# input_size: img_size in files written by earlier versions
CONFIG_FIELDS_FREE_AT_INFERENCE = ("img_size", "input_size", "drop_rate", "drop_path_rate", "zero_init_last",
                                   "description")
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
#: is checked by the task registry where it is read)
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
    dicts (fields free at inference, such as ``img_size``, are ignored)."""
    return differences(file_config, model_config, ("file", "model"), CONFIG_FIELDS_FREE_AT_INFERENCE)


def header_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header, without reading (or allocating) the data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def build_checked(path: Path, build: Callable[[], nn.Module]) -> nn.Module:
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


def _config_from_metadata(path, meta: Mapping[str, Any]) -> ModelConfig:
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
        weight = load_state_dict(path).get("fc.weight")
        shape = tuple(weight.shape) if weight is not None else None
    return int(shape[0]) if shape else 0


def build_classifier_from_file(path: str | os.PathLike, meta: Mapping[str, Any], model: str | None = None,
                               img_size: int | Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """A BoTNet / ResNet described by ``meta`` (or by ``model`` for files without a description),
    with the file's weights loaded. When both describe it, they must agree."""
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
        cfg = cfg.replace(img_size=(img_size, img_size) if isinstance(img_size, int) else tuple(img_size))
    num_classes = _num_classes(path, meta)
    net = build_checked(path, lambda: BoTNet(cfg, num_classes=num_classes, name=name))
    load_weights(net, path)
    return net


# -- any file ------------------------------------------------------------------------------------


def load_model(weights: str | os.PathLike, model: str | None = None, *, img_size: int | Sequence[int] | None = None,
               device: str | torch.device = "cpu", **overrides: Any) -> LoadedModel:
    """Rebuild the model stored in ``weights`` (in eval mode, on ``device``).

    ``model`` names the architecture of a file without a description (a converted or foreign
    checkpoint); for a file with one it is checked against it and a difference names the field.
    ``img_size`` changes the classification input size (position tables are resized), or a
    detector's canvas; ``overrides`` are ModelConfig fields for files without a config."""
    path = Path(weights)
    if not path.exists():
        raise UserError(f"{path}: no such weights file")
    regular_file(path, "weights file")  # a FIFO would block the reader
    meta = check_metadata(path, read_metadata(path)) if path.suffix == ".safetensors" else {}
    kind = get_task(meta.get("task", DEFAULT), where=path)
    return kind.rebuild(path, meta, model=model, img_size=img_size, device=device, overrides=overrides)
