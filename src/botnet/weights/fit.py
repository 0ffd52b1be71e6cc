"""Whether a state dict fits a model, and what differs when it does not.

What architecture a state dict in our names holds is read from its tensor shapes alone, so that a
misfit is said field by field ("layers: weights (3, 4, 23, 3), model (3, 4, 6, 3)") instead of as
hundreds of tensor names. The fields are :class:`~botnet.models.ModelConfig`'s where the shapes
determine them. Where the BoT blocks sit is not among them: a ResNet's weights fill a BoTNet of the
same depth (the paper's ImageNet start, arXiv 2101.11605, the COCO experiments), the attention
staying at its initialisation. :func:`differences` is also how a file's config is compared with a
named model's (:mod:`botnet.weights.rebuild`).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from botnet.errors import UserError
from botnet.weights.files import LoadReport, adapt_position_tables

_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")


def _shape(value: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


def describe_state(state: Mapping[str, torch.Tensor | Sequence[int]]) -> dict[str, Any]:
    """Architecture fields of a state dict (or of ``{name: shape}``) in our module names."""
    shapes = {k: _shape(v) for k, v in state.items()}
    d: dict[str, Any] = {}
    if "stem.conv1.conv.weight" in shapes:
        d["stem"], first = "tiered", shapes["stem.conv1.conv.weight"]
        d["stem_width"] = shapes.get("stem.conv3.conv.weight", (None,))[0]
    elif "conv1.weight" in shapes:
        d["stem"], first = "7x7", shapes["conv1.weight"]
        d["stem_width"] = first[0]
    else:
        d["stem"], first = None, None
    d["in_chans"] = first[1] if first else None
    blocks: dict[int, set[int]] = {}
    for key in shapes:
        m = _BLOCK.match(key)
        if m:
            blocks.setdefault(int(m.group(1)) - 1, set()).add(int(m.group(2)))
    d["layers"] = tuple(len(blocks.get(s, ())) for s in range(4))
    d["widths"] = tuple(shapes.get(f"layer{s + 1}.0.conv1.weight", (None,))[0] for s in range(4))
    d["out_channels"] = tuple(shapes.get(f"layer{s + 1}.0.conv3.weight", (None,))[0] for s in range(4))
    groups = [v for k, v in shapes.items() if k.endswith(".conv2.weight") and len(v) == 4 and v[0] != v[1]]
    d["group_size"] = groups[0][1] if groups else 0
    d["se (after conv3)"] = any(k.endswith(".se.fc1.weight") for k in shapes)
    mid = {"se" if k.endswith(".mid_attn.fc1.weight") else "eca" for k in shapes
           if k.endswith((".mid_attn.fc1.weight", ".mid_attn.conv.weight"))}
    d["mid_attn"] = mid.pop() if len(mid) == 1 else (None if not mid else "mixed")
    d["num_features"] = shapes.get("final_conv.conv.weight", (0,))[0]
    return d


def describe_model(model: torch.nn.Module) -> dict[str, Any]:
    return describe_state({k: v.shape for k, v in model.state_dict().items()})


def differences(first: Mapping[str, Any], second: Mapping[str, Any], names: tuple[str, str] = ("weights", "model"),
                ignore: Sequence[str] = ()) -> list[str]:
    """``"field: <first> X, <second> Y"`` for every field whose values differ (a tuple equals the
    list of its items, as JSON gives it back), fields in ``ignore`` aside."""
    def same(a: Any, b: Any) -> bool:
        return (list(a) if isinstance(a, tuple) else a) == (list(b) if isinstance(b, tuple) else b)

    keys = [k for k in dict.fromkeys([*first, *second]) if k not in ignore]
    return [f"{k}: {names[0]} {first.get(k)!r}, {names[1]} {second.get(k)!r}" for k in keys
            if not same(first.get(k), second.get(k))]


def _is_attention(key: str) -> bool:
    return ".attn." in key and key.rsplit(".", 1)[-1] in ("weight", "bias", "rel_h", "rel_w", "abs_h", "abs_w")


def _block_of(key: str) -> str:
    return key.split(".conv2.")[0].split(".attn.")[0]


def load_mapped_state(model: nn.Module, state: Mapping[str, torch.Tensor], unmapped: list[str] | None = None, *,
                      include_classifier: bool = True, strict: bool = False, origin: str = "",
                      hint: str = "") -> LoadReport:
    """Load a state dict already in ``model``'s names, refusing weights made for another architecture.

    Allowed gaps, reported: a block that is a BoT block on one side and a conv block on the other
    (its 3x3 conv skipped / its attention left at init: the paper's ImageNet-ResNet start) and a
    classifier of another class count (re-initialised), or any classifier without
    ``include_classifier``. Anything else that does not fit is a :class:`UserError` naming the
    architecture fields that differ (``hint`` is added to it). ``strict``: nothing may stay at init.
    """
    state = dict(state)
    report = LoadReport(skipped=list(unmapped or []), origin=origin)
    report.resized = adapt_position_tables(state, model)
    target = model.state_dict()
    fc_fits = all(k in state and state[k].shape == target[k].shape for k in target if k.startswith("fc."))
    use_fc = include_classifier and fc_fits
    diffs = differences(describe_state(state), describe_model(model))
    bad = [f"{k}: weights {tuple(v.shape)}, model {tuple(target[k].shape)}" for k, v in state.items()
           if k in target and v.shape != target[k].shape and not k.startswith("fc.")]
    spatial_gaps = {_block_of(k) for k in target if k not in state and (_is_attention(k) or ".conv2." in k)}
    unexplained = [k for k in target if k not in state and not k.endswith("num_batches_tracked")
                   and not k.startswith("fc.") and _block_of(k) not in spatial_gaps]
    extra = [k for k in state if k not in target and not k.startswith("fc.") and _block_of(k) not in spatial_gaps
             and not k.endswith("num_batches_tracked")]  # FrozenBatchNorm2d keeps no count
    name = origin or "the weights"
    if not any(k in target for k in state):
        raise UserError(f"{name}: no tensor fits this model (is it a ResNet / BoTNet state dict?)"
                        + (f"; {hint}" if hint else ""))
    if diffs or bad or unexplained or extra:
        lines = diffs or bad[:8] or ([f"not in the weights: {k}" for k in unexplained[:8]]
                                     + [f"not in the model: {k}" for k in extra[:8]])
        raise UserError(f"{name}: made for another architecture than this model"
                        + (f" ({hint})" if hint else "") + "; what differs:\n  " + "\n  ".join(lines))
    usable = {k: v for k, v in state.items() if k in target and (use_fc or not k.startswith("fc."))}
    model.load_state_dict(usable, strict=False)
    report.loaded = list(usable)
    report.skipped += [k for k in state if k not in usable]
    report.missing = [k for k in target if k not in usable and not k.endswith("num_batches_tracked")]
    if include_classifier and not fc_fits and any(k.startswith("fc.") for k in target):
        n = state["fc.weight"].shape[0] if "fc.weight" in state else 0
        report.reinitialised = [f"{getattr(model, 'num_classes', '?')} classes; the weights have {n or 'none'}"]
    if strict and report.missing:
        more = "..." if len(report.missing) > 8 else ""
        raise UserError(f"{name}: {len(report.missing)} tensors of the model are not in the weights (--strict): "
                        f"{', '.join(report.missing[:8])}{more}")
    return report
