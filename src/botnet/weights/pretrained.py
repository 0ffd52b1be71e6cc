"""Pretrained weights by name: ``create_model(name, pretrained=SOURCE)``, ``--weights SOURCE`` and
``--backbone-weights SOURCE`` (docs/pretrained.md lists every source and what it fills).

A SOURCE is one of

- ``torchvision:ResNet50_Weights.IMAGENET1K_V2`` (any torchvision weights enum): fetched by
  torchvision's weights API into the torch hub cache (``$TORCH_HOME/hub/checkpoints``);
- ``timm:botnet26t_256.c1_in1k`` (timm's BoTNets and ResNets, with or without the tag): resolved by
  timm's pretrained configs, fetched by timm / huggingface_hub into the Hugging Face cache
  (``$HF_HOME/hub``; timm's older URL-only weights: the torch hub cache);
- ``imagenet``: the same-depth torchvision ResNet's current best weights (``DEFAULT``; the paper's
  ImageNet initialisation, arXiv 2101.11605, the COCO experiments), or timm's ImageNet weights for
  timm's rows;
- a local ``.pth`` / ``.pt`` / ``.safetensors`` file in our, timm's or torchvision's layout.

Every source is converted on the fly (:mod:`botnet.weights.convert`) and checked against the model
(:func:`botnet.weights.fit.load_mapped_state`). How files are fetched and cached, and what happens
offline: :mod:`botnet.weights.hub`. What ``imagenet`` means for each model is registered beside its
preset row (:mod:`botnet.models.presets`).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from botnet.errors import UserError
from botnet.models import list_models, pretrained_sources
from botnet.weights.convert import to_our_names
from botnet.weights.files import LoadReport, load_state_dict, read_metadata
from botnet.weights.fit import load_mapped_state
from botnet.weights.hub import from_hf_cache, from_torch_hub

PREFIXES = ("torchvision", "timm")


@dataclass
class Fetched:
    """A state dict as its publisher wrote it, and where it came from."""

    state: dict[str, torch.Tensor]
    #: the source and the file read, for reports and errors
    origin: str
    #: "timm", "torchvision" or "auto" (recognised from the keys)
    layout: str = "auto"
    #: our registered model the weights were made for, when known
    arch: str = ""


def torchvision_weight_names() -> list[str]:
    """Every torchvision classification weights name (``ResNet50_Weights.IMAGENET1K_V2``...)."""
    import torchvision

    names = []
    for model in torchvision.models.list_models(module=torchvision.models):
        for w in torchvision.models.get_model_weights(model):
            names.append(f"{type(w).__name__}.{w.name}")
    return names


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"; close matches: {', '.join(close)}" if close else ""


def _resnet_named(enum: str) -> str:
    # our ResNet row that a torchvision ResNet enum's weights were made for ("" when none)
    name = enum.removesuffix("_Weights").lower()
    return name if name.startswith("resnet") and name in list_models() else ""


def _fetch_torchvision(name: str, text: str) -> Fetched:
    import torchvision

    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"{text}: unknown torchvision weights {name!r}{_close(name, torchvision_weight_names())} "
                        "(torchvision's ResNets: ResNet50_Weights, ResNet101_Weights, ResNet152_Weights)") from None
    state, file = from_torch_hub(text, weights.url, lambda: weights.get_state_dict(
        progress=False, weights_only=True, map_location="cpu", check_hash=False))
    arch = _resnet_named(type(weights).__name__)
    return Fetched(state, f"{text} ({file})", "torchvision", arch)


# -- timm ---------------------------------------------------------------------------------------------


def _timm_cfg(name: str, text: str):
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise UserError(f'{text}: timm sources need the timm package (pip install "botnet[timm]")') from None
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:
        cfg, reason = None, str(e)
    else:
        reason = "no such model in timm"
    if cfg is None:
        raise UserError(f"{text}: unknown timm weights ({reason}){_close(name, timm.list_pretrained())}")
    return cfg


def _fetch_timm(name: str, text: str) -> Fetched:
    cfg = _timm_cfg(name, text)
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    arch = cfg.architecture if cfg.architecture in list_models() else ""
    if cfg.hf_hub_id:
        state, file = from_hf_cache(text, cfg.hf_hub_id)
    elif cfg.url:
        from torch.hub import load_state_dict_from_url

        state, file = from_torch_hub(text, cfg.url, lambda: load_state_dict_from_url(
            cfg.url, progress=False, weights_only=True, map_location="cpu"))
    else:
        raise UserError(f"{text}: timm publishes no weights for {full}")
    return Fetched(state, f"{text} ({file})", "timm", arch)


# -- sources ---------------------------------------------------------------------------------------


def imagenet_source_for(name: str) -> str | None:
    """What ``imagenet`` means for the registered model ``name`` (None: nothing): the first source
    registered with it, a torchvision enum's ``DEFAULT`` resolved to the weights it stands for."""
    sources = pretrained_sources(name)
    if not sources:
        return None
    prefix, _, rest = sources[0].partition(":")
    if prefix == "torchvision" and rest.endswith(".DEFAULT"):
        import torchvision

        return f"torchvision:{rest[:-len('DEFAULT')]}{torchvision.models.get_weight(rest).name}"
    return sources[0]


def imagenet_cache_file(name: str) -> tuple[Path, bool] | None:
    """Where a registered model's ``imagenet`` weights are kept in their library's cache, and
    whether they are there now (None: ``imagenet`` names nothing for it). No network call."""
    from botnet.weights.hub import hf_cache_place, hf_cached_file, torch_hub_file

    source = imagenet_source_for(name)
    if source is None:
        return None
    prefix, _, rest = source.partition(":")
    if prefix == "torchvision":
        import torchvision

        file = torch_hub_file(torchvision.models.get_weight(rest).url)
        return file, file.is_file()
    cfg = _timm_cfg(rest, source)
    if cfg.hf_hub_id:
        cached = hf_cached_file(cfg.hf_hub_id)
        return (cached, True) if cached else (hf_cache_place(cfg.hf_hub_id), False)
    file = torch_hub_file(cfg.url)
    return file, file.is_file()


def imagenet_source(model: nn.Module) -> str:
    """:func:`imagenet_source_for` a model, or a :class:`UserError` saying what exists."""
    name = getattr(model, "name", "")
    source = imagenet_source_for(name)
    if source is None:
        known = [n for n in list_models() if pretrained_sources(n)]
        raise UserError(f"'imagenet' has no weights for {name or 'this model'}: it names the weights registered with "
                        f"{', '.join(known)}; name a source (torchvision:..., timm:..., a file)")
    return source


def fetch(source: str | os.PathLike, model: nn.Module | None = None, what: str = "weights") -> Fetched:
    """The state dict a SOURCE names (see the module docstring), read from the cache or fetched."""
    text = str(source).strip()
    if text == "imagenet":
        if model is None:
            raise UserError("'imagenet' names a model's ImageNet weights: give the model too")
        text = imagenet_source(model)
    prefix, sep, rest = text.partition(":")
    if sep and prefix == "torchvision":
        return _fetch_torchvision(rest, text)
    if sep and prefix == "timm":
        return _fetch_timm(rest, text)
    path = Path(text).expanduser()
    if path.is_file():
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        return Fetched(load_state_dict(path), str(path), "auto", str(meta.get("model") or ""))
    if sep and len(prefix) > 1 and "/" not in prefix and "\\" not in prefix:
        raise UserError(f"{text}: unknown weights source {prefix + ':'!r}; a source is torchvision:ENUM.NAME, "
                        "timm:NAME, imagenet or a .pth / .pt / .safetensors file")
    raise UserError(f"{text}: {what} file not found (a {what} source is a .pth / .pt / .safetensors file, "
                    "torchvision:ENUM.NAME, timm:NAME or imagenet)")


def load_fetched(model: nn.Module, fetched: Fetched, *, include_classifier: bool = True, strict: bool = False,
                 layout: str | None = None, scale_pos_embed: bool = False) -> LoadReport:
    """Convert ``fetched`` to ``model``'s names (``layout`` overrides the source's) and load it."""
    layout = fetched.layout if layout in (None, "auto") else layout
    mapped, unmapped = to_our_names(fetched.state, model, layout, scale_pos_embed)
    name = getattr(model, "name", "")
    hint = f"they are for our model {fetched.arch!r}" if fetched.arch and fetched.arch != name else ""
    return load_mapped_state(model, mapped, unmapped, include_classifier=include_classifier, strict=strict,
                             origin=fetched.origin, hint=hint)


def load_pretrained(model: nn.Module, source: str | os.PathLike, *, include_classifier: bool = True,
                    strict: bool = False, scale_pos_embed: bool = False, what: str = "weights") -> LoadReport:
    """Fill ``model`` from a SOURCE and say what was loaded, skipped and left at init.

    ``include_classifier=False`` leaves the classifier alone (detection backbones); a classifier
    whose class count differs is re-initialised and reported. ``strict``: every tensor of the model
    must come from the weights. ``scale_pos_embed``: a timm source built with that option."""
    fetched = fetch(source, model, what)
    return load_fetched(model, fetched, include_classifier=include_classifier, strict=strict,
                        scale_pos_embed=scale_pos_embed)
