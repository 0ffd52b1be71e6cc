"""Activation lookup by name (ReLU for the detection backbones, SiLU for the T models)."""
from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def get_act_layer(name: str | type[nn.Module]) -> type[nn.Module]:
    if not isinstance(name, str):
        return name
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def make_act(act_layer: type[nn.Module]) -> nn.Module:
    # nn.GELU takes no inplace argument
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()
