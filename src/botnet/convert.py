"""Weights from other libraries mapped onto our models, and written in our safetensors format.

Supported sources and their mappings (``source=``):

``resnet`` (torchvision ``resnet50``..``resnet152``, timm ``resnet*`` / ``seresnet*``)
    Our module names are torchvision's, so the mapping is the identity::

        conv1, bn1                         -> conv1, bn1   (7x7 stem)
        layer{1..4}.{i}.conv{1,2,3}/bn{1,2,3} -> the same
        layer{1..4}.{i}.downsample.{0,1}   -> the same (1x1 conv, BN)
        layer{1..4}.{i}.se.fc{1,2}         -> the same (timm SE-ResNets)
        fc                                 -> fc

    In a BoT block the 3x3 ``conv2`` has no place and is skipped; the attention stays at its
    initialisation (the paper's ImageNet start). timm's deep-stem variants (``resnet50d``...) keep
    only what has the same name and shape; the report lists the rest.

``timm-byobnet`` (timm's ``botnet26t_256``, ``botnet50ts_256``...)
    Per block ``stages.{s}.{i}`` -> ``layer{s+1}.{i}``::

        conv1_1x1.conv / .bn     -> conv1 / bn1
        conv2_kxk.conv / .bn     -> conv2 / bn2          (bottleneck blocks)
        self_attn.qkv            -> attn.qkv             (BottleneckAttn: same [q|k|v], head-major)
        self_attn.pos_embed.height_rel / width_rel -> attn.rel_h / attn.rel_w   (see below)
        post_attn                -> bn2                  (BN after the attention)
        conv3_1x1.conv / .bn     -> conv3 / bn3
        attn_last.fc1 / fc2      -> se.fc1 / se.fc2      (SE after conv3, as ours)
        shortcut.conv / .bn      -> downsample.0 / downsample.1
        head.fc                  -> fc

    The stems differ (timm's are 3-conv "tiered" stems; ours is the paper's 7x7) and are not
    mapped, nor is an SE after the 3x3 (timm's ``attn``, e.g. ``sebotnet33ts_256``; ours sits
    after conv3). timm's blocks put no activation on the projection shortcut: build the target
    with ``bot_shortcut_act=False`` (and timm's ``act``, SiLU for ``*ts``) for the same function.

``BottleneckAttn`` tables: timm indexes its relative tables like ours (row ``key - query + L - 1``)
but by default (``scale_pos_embed=False``) adds the position logits *unscaled*,
``logits = d^-0.5 q.k + q.R``, while the paper (and we) scale both terms,
``d^-0.5 (q.k + q.R)``. Its tables are therefore multiplied by ``d^0.5`` on the way in; with
``scale_pos_embed=True`` they are copied as they are. Tables made for another map size are
resized to the target's (see :func:`botnet.weights.adapt_position_tables`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from botnet.errors import UserError
from botnet.weights import LoadReport, adapt_position_tables, load_backbone_weights, load_state_dict, save_weights

SOURCES = ("auto", "resnet", "timm-byobnet")

_BYOB_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
# timm byobnet block part -> our block part (prefix match on the module path)
_BYOB_PARTS = (
    ("conv1_1x1.conv.", "conv1."),
    ("conv1_1x1.bn.", "bn1."),
    ("conv2_kxk.conv.", "conv2."),
    ("conv2_kxk.bn.", "bn2."),
    ("self_attn.qkv.", "attn.qkv."),
    ("self_attn.pos_embed.height_rel", "attn.rel_h"),
    ("self_attn.pos_embed.width_rel", "attn.rel_w"),
    ("post_attn.", "bn2."),
    ("conv3_1x1.conv.", "conv3."),
    ("conv3_1x1.bn.", "bn3."),
    ("attn_last.fc1.", "se.fc1."),
    ("attn_last.fc2.", "se.fc2."),
    ("shortcut.conv.", "downsample.0."),
    ("shortcut.bn.", "downsample.1."),
)


def pos_embed_factor(dim_head: int, scale_pos_embed: bool) -> float:
    """What timm's relative tables are multiplied by to give ours the same logits."""
    return 1.0 if scale_pos_embed else dim_head**0.5


def bottleneck_attn_state(state: Mapping[str, torch.Tensor], scale_pos_embed: bool = False,
                          prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of our :class:`~botnet.layers.attention.MHSA2d` from that of one timm
    ``BottleneckAttn`` (keys ``qkv.weight``, ``pos_embed.height_rel``, ``pos_embed.width_rel``,
    under ``prefix``). Only the relative-position, equal-q/k/v-width configuration maps."""
    try:
        qkv = state[prefix + "qkv.weight"]
        rel_h, rel_w = state[prefix + "pos_embed.height_rel"], state[prefix + "pos_embed.width_rel"]
    except KeyError as e:
        raise UserError(f"not a timm BottleneckAttn state: missing {e.args[0]!r}") from None
    factor = pos_embed_factor(rel_h.shape[1], scale_pos_embed)
    out = {"qkv.weight": qkv, "rel_h": rel_h * factor, "rel_w": rel_w * factor}
    if prefix + "qkv.bias" in state:
        out["qkv.bias"] = state[prefix + "qkv.bias"]
    return out


def load_timm_bottleneck_attn(target: nn.Module, source: nn.Module | Mapping[str, torch.Tensor],
                              scale_pos_embed: bool | None = None) -> None:
    """Copy a timm ``BottleneckAttn`` (a module, or its state dict) into our ``MHSA2d``.

    With a module, ``scale_pos_embed`` is read from it; with a state dict it defaults to timm's
    default, False. q/k and v must have the same head width (timm's default ``qk_ratio=1``)."""
    if isinstance(source, nn.Module):
        if scale_pos_embed is None:
            scale_pos_embed = bool(getattr(source, "scale_pos_embed", False))
        if getattr(source, "dim_head_qk", None) != getattr(source, "dim_head_v", None):
            raise UserError("this BottleneckAttn has different q/k and v head widths; ours has one width")
        source = source.state_dict()
    state = bottleneck_attn_state(source, bool(scale_pos_embed))
    adapt_position_tables_for(target, state)
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"the BottleneckAttn does not fit: missing {result.missing_keys}, "
                        f"unexpected {result.unexpected_keys}")


def adapt_position_tables_for(target: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize ``state``'s tables to ``target``'s and check the shapes, naming what differs."""
    adapt_position_tables(state, target)
    own = target.state_dict()
    bad = [f"{k}: source {tuple(v.shape)}, target {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise UserError("shapes differ:\n  " + "\n  ".join(bad))


def detect_source(state: Mapping[str, torch.Tensor]) -> str:
    """``"timm-byobnet"`` for timm's ``stages.*`` layout, else ``"resnet"`` (torchvision / timm)."""
    if any(k.startswith("stages.") and ".conv1_1x1." in k for k in state):
        return "timm-byobnet"
    if any(k.startswith("layer1.") for k in state):
        return "resnet"
    raise UserError("the checkpoint is neither a torchvision / timm ResNet (layer1.*) nor a timm byobnet "
                    "(stages.*.conv1_1x1.*) state dict")


def map_timm_byobnet(state: Mapping[str, torch.Tensor], scale_pos_embed: bool = False) -> tuple[dict, list[str]]:
    """timm byobnet keys renamed to ours (tables rescaled); returns (mapped, unmapped keys)."""
    mapped, unmapped = {}, []
    for key, value in state.items():
        if key.startswith("head.fc."):
            mapped["fc." + key.removeprefix("head.fc.")] = value
            continue
        m = _BYOB_BLOCK.match(key)
        new = None
        if m:
            stage, index, rest = int(m.group(1)), m.group(2), m.group(3)
            for theirs, ours in _BYOB_PARTS:
                if rest.startswith(theirs):
                    new = f"layer{stage + 1}.{index}.{ours}{rest[len(theirs):]}"
                    if theirs.startswith("self_attn.pos_embed."):
                        value = value * pos_embed_factor(value.shape[1], scale_pos_embed)
                    break
        if new is None:
            unmapped.append(key)
        else:
            mapped[new] = value
    return mapped, unmapped


def map_state_dict(state: Mapping[str, torch.Tensor], source: str = "auto",
                   scale_pos_embed: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A foreign state dict in our names: (mapped tensors, source keys with no mapping)."""
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    if source == "auto":
        source = detect_source(state)
    if source == "timm-byobnet":
        return map_timm_byobnet(state, scale_pos_embed)
    return dict(state), []


def convert_weights(
    src: str | os.PathLike,
    out: str | os.PathLike,
    model: str,
    *,
    source: str = "auto",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    img_size: int | Sequence[int] | None = None,
    scale_pos_embed: bool = False,
    strict: bool = False,
    **overrides: Any,
) -> LoadReport:
    """Read a torchvision / timm checkpoint (``.pth`` / ``.pt`` / ``.safetensors``), fill the
    registered ``model`` with what fits, and write it with its metadata to ``out``.

    ``num_classes`` defaults to the checkpoint's classifier (0: no classifier) and a classifier of
    another size is left at its initialisation. ``class_names`` default to the ImageNet names for
    1000 classes. With ``strict`` every tensor of the model must come from the checkpoint.
    ``overrides`` are :class:`~botnet.models.ModelConfig` fields (e.g. ``bot_shortcut_act=False``).
    """
    from botnet.models import create_model

    src = Path(src)
    state = load_state_dict(src)
    mapped, unmapped = map_state_dict(state, source, scale_pos_embed)
    if num_classes is None:
        num_classes = int(mapped["fc.weight"].shape[0]) if "fc.weight" in mapped else 0
    net = create_model(model, num_classes=num_classes, img_size=img_size, **overrides)
    adapt_position_tables(mapped, net)
    report = load_backbone_weights(net, mapped, include_classifier=True)
    report.skipped = unmapped + report.skipped
    if not report.loaded:
        raise UserError(f"{src}: no tensor of this checkpoint fits {model!r} (source {source!r}); "
                        "is it the right file and model?")
    if strict and report.missing:
        raise UserError(f"{src}: {len(report.missing)} tensors of {model!r} are not in the checkpoint "
                        f"(--strict): {', '.join(report.missing[:8])}{'...' if len(report.missing) > 8 else ''}")
    if class_names is None and num_classes == 1000:
        class_names = imagenet_class_names()
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names for a classifier of {num_classes} classes")
    meta: dict[str, Any] = {
        "task": "cls", "img_size": list(net.cfg.input_size), "crop_pct": 0.875,
        "mean": list(net.default_cfg["mean"]), "std": list(net.default_cfg["std"]),
        "converted_from": {"file": src.name, "source": source, "loaded": len(report.loaded),
                           "left_at_init": report.missing[:50], "skipped": report.skipped[:50]},
    }
    if class_names is not None:
        meta["class_names"] = list(class_names)
    save_weights(net, out, meta)
    return report


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped with torchvision, no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)
