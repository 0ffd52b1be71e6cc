"""What architecture a state dict in our names holds, read from its tensor shapes alone.

Used to say, field by field, why a weights file does not fit a model ("layers: weights
(3, 4, 23, 3), model (3, 4, 6, 3)") instead of listing hundreds of tensor names. The fields are
:class:`~botnet.models.ModelConfig`'s where the shapes determine them. Where the BoT blocks sit is
not among them: a ResNet's weights fill a BoTNet of the same depth (the paper's ImageNet start,
arXiv 2101.11605, the COCO experiments), the attention staying at its initialisation.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch

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


def architecture_differences(weights: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """``"field: weights X, model Y"`` for every field that differs."""
    return [f"{key}: weights {weights.get(key)!r}, model {model.get(key)!r}"
            for key in model if weights.get(key) != model.get(key)]
