"""What the attention looks at: per-head attention maps of a BoT block for chosen query pixels.

:func:`attention_maps` runs the model's backbone on one input, catches the input of one MHSA layer
and takes that layer's softmax over its own logits (:meth:`~botnet.layers.MHSA2d.logits`, arXiv
2101.11605, figure 4): ``softmax_keys(d^-0.5 q.k + pos_scale (q.R_h + q.R_w))`` for each head and
each chosen query, or with ``term="position"`` the softmax of the position logits alone (what the
relative term prefers, per head, whatever the content). :func:`draw_attention` overlays the maps on the
image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from botnet.errors import UserError
from botnet.layers.attention import RELATIVE_ENCODINGS, MHSA2d

TERMS = ("full", "position")


def _backbone(model: nn.Module) -> nn.Module:
    # a BoTNet classifier, or a torchvision detector whose backbone body is one
    body = getattr(getattr(model, "backbone", None), "body", None)
    return body if body is not None else model


def attention_layers(model: nn.Module) -> list[MHSA2d]:
    """Every MHSA layer of the model's backbone, in forward order."""
    return [m for m in _backbone(model).modules() if isinstance(m, MHSA2d)]


@torch.no_grad()
def _layer_input(model: nn.Module, layer: MHSA2d, image: torch.Tensor) -> torch.Tensor:
    caught: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, args, out: caught.append(args[0].detach()))
    try:
        body = _backbone(model)
        was_training = body.training
        body.eval()
        body.forward_features(image[None].to(next(body.parameters()).device))
        body.train(was_training)
    finally:
        handle.remove()
    return caught[0].float()  # (1, dim, H, W)


def salient_points(feature_map: torch.Tensor, count: int = 4) -> list[tuple[int, int]]:
    """(row, col) of the ``count`` map positions with the largest feature norm, no two adjacent."""
    norm = feature_map[0].norm(dim=0).clone()  # (H, W)
    points = []
    for _ in range(min(count, norm.numel())):
        index = int(norm.argmax())
        r, c = divmod(index, norm.shape[1])
        points.append((r, c))
        norm[max(0, r - 1):r + 2, max(0, c - 1):c + 2] = -1.0
        if bool((norm < 0).all()):
            break
    return points


@torch.no_grad()
def layer_attention(layer: MHSA2d, x: torch.Tensor, queries: Sequence[tuple[int, int]],
                    term: str = "full") -> torch.Tensor:
    """(P, heads, H, W) attention of the queries (row, col) over the keys of ``x`` (1, dim, H, W)."""
    if term not in TERMS:
        raise UserError(f"term must be one of {TERMS}, got {term!r}")
    if layer.pos_enc not in RELATIVE_ENCODINGS:
        raise UserError("attention maps are drawn for relative position encoding only")
    height, width = x.shape[-2:]
    index = torch.tensor([r * width + c for r, c in queries], device=x.device)
    logits = layer.logits(x.to(layer.qkv.weight.dtype), index, content=term == "full")  # (1, heads, P, N)
    probs = logits.float().softmax(-1)[0]  # (heads, P, N)
    return probs.transpose(0, 1).reshape(len(queries), layer.heads, height, width)


def attention_maps(model: nn.Module, image: torch.Tensor, points: Sequence[tuple[float, float]] | None = None,
                   layer: int = -1, term: str = "full") -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Attention maps of one MHSA layer (index ``layer`` among :func:`attention_layers`) for query
    pixels ``points`` ((x, y) in ``image`` pixels; default: the most salient positions of the
    layer's input map), with ``image`` the (3, h, w) model input, normalised.

    Returns ``(maps, points)``: maps (P, heads, H, W) on the layer's map, each summing to 1, and
    the query points used."""
    layers = attention_layers(model)
    if not layers:
        raise UserError("this model has no attention layer (a ResNet?): nothing to draw")
    if not -len(layers) <= layer < len(layers):
        raise UserError(f"--layer {layer}: the model has {len(layers)} attention layers (0..{len(layers) - 1})")
    mhsa = layers[layer]
    x = _layer_input(model, mhsa, image)
    height, width = x.shape[-2:]
    h, w = image.shape[-2:]
    if points is None:
        queries = salient_points(x)
        points = [((c + 0.5) * w / width, (r + 0.5) * h / height) for r, c in queries]
    else:
        for px, py in points:
            if not (0 <= px < w and 0 <= py < h):
                raise UserError(f"point {px:g},{py:g} lies outside the {w}x{h} model input")
        queries = [(min(int(py * height / h), height - 1), min(int(px * width / w), width - 1)) for px, py in points]
    return layer_attention(mhsa, x, queries, term), list(points)


def draw_attention(picture: torch.Tensor, maps: torch.Tensor, points: Sequence[tuple[float, float]],
                   path: str | os.PathLike, title: str = "") -> Path:
    """A grid: one row per query point (the picture with the point marked, then one overlay per
    head). ``picture`` is (3, h, w) uint8, the model input as seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from botnet.io import atomic_path

    count, heads = maps.shape[:2]
    h, w = picture.shape[-2:]
    up = F.interpolate(maps.float(), size=(h, w), mode="bilinear", align_corners=False)
    rgb = picture.permute(1, 2, 0).cpu().numpy()
    fig, axes = plt.subplots(count, heads + 1, figsize=(2.2 * (heads + 1), 2.2 * count), squeeze=False)
    for i, (px, py) in enumerate(points):
        axes[i, 0].imshow(rgb)
        axes[i, 0].plot([px], [py], "o", ms=7, mfc="none", mec="cyan", mew=2)
        axes[i, 0].set_title(f"query ({px:.0f}, {py:.0f})", fontsize=8)
        for j in range(heads):
            ax = axes[i, j + 1]
            ax.imshow(rgb)
            ax.imshow(up[i, j].numpy(), cmap="inferno", alpha=0.6)
            ax.plot([px], [py], "o", ms=5, mfc="none", mec="cyan", mew=1.5)
            if i == 0:
                ax.set_title(f"head {j}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


def model_input(loaded, image) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, picture)`` for a loaded model (a :class:`botnet.Predictor` or
    :class:`~botnet.weights.rebuild.LoadedModel`): the normalised (3, h, w) backbone input of ``image``
    and that input as a (3, h, w) uint8 picture, as its task prepares it
    (:meth:`~botnet.tasks.TaskKind.attention_input`): a classifier's evaluation crop, a detector's
    image with its longer side resized to the canvas."""
    from botnet.data.images import read_image
    from botnet.tasks import get_task

    pixels = read_image(image)
    pixels = pixels.float().div(255) if pixels.dtype == torch.uint8 else pixels
    x, mean, std = get_task(loaded.task).attention_input(loaded, pixels)
    picture = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return x, picture
