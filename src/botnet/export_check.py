"""Checking an export before it is kept: the written graph must reproduce PyTorch.

Classifiers and backbones: every output within ``ATOL + RTOL * |value|`` of PyTorch's (fp32), on
the export input and, for a dynamic export, on a second, non-square size and another batch.
Detectors: the same detections (count and labels equal), boxes within ``BOX_ATOL`` pixels,
scores within ``SCORE_ATOL`` and, with a mask head, mask probabilities within ``SCORE_ATOL`` on
average over the pixels (NMS and mask pasting make the per-pixel worst case a poor test).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from botnet import limits
from botnet.errors import UserError

ATOL = RTOL = 1e-3
BOX_ATOL = 1e-2
SCORE_ATOL = 1e-3
#: dynamic export sizes: multiples of SIZE_MULTIPLE from MIN_DYNAMIC_SIZE to MAX_DYNAMIC_SIZE, so that
#: every stride-2 layer halves evenly (what lets torch.export prove the shape arithmetic)
SIZE_MULTIPLE = 32
MIN_DYNAMIC_SIZE, MAX_DYNAMIC_SIZE = 64, 4096


class ExportCheckError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model; nothing was written."""


def dynamic_size(size: Sequence[int]) -> tuple[int, int]:
    """The export size a dynamic export takes for a model of input ``size`` when none is given:
    the smallest valid size (a multiple of :data:`SIZE_MULTIPLE`, at least :data:`MIN_DYNAMIC_SIZE`)
    not below it, so that a classifier trained at 32 px exports without a ``--size``."""
    def valid(side: int) -> int:
        side = -(-int(side) // SIZE_MULTIPLE) * SIZE_MULTIPLE
        return min(max(side, MIN_DYNAMIC_SIZE), MAX_DYNAMIC_SIZE)

    return valid(size[0]), valid(size[1])


def check_size(size: Sequence[int], dynamic: bool) -> tuple[int, int]:
    """(H, W) of an export input, refused unless a dynamic export can reach it."""
    if len(size) != 2 or any(limits.IMAGE_SIDE(s) for s in size):
        raise UserError(f"--img-size takes S or H W from 1 to {limits.MAX_IMAGE_SIDE}, got {list(size)}")
    h, w = int(size[0]), int(size[1])
    if dynamic and not all(s % SIZE_MULTIPLE == 0 and MIN_DYNAMIC_SIZE <= s <= MAX_DYNAMIC_SIZE for s in (h, w)):
        raise UserError(f"with --dynamic the export size must be a multiple of {SIZE_MULTIPLE} between "
                        f"{MIN_DYNAMIC_SIZE} and {MAX_DYNAMIC_SIZE}, got {h}x{w}")
    return h, w


def max_diff(got: Sequence[Any], want: Sequence[torch.Tensor], what: str) -> float:
    if len(got) != len(want):
        raise ExportCheckError(f"{what}: {len(got)} outputs, PyTorch gives {len(want)}")
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        g = torch.as_tensor(g).float()
        w = w.detach().float()
        if g.shape != w.shape:
            raise ExportCheckError(f"{what}: output {i} has shape {tuple(g.shape)}, PyTorch gives {tuple(w.shape)}")
        diff = (g - w).abs()
        if not bool((diff <= ATOL + RTOL * w.abs()).all()):
            raise ExportCheckError(f"{what}: output {i} differs from PyTorch by up to {diff.max().item():.3g} "
                                   f"(tolerance {ATOL} + {RTOL} * |value|)")
        worst = max(worst, diff.max().item() if diff.numel() else 0.0)
    return worst


def onnx_session(path: str | os.PathLike):
    """An onnxruntime CPU session (warnings about shapes inferred for loops are silenced)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | os.PathLike, images: torch.Tensor) -> list:
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: images.numpy()})


def check_inputs(example: torch.Tensor, dynamic: bool) -> list[torch.Tensor]:
    inputs = [example]
    if dynamic:
        b, c, h, w = example.shape
        # another batch and a non-square size: catches graphs that silently kept a shape constant
        h2 = h + SIZE_MULTIPLE if h + SIZE_MULTIPLE <= MAX_DYNAMIC_SIZE else h - SIZE_MULTIPLE
        w2 = w + 2 * SIZE_MULTIPLE if w + 2 * SIZE_MULTIPLE <= MAX_DYNAMIC_SIZE else w - 2 * SIZE_MULTIPLE
        inputs.append(torch.randn(1 if b > 1 else 2, c, h2, w2))
    return inputs


def reference(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_export(path: Path, format: str, wrapper: nn.Module, inputs: list[torch.Tensor],
                 compare: Callable[[Sequence[Any], Sequence[torch.Tensor], str], float]):
    """``(input shape, difference)`` for each input, ``compare`` (:func:`max_diff`,
    :func:`check_detections`) raising when the export does not reproduce ``wrapper``."""
    checks = []
    loaded = None
    if format == "torch":
        with open(path, "rb") as f:
            loaded = torch.export.load(f).module()
    for x in inputs:
        want = reference(wrapper, x)
        if format == "torch":
            with torch.no_grad():
                got = loaded(x)
            got = list(got) if isinstance(got, (tuple, list)) else [got]
        else:
            got = run_onnx(path, x)
        checks.append((tuple(x.shape), compare(got, want, f"{format} export at input {tuple(x.shape)}")))
    return checks


def check_detections(got: Sequence[Any], want: Sequence[torch.Tensor], what: str,
                     box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL) -> float:
    """Same detections: the same count and labels, boxes within ``box_atol`` pixels, scores within
    ``score_atol``, masks (when present) within ``score_atol`` on average. Returns the largest box
    difference."""
    boxes, labels, scores = (torch.as_tensor(g) for g in got[:3])
    if boxes.shape != want[0].shape:
        raise ExportCheckError(f"{what}: {len(boxes)} detections, PyTorch finds {len(want[0])}")
    if not torch.equal(labels.long(), want[1].long()):
        raise ExportCheckError(f"{what}: the detected labels differ from PyTorch's")
    box_diff = (boxes.float() - want[0].float()).abs().max().item() if len(boxes) else 0.0
    score_diff = (scores.float() - want[2].float()).abs().max().item() if len(scores) else 0.0
    if box_diff > box_atol or score_diff > score_atol:
        raise ExportCheckError(f"{what}: boxes differ by up to {box_diff:.3g} px, scores by {score_diff:.3g}")
    if len(got) > 3 and len(boxes):
        mask_diff = (torch.as_tensor(got[3]).float() - want[3].float()).abs().mean().item()
        if mask_diff > score_atol:
            raise ExportCheckError(f"{what}: masks differ from PyTorch's by {mask_diff:.3g} on average")
    return box_diff


def synthetic_image(size: int, seed: int = 0) -> torch.Tensor:
    """A (3, size, size) test picture in [0, 1]: a few flat rectangles on a smooth background, so
    that region proposals have edges to find."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.6, size)
    image = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                         torch.full((size, size), 0.4)])
    for _ in range(4):
        h, w = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=g))
        top, left = (int(v) for v in torch.randint(0, size - max(h, w), (2,), generator=g))
        image[:, top:top + h, left:left + w] = torch.rand(3, 1, 1, generator=g)
    return image
