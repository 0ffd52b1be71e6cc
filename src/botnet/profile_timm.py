"""Our counts of timm's BoTNets beside timm's own (``botnet profile --timm``).

Three figures per model at 256 x 256: our row's params and multiply-adds (counted by
:mod:`botnet.profile`), timm's published ones (``TIMM_FIGURES``: timm's results tables), and, when
timm is installed, timm's model counted by the same counter (built on the meta device: nothing is
allocated or downloaded). Ours equal timm's model exactly except ``eca_botnext26ts_256``, whose q/k
are zero-padded to v's width (see ``botnet.models.presets``); timm's published multiply-adds come
from another counter and differ by under 1 %.
"""
from __future__ import annotations

import torch

from botnet.models import create_model, pretrained_sources
from botnet.models.presets import TIMM_FIGURES
from botnet.profile import count_macs, count_params


def timm_table() -> list[dict]:
    try:
        import timm
    except ImportError:
        timm = None
    rows = []
    for name, size, params_m, gmacs, top1 in TIMM_FIGURES:
        weights = next((s.removeprefix("timm:") for s in pretrained_sources(name) if s.startswith("timm:")), None)
        with torch.device("meta"):
            ours = create_model(name)
            theirs = timm.create_model(name, pretrained=False) if timm is not None else None
        row = dict(model=name, input=size, params_m=count_params(ours) / 1e6,
                   gmacs=count_macs(ours, (size, size)) / 1e9, timm_params_m=params_m, timm_gmacs=gmacs,
                   timm_weights=weights, timm_top1=top1)
        if theirs is not None:
            row.update(timm_model_params_m=count_params(theirs) / 1e6,
                       timm_model_gmacs=count_macs(theirs, (size, size)) / 1e9)
        rows.append(row)
    return rows


def format_timm_table(rows: list[dict]) -> list[str]:
    lines = [f"{'model':20s} {'input':>5s} {'params M':>9s} {'timm':>6s} {'timm model':>10s}   "
             f"{'G M.Adds':>8s} {'timm':>5s} {'timm model':>10s}   timm weights (ImageNet top-1)"]
    for r in rows:
        model_p = f"{r['timm_model_params_m']:10.2f}" if "timm_model_params_m" in r else f"{'-':>10s}"
        model_g = f"{r['timm_model_gmacs']:10.2f}" if "timm_model_gmacs" in r else f"{'-':>10s}"
        weights = f"{r['timm_weights']} ({r['timm_top1']:.2f})" if r["timm_weights"] else "none published"
        lines.append(f"{r['model']:20s} {r['input']:5d} {r['params_m']:9.2f} {r['timm_params_m']:6.2f} {model_p}   "
                     f"{r['gmacs']:8.2f} {r['timm_gmacs']:5.2f} {model_g}   {weights}")
    lines.append("timm: timm's published figures; timm model: timm's model counted here (same counter as ours). "
                 "Params include the 1000-way classifier.")
    return lines
