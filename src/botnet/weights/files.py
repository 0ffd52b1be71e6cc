"""Weights files: safetensors with a JSON metadata header, position-table resizing on load, and the
report of what loading other weights into a model did (:class:`LoadReport`).

Loading never executes code from a file: safetensors, or ``torch.load(weights_only=True)`` for
``.pth`` / ``.pt`` checkpoints of other libraries. The metadata convention:
:mod:`botnet.weights.rebuild`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from botnet.errors import UserError
from botnet.io import atomic_path
from botnet.layers.pos_embed import resize_table

METADATA_KEY = "botnet"


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What is needed to rebuild ``model``: its preset name, config and class count."""
    meta: dict[str, Any] = {}
    if hasattr(model, "cfg") and hasattr(model.cfg, "to_dict"):
        meta.update(model=getattr(model, "name", ""), config=model.cfg.to_dict(),
                    num_classes=getattr(model, "num_classes", None))
    return meta


def save_weights(model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model's state dict (or a state dict) to ``path`` as safetensors, atomically.

    ``metadata`` (JSON-serialisable: class names, recipe, input size...) is stored in the header
    next to the model's own description and comes back from :func:`read_metadata`."""
    if isinstance(model, nn.Module):
        state, meta = model.state_dict(), model_metadata(model)
    else:
        state, meta = dict(model), {}
    meta.update(metadata or {})
    # safetensors refuses shared or non-contiguous storage: give every tensor its own copy
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    # serialised here and written by Python, so that a full disk is an OSError naming the file
    data = safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def _check_file(path: str | os.PathLike) -> Path:
    from botnet.reading import regular_file

    try:
        return regular_file(path, "weights file")
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored by :func:`save_weights` (empty for other safetensors files)."""
    from safetensors import safe_open

    path = _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        return json.loads(header.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: corrupt botnet metadata ({e})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a (weights-only) torch checkpoint.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's ``module.`` prefix are
    unwrapped."""
    path = _check_file(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure here means an unreadable file
        raise UserError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def adapt_position_tables(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Resize relative / absolute position tables in ``state`` to ``model``'s table sizes, in place.

    A relative table made for a larger map keeps its central rows (the same offsets); one made
    for a smaller map is resampled along the offset axis. Returns the names that were resized."""
    target = model.state_dict()
    resized = []
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if key not in target or leaf not in ("rel_h", "rel_w", "abs_h", "abs_w"):
            continue
        want = target[key].shape
        if value.shape == want or value.dim() != 2 or value.shape[1] != want[1]:
            continue
        state[key] = resize_table(value, want[0], relative=leaf.startswith("rel")).clone()
        resized.append(key)
    return resized


def _check_shapes(state: Mapping[str, torch.Tensor], model: nn.Module, path) -> None:
    target = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
           for k, v in state.items() if k in target and v.shape != target[k].shape]
    if not bad:
        return
    if any(k.startswith("fc.") for k in (b.split(":")[0] for b in bad)):
        n_file = state.get("fc.weight", torch.empty(0)).shape[:1]
        raise UserError(f"{path}: weights are for {tuple(n_file)[0] if n_file else '?'} classes, the model has "
                        f"{getattr(model, 'num_classes', '?')}")
    raise UserError(f"{path}: weights do not fit the model:\n  " + "\n  ".join(bad[:10]))


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load a :func:`save_weights` file into ``model`` (position tables resized to fit) and return
    its metadata. With ``strict``, missing or unexpected keys are an error."""
    state = load_state_dict(path)
    adapt_position_tables(state, model)
    _check_shapes(state, model, path)
    result = model.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise UserError(f"{path}: weights do not match the model; missing {result.missing_keys[:8]}, "
                        f"unexpected {result.unexpected_keys[:8]}")
    return read_metadata(path) if Path(path).suffix == ".safetensors" else {}


@dataclass
class LoadReport:
    """What loading foreign or pretrained weights into a model did."""

    loaded: list[str] = field(default_factory=list)
    #: keys in the checkpoint with no place in the model (e.g. the ResNet's c5 3x3 convs)
    skipped: list[str] = field(default_factory=list)
    #: model keys the checkpoint did not fill (the MHSA layers: left at their random init)
    missing: list[str] = field(default_factory=list)
    #: where the tensors came from (a file, or a named source and its cache file)
    origin: str = ""
    #: model keys of a classifier re-initialised because the class count differs
    reinitialised: list[str] = field(default_factory=list)
    #: position tables resampled for the model's map sizes
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"loaded {len(self.loaded)} tensors; skipped {len(self.skipped)} from the checkpoint "
                f"({', '.join(self.skipped[:6])}{'...' if len(self.skipped) > 6 else ''}); "
                f"left {len(self.missing)} at init ({', '.join(self.missing[:6])}"
                f"{'...' if len(self.missing) > 6 else ''})")
        if self.reinitialised:
            text += f"; classifier re-initialised ({', '.join(self.reinitialised)})"
        if self.resized:
            text += f"; {len(self.resized)} position tables resized to the model's map sizes"
        return (f"{self.origin}: " if self.origin else "") + text
