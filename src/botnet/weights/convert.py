"""Weights of other libraries in our module names (``botnet convert`` writes them to our safetensors:
:func:`botnet.weights.builder.convert_weights`).

Layouts (``layout=``; ``"auto"`` recognises them from the keys):

``torchvision`` (alias ``resnet``): torchvision's ResNets, and our own files
    Our module names are torchvision's (conv1, bn1, layer{1..4}.{i}.conv{1,2,3} / bn{1,2,3} /
    downsample.{0,1}, fc), so the mapping is the identity. In a BoT block the ResNet's 3x3
    ``conv2`` has no place and is skipped: the attention stays at its initialisation, the paper's
    ImageNet start (arXiv 2101.11605, the COCO experiments).

``timm`` (alias ``timm-byobnet``): timm's ResNets and its byobnet BoTNets, one mapping
    timm's ResNets (``resnet50.a1_in1k``, ``seresnet*``) use torchvision's names: the identity.
    Its byobnet models (``botnet26t_256``, ``sebotnet33ts_256``, ``eca_botnext26ts_256``,
    ``botnet50ts_256``) map onto our rows of the same name, every tensor::

        stem.conv{1,2,3}.conv / .bn             -> the same (the tiered stem)
        stages.{s}.{i}.                          -> layer{s+1}.{i}.
            conv1_1x1.conv / .bn                 -> conv1 / bn1
            conv2_kxk.conv / .bn                 -> conv2 / bn2
            attn.fc1 / .fc2 / .conv              -> mid_attn.*   (SE / ECA after the 3x3)
            self_attn.qkv                        -> attn.qkv     ([q | k | v], head-major)
            self_attn.pos_embed.height_rel / width_rel -> attn.rel_h / attn.rel_w
            post_attn                            -> bn2          (BN + act after the attention)
            conv3_1x1.conv / .bn                 -> conv3 / bn3
            attn_last.fc1 / .fc2                 -> se.fc1 / se.fc2
            shortcut.conv / .bn                  -> downsample.0 / downsample.1
        final_conv.conv / .bn                    -> the same
        head.fc                                  -> fc

timm's ``BottleneckAttn`` indexes its relative tables like ours (row ``key - query + L - 1``) and
by default (``scale_pos_embed=False``) adds the position logits unscaled: ``d^-0.5 q.k + q.R``.
The tables are rescaled to whatever the target layer computes: unchanged into a layer with
``scale_pos_embed=False`` (timm's rows), times ``d^0.5`` into the paper's ``d^-0.5 (q.k + q.R)``.
Where timm's q/k heads are narrower than v (``eca_botnext26ts_256``: 16 vs 64 / 128 channels) and
ours are one width, q/k are zero-padded to v's width, q times ``(d_v / d_qk)^0.5`` and the tables
divided by it: the same logits. Tables made for another map size are resized on load.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from botnet.errors import UserError
from botnet.weights.files import adapt_position_tables

LAYOUTS = ("auto", "timm", "torchvision")
ALIASES = {"resnet": "torchvision", "timm-byobnet": "timm"}
SOURCES = LAYOUTS + tuple(ALIASES)

_BYOB_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
# timm byobnet block part -> our block part (prefix match on the module path, first match wins)
_BYOB_PARTS = (
    ("conv1_1x1.conv.", "conv1."),
    ("conv1_1x1.bn.", "bn1."),
    ("conv2_kxk.conv.", "conv2."),
    ("conv2_kxk.bn.", "bn2."),
    ("attn.", "mid_attn."),
    ("attn_last.", "se."),
    ("self_attn.qkv.", "attn.qkv."),
    ("self_attn.pos_embed.height_rel", "attn.rel_h"),
    ("self_attn.pos_embed.width_rel", "attn.rel_w"),
    ("post_attn.", "bn2."),
    ("conv3_1x1.conv.", "conv3."),
    ("conv3_1x1.bn.", "bn3."),
    ("shortcut.conv.", "downsample.0."),
    ("shortcut.bn.", "downsample.1."),
)
_BYOB_TOP = (("stem.", "stem."), ("final_conv.", "final_conv."), ("head.fc.", "fc."))


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """``"timm"`` for timm's byobnet layout (``stages.*``), else ``"torchvision"`` (torchvision's
    and timm's ResNets, our own files)."""
    if any(k.startswith("stages.") for k in state):
        return "timm"
    return "torchvision"  # anything else: the identity, and loading names what does not fit


def _rename_byob(key: str) -> str | None:
    for theirs, ours in _BYOB_TOP:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    m = _BYOB_BLOCK.match(key)
    if m is None:
        return None
    stage, index, rest = int(m.group(1)), m.group(2), m.group(3)
    for theirs, ours in _BYOB_PARTS:
        if rest.startswith(theirs):
            return f"layer{stage + 1}.{index}.{ours}{rest[len(theirs):]}"
    return None


def timm_attention(qkv: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, heads: int, dim_head: int,
                   scale_pos_embed: bool, source_scale_pos_embed: bool = False) -> dict[str, torch.Tensor]:
    """Our ``MHSA2d`` tensors (``qkv.weight``, ``rel_h``, ``rel_w``) from one timm ``BottleneckAttn``.

    ``heads`` / ``dim_head`` / ``scale_pos_embed`` are the target layer's; timm's q/k head width is
    its tables' width. Logits are equal: q/k padded to ``dim_head`` when narrower, tables scaled by
    ``c_timm / (c_ours * s)`` (c: each side's factor on the position term, s: the padding's q scale)."""
    d_qk = rel_h.shape[1]
    if d_qk > dim_head or qkv.shape[0] != heads * (2 * d_qk + dim_head):
        raise UserError(f"a timm BottleneckAttn with {qkv.shape[0]} q/k/v channels of head width {d_qk} does not "
                        f"fit an attention layer of {heads} heads x {dim_head} channels")
    q, k, v = qkv.split([heads * d_qk, heads * d_qk, heads * dim_head])
    s = (dim_head / d_qk) ** 0.5

    def widen(t: torch.Tensor) -> torch.Tensor:  # (heads * d_qk, C, 1, 1) -> (heads * dim_head, C, 1, 1)
        t = t.reshape(heads, d_qk, *t.shape[1:])
        return F.pad(t, (0, 0) * (t.dim() - 2) + (0, dim_head - d_qk)).flatten(0, 1)

    if d_qk != dim_head:
        q, k = widen(q) * s, widen(k)
    c_theirs = d_qk**-0.5 if source_scale_pos_embed else 1.0
    c_ours = dim_head**-0.5 if scale_pos_embed else 1.0
    factor = c_theirs / (c_ours * s)
    tables = [F.pad(t, (0, dim_head - d_qk)) * factor for t in (rel_h, rel_w)]
    return {"qkv.weight": torch.cat([q, k, v]), "rel_h": tables[0], "rel_w": tables[1]}


def _fix_attention(mapped: dict[str, torch.Tensor], target: nn.Module, source_scale_pos_embed: bool) -> None:
    from botnet.layers.attention import MHSA2d

    modules = dict(target.named_modules())
    for key in [k for k in mapped if k.endswith(".attn.qkv.weight")]:
        prefix = key[: -len("qkv.weight")]
        layer = modules.get(prefix[:-1])
        if not isinstance(layer, MHSA2d) or prefix + "rel_h" not in mapped or prefix + "rel_w" not in mapped:
            continue  # no attention there in the target: reported as skipped
        new = timm_attention(mapped[key], mapped[prefix + "rel_h"], mapped[prefix + "rel_w"], layer.heads,
                             layer.dim_head, layer.scale_pos_embed, source_scale_pos_embed)
        mapped.update({prefix + name: value for name, value in new.items()})


def to_our_names(state: Mapping[str, torch.Tensor], target: nn.Module, layout: str = "auto",
                 scale_pos_embed: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` in ``target``'s names: (mapped tensors, source keys with no name of ours).

    ``scale_pos_embed``: the timm source's ``BottleneckAttn`` option (timm's default, False)."""
    layout = ALIASES.get(layout, layout)
    if layout not in LAYOUTS:
        raise UserError(f"unknown weights layout {layout!r}; choose from {', '.join(SOURCES)}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if layout == "auto" or (layout == "timm" and not any(k.startswith("stages.") for k in state)):
        layout = detect_layout(state)
    if layout == "torchvision":
        return dict(state), []
    mapped, unmapped = {}, []
    for key, value in state.items():
        new = _rename_byob(key)
        if new is None:
            unmapped.append(key)
        else:
            mapped[new] = value
    _fix_attention(mapped, target, scale_pos_embed)
    return mapped, unmapped


def bottleneck_attn_state(state: Mapping[str, torch.Tensor], scale_pos_embed: bool = False, prefix: str = "",
                          target: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Our ``MHSA2d`` state from one timm ``BottleneckAttn`` state (keys ``qkv.weight``,
    ``pos_embed.height_rel`` / ``width_rel`` under ``prefix``). ``scale_pos_embed`` is timm's
    option; ``target`` (default: a paper-scaled layer of timm's q/k width) sets ours."""
    try:
        qkv = state[prefix + "qkv.weight"]
        rel_h, rel_w = state[prefix + "pos_embed.height_rel"], state[prefix + "pos_embed.width_rel"]
    except KeyError as e:
        raise UserError(f"not a timm BottleneckAttn state: missing {e.args[0]!r}") from None
    d = rel_h.shape[1]
    heads, dim_head, scaled = (target.heads, target.dim_head, target.scale_pos_embed) if target is not None else (
        qkv.shape[0] // (3 * d), d, True)
    out = timm_attention(qkv, rel_h, rel_w, heads, dim_head, scaled, scale_pos_embed)
    if prefix + "qkv.bias" in state:
        out["qkv.bias"] = state[prefix + "qkv.bias"]
    return out


def load_timm_bottleneck_attn(target: nn.Module, source: nn.Module | Mapping[str, torch.Tensor],
                              scale_pos_embed: bool | None = None) -> None:
    """Copy a timm ``BottleneckAttn`` (a module, or its state dict) into our ``MHSA2d``; with a
    module, timm's ``scale_pos_embed`` is read from it (else timm's default, False)."""
    if isinstance(source, nn.Module):
        if scale_pos_embed is None:
            scale_pos_embed = bool(getattr(source, "scale_pos_embed", False))
        source = source.state_dict()
    state = bottleneck_attn_state(source, bool(scale_pos_embed), target=target)
    adapt_position_tables(state, target)
    own = target.state_dict()
    bad = [f"{k}: source {tuple(v.shape)}, target {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise UserError("shapes differ:\n  " + "\n  ".join(bad))
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"the BottleneckAttn does not fit: missing {result.missing_keys}, "
                        f"unexpected {result.unexpected_keys}")


def classifier_size(state: Mapping[str, torch.Tensor]) -> int:
    """Classes of a state dict's classifier (ours / torchvision: ``fc``, timm byobnet: ``head.fc``); 0: none."""
    for key in ("fc.weight", "head.fc.weight", "module.fc.weight"):
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    return 0
