"""The tasks a model can be trained for and a weights file can hold: one object per task, by name.

A weights file names its task in its metadata (``task``, see :mod:`botnet.weights.files`); every
place that handles a model of either task (rebuilding it from a file, preparing an image, predicting,
wrapping it for export, finding what attention maps are drawn on) asks the task object registered
under that name instead of testing the name. The objects live with their tasks
(:mod:`botnet.classification.kind`, :mod:`botnet.detection.kind`) and register themselves when their
package is imported (``import botnet`` imports both); a third task would register a third object
and touch nothing else. This module is at the bottom of the package: it imports nothing of botnet
but its errors, so any layer may look a task up.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from botnet.errors import UserError

#: the task names: on the command line, in configs, run folders and weights files
CLASSIFICATION = "cls"
DETECTION = "det"
#: the task of a weights file whose metadata names none (a converted or foreign checkpoint)
DEFAULT = CLASSIFICATION


@dataclass
class ExportPlan:
    """What exporting a model takes: the module to trace, an example input, the output names, the
    kind recorded with the export, and how its outputs are compared with PyTorch's."""

    wrapper: Any
    example: Any
    outputs: list[str]
    kind: str
    #: ``compare(got, want, what) -> float``: raises when the export does not reproduce PyTorch
    compare: Callable[..., float]
    #: data-dependent post-processing (a detector's NMS): the TorchScript-based ONNX exporter only
    scripted: bool = False


class TaskKind(abc.ABC):
    """What the library needs to know about a task to handle a trained model of it.

    ``loaded`` below is a :class:`~botnet.weights.rebuild.LoadedModel` or a
    :class:`botnet.Predictor`: a model with its class names, metadata and preprocessing."""

    #: the registered name (:data:`CLASSIFICATION`, :data:`DETECTION`...)
    name: str = ""
    #: the task in words, for messages ("classification")
    title: str = ""

    @abc.abstractmethod
    def rebuild(self, path: Path, meta: dict[str, Any], *, model: str | None, img_size: int | Sequence[int] | None,
                device: Any, overrides: dict[str, Any]) -> Any:
        """The model a weights file holds, with its weights, in eval mode on ``device``, as a
        :class:`~botnet.weights.rebuild.LoadedModel`."""

    @abc.abstractmethod
    def input_transform(self, loaded: Any) -> Callable[[Any], Any]:
        """``pixels -> model input`` for one decoded image ((3, H, W), uint8 or float in [0, 1])."""

    @abc.abstractmethod
    def predict(self, loaded: Any, images: list[Any], transform: Callable[[Any], Any], *, topk: int,
                score_thresh: float, batch_size: int, device: Any, skipped: dict[str, str] | None) -> list[Any]:
        """One prediction per readable image, in order."""

    @abc.abstractmethod
    def export_plan(self, model: Any, meta: dict[str, Any], *, size: Sequence[int] | None, dynamic: bool,
                    features: bool, format: str) -> ExportPlan:
        """How ``model`` (in eval mode) is exported; a :class:`UserError` for what cannot be."""

    @abc.abstractmethod
    def attention_input(self, loaded: Any, pixels: Any) -> tuple[Any, Any, Any]:
        """``(x, mean, std)``: the normalised (3, h, w) input of the model's backbone for one image
        in [0, 1], and the normalisation, to show that input as a picture."""


_REGISTRY: dict[str, TaskKind] = {}


def register_task(kind: TaskKind) -> TaskKind:
    if not kind.name or kind.name in _REGISTRY:
        raise ValueError(f"task {kind.name!r} is unnamed or already registered")
    _REGISTRY[kind.name] = kind
    return kind


def task_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_task(name: str, where: str | Path | None = None) -> TaskKind:
    """The task registered as ``name``; a :class:`UserError` (naming ``where`` the name was read)
    for any other."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        place = f"{where}: " if where is not None else ""
        raise UserError(f"{place}unknown task {name!r}" + (" in the metadata" if where is not None else "")
                        + f" (expected one of {task_names()})") from None


def task_title(name: str) -> str:
    """The task in words, or the name as written when no task has it (an old or foreign file)."""
    kind = _REGISTRY.get(name)
    return kind.title if kind is not None else repr(name)
