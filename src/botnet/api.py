"""Inference: ``botnet.load(weights)`` rebuilds a model from a weights file and returns a
:class:`Predictor` that runs it on PIL images, image paths or tensors with the preprocessing the
model was trained with.

Metadata convention
-------------------
A weights file is a safetensors file whose header holds a JSON object (``botnet.weights``
writes it; :func:`botnet.weights.read_metadata` reads it). ``load`` uses these keys:

``task``
    ``"cls"`` (classification) or ``"det"`` (detection). Absent: ``"cls"``.
``class_names``
    The class names in index order. Detection: the object categories only (label ``i`` of the
    detector, 1-based, is ``class_names[i - 1]``; 0 is the background). Absent: ``"0"``, ``"1"``...

Classification files (written by the classification task, and by ``botnet convert``):

``model``, ``config``, ``num_classes``
    The registered preset, its :class:`~botnet.models.ModelConfig` as a dict (the architecture is
    rebuilt from this, so presets may change without breaking old files) and the classifier size.
``img_size`` ([H, W]), ``crop_pct``, ``mean``, ``std``
    Evaluation preprocessing: resize the shorter side to ``max(img_size) / crop_pct``, center-crop
    ``img_size``, normalise. Defaults: the config's ``input_size``, 0.875, ImageNet mean / std.

Detection files (written by the detection task, ``botnet train det``):

``canvas``
    The square training canvas; at inference torchvision's transform resizes an image's longer
    side to it (as ``botnet eval det`` does).
``detector``
    The :class:`~botnet.detection.config.DetModelConfig` as a dict: ``name`` (the registered
    backbone), ``masks``, ``norm``, ``options`` (backbone config overrides) and the head sizes;
    the detector is rebuilt from it by :func:`botnet.detection.api.load_detector`.
``cat_ids``
    The dataset's category id of each class (COCO output), optional.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from botnet.errors import UserError

TASKS = ("cls", "det")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ModelConfig fields that do not change the weights or the function of a trained model:
#: position tables are resized to any input size, the rest only act during training or at init.
CONFIG_FIELDS_FREE_AT_INFERENCE = ("input_size", "drop_rate", "drop_path_rate", "zero_init_last", "description")


# -- rebuilding a model from a file --------------------------------------------------------------


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


def check_config(path: str | os.PathLike, file_config: Mapping[str, Any], model_name: str,
                 model_config: Mapping[str, Any]) -> None:
    """Raise a :class:`UserError` naming each field where the file's architecture differs."""
    diffs = config_differences(file_config, model_config)
    if diffs:
        raise UserError(f"{path}: the weights were made for a different architecture than {model_name!r}; "
                        "config fields that differ:\n  " + "\n  ".join(diffs))


def _config_from_metadata(path, meta: Mapping[str, Any], key: str = "config"):
    from botnet.models import ModelConfig

    raw = meta[key]
    try:
        return ModelConfig.from_dict(dict(raw))
    except UserError as e:
        raise UserError(f"{path}: the model config in the metadata is not usable ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: corrupt model config in the metadata ({type(e).__name__}: {e})") from None


def _num_classes_of_state(path) -> int:
    from botnet.weights import load_state_dict

    weight = load_state_dict(path).get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 0


def build_classifier_from_file(path: str | os.PathLike, meta: Mapping[str, Any], model: str | None = None,
                               img_size: int | Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """A BoTNet / ResNet described by ``meta`` (or by ``model`` for files without a description),
    with the file's weights loaded. When both describe it, they must agree."""
    from botnet.models import BoTNet, get_model_config
    from botnet.weights import load_weights

    name = model or meta.get("model") or ""
    if "config" in meta:
        cfg = _config_from_metadata(path, meta)
        if model is not None:
            expected = get_model_config(model).replace(**dict(overrides))
            check_config(path, cfg.to_dict(), model, expected.to_dict())
        elif overrides:
            cfg = cfg.replace(**dict(overrides))
    elif model is not None:
        cfg = get_model_config(model).replace(**dict(overrides))
    else:
        raise UserError(f"{path}: the file does not say which model it holds (no 'config' in its metadata); "
                        "name the architecture (--model NAME, or model=NAME)")
    if img_size is not None:
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        cfg = cfg.replace(input_size=size)
    num_classes = meta.get("num_classes")
    if num_classes is None:
        num_classes = len(meta["class_names"]) if meta.get("class_names") else _num_classes_of_state(path)
    net = BoTNet(cfg, num_classes=int(num_classes), name=name)
    load_weights(net, path)
    return net


def build_detector_from_file(path: str | os.PathLike, canvas: int | None = None) -> tuple[nn.Module, dict]:
    """The Mask R-CNN / Faster R-CNN of a ``"det"`` file with its weights, and the metadata."""
    from botnet.detection.api import load_detector

    try:
        return load_detector(path, canvas=canvas)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"{path}: the detector description in the metadata is not usable "
                        f"({type(e).__name__}: {e})") from None


def load(weights: str | os.PathLike, model: str | None = None, *, img_size: int | Sequence[int] | None = None,
         device: str | torch.device = "cpu", **overrides: Any) -> "Predictor":
    """Rebuild the model stored in ``weights`` and return a :class:`Predictor` for it.

    ``model`` names the architecture of a file without a description (a converted or foreign
    checkpoint); for a file with one it is checked against it and a difference names the field.
    ``img_size`` changes the classification input size (position tables are resized), or a
    detector's canvas;
    ``overrides`` are :class:`~botnet.models.ModelConfig` fields for files without a config.
    """
    from botnet.weights import read_metadata

    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    meta = read_metadata(path) if path.suffix == ".safetensors" else {}
    task = meta.get("task", "cls")
    if task not in TASKS:
        raise UserError(f"{path}: unknown task {task!r} in the metadata (expected one of {TASKS})")
    if task == "det":
        if isinstance(img_size, Sequence):
            raise UserError("a detector takes one canvas size (img_size=N), not a pair")
        net, meta = build_detector_from_file(path, img_size)
        canvas = int(img_size or meta["canvas"])
        return Predictor(net, "det", meta["class_names"], meta, canvas=canvas, device=device)
    net = build_classifier_from_file(path, meta, model, img_size, **overrides)
    names = list(meta.get("class_names") or [str(i) for i in range(net.num_classes)])
    if len(names) != net.num_classes:
        raise UserError(f"{path}: {len(names)} class names in the metadata but the classifier has "
                        f"{net.num_classes} outputs")
    size = img_size or meta.get("img_size") or net.cfg.input_size
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return Predictor(net, "cls", names, meta, img_size=size, crop_pct=float(meta.get("crop_pct", 0.875)),
                     mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
                     device=device)


# -- predictions ---------------------------------------------------------------------------------


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


@dataclass
class Detections:
    """Objects found in one image, in its own pixel coordinates, best score first.

    ``boxes`` (N, 4) x1, y1, x2, y2; ``scores`` (N,); ``labels`` class names; ``label_ids`` (N,)
    detector labels (1-based, 0 is the background); ``masks`` (N, H, W) bool, or None for a
    detector without a mask head."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    label_ids: torch.Tensor
    masks: torch.Tensor | None


ImageLike = Any  # PIL.Image.Image | str | os.PathLike | torch.Tensor


def read_image(item: ImageLike) -> torch.Tensor:
    """One image as a (3, H, W) float tensor in [0, 1].

    Paths and PIL images are decoded as RGB; tensors are (C, H, W) with C = 1 or 3, uint8 (0..255)
    or floating point in [0, 1] (not normalised)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                item = im.convert("RGB")  # convert() decodes the whole file: truncation shows here
        except FileNotFoundError:
            raise UserError(f"{item}: no such image") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{item}: unreadable image ({type(e).__name__}: {e})") from None
    if isinstance(item, Image.Image):
        return TF.to_dtype(TF.pil_to_tensor(item.convert("RGB")), torch.float32, scale=True)
    if isinstance(item, torch.Tensor):
        if item.dim() != 3 or item.shape[0] not in (1, 3):
            raise UserError(f"an image tensor must be (C, H, W) with 1 or 3 channels, got shape {tuple(item.shape)}")
        image = TF.to_dtype(item.detach().cpu(), torch.float32, scale=True)
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image
    raise UserError(f"cannot read an image from a {type(item).__name__} (use a path, a PIL image or a tensor)")


def _as_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    if isinstance(images, torch.Tensor):
        return list(images.unbind(0)) if images.dim() == 4 else [images]
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Iterable):
        return [images]
    return list(images)


def letterbox(image: torch.Tensor, canvas: int) -> tuple[torch.Tensor, float]:
    """Resize a (3, H, W) image so that its longer side is ``canvas``, pad the bottom / right with
    zeros to ``canvas`` x ``canvas`` (the training crop's padding), and return it with the scale
    (canvas pixels per image pixel). This is the input of a fixed-canvas detector export:
    divide its boxes by the scale to return to the image."""
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    scale = canvas / max(h, w)
    size = [max(1, min(canvas, round(h * scale))), max(1, min(canvas, round(w * scale)))]
    resized = TF.resize(image, size, antialias=True) if size != [h, w] else image
    return F.pad(resized, (0, canvas - size[1], 0, canvas - size[0])), scale


class Predictor:
    """A model with what it needs to run on raw images: its task, class names, metadata and
    preprocessing. ``predict`` returns one :class:`Classification` or :class:`Detections` per
    image, in order."""

    def __init__(self, model: nn.Module, task: str, class_names: Sequence[str], metadata: Mapping[str, Any], *,
                 img_size: tuple[int, int] | None = None, crop_pct: float = 0.875,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 canvas: int | None = None, device: str | torch.device = "cpu"):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.task = task
        self.class_names = list(class_names)
        self.metadata = dict(metadata)
        self.img_size, self.crop_pct, self.mean, self.std = img_size, crop_pct, tuple(mean), tuple(std)
        self.canvas = canvas
        self._transform = None
        if task == "cls":
            from botnet.classification.transforms import eval_transform

            self._transform = eval_transform(img_size, crop_pct, self.mean, self.std)

    @property
    def config(self):
        """The model's :class:`~botnet.models.ModelConfig` (the backbone's, for a detector)."""
        return getattr(self.model, "cfg", None) or getattr(getattr(self.model.backbone, "body", None), "cfg", None)

    def __repr__(self) -> str:
        name = self.metadata.get("model") or self.metadata.get("backbone") or type(self.model).__name__
        return f"Predictor(task={self.task!r}, model={name!r}, classes={len(self.class_names)})"

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """The model input for one image: (3, H, W), resized, cropped and normalised for a
        classifier; RGB in [0, 1] for a detector, which resizes and normalises itself."""
        x = read_image(image)
        return self._transform(x) if self.task == "cls" else x

    @torch.no_grad()
    def predict(self, images: ImageLike | Iterable[ImageLike], *, topk: int = 5, score_thresh: float = 0.5,
                batch_size: int = 8) -> list[Classification] | list[Detections]:
        """Run the model on ``images`` (one image, a list, or a (B, C, H, W) tensor).

        Classification: the ``topk`` classes with softmax probabilities. Detection: boxes, labels,
        scores and masks (thresholded at 0.5) of objects scoring at least ``score_thresh``."""
        items = _as_list(images)
        if self.task == "cls":
            return self._classify(items, topk, batch_size)
        return [self._detect(item, score_thresh) for item in items]

    __call__ = predict

    def _classify(self, items: list, topk: int, batch_size: int) -> list[Classification]:
        k = max(1, min(topk, len(self.class_names)))
        results = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self.preprocess(i) for i in items[start:start + batch_size]]).to(self.device)
            probs = self.model(batch).float().softmax(dim=1)
            p, idx = probs.topk(k, dim=1)
            for row_p, row_i in zip(p.tolist(), idx.tolist()):
                results.append(Classification([self.class_names[i] for i in row_i], row_p, row_i))
        return results

    def _detect(self, item: ImageLike, score_thresh: float) -> Detections:
        # the evaluation path of the detection task: torchvision's transform resizes the longer
        # side to the canvas, normalises, and maps boxes and masks back to the image
        image = read_image(item)
        h, w = image.shape[-2:]
        out = self.model([image.to(self.device)])[0]
        keep = out["scores"] >= score_thresh
        ids = out["labels"][keep].cpu()
        masks = None
        if "masks" in out:
            masks = out["masks"][keep].cpu()[:, 0] > 0.5 if keep.any() else torch.zeros(0, h, w, dtype=torch.bool)
        names = [self.class_names[i - 1] if 0 < i <= len(self.class_names) else str(i) for i in ids.tolist()]
        return Detections(out["boxes"][keep].float().cpu(), out["scores"][keep].float().cpu(), names, ids, masks)
