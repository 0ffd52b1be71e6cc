"""Counting and timing: parameters, multiply-adds, latency and throughput.

Multiply-adds are counted by ``torch.utils.flop_counter`` (FLOPs / 2), not by hand. Two notes:

- torch does not count the CPU fused attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward); we register their cost
  with torch's own SDPA formulas.
- Counts use the paper's formulation of the attention (q.k, attention.v and the small q.R
  products), i.e. every MHSA runs its "bias" path while counting. The "fold" path computes the
  same function with a wider head dim (d + H + W) to stay on the fused kernel, and the "chunked"
  path recomputes its scores in the backward; those are implementation costs, not the model's.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils import flop_counter

from botnet.engine.evaluate import autocast
from botnet.layers.attention import MHSA2d

_aten = torch.ops.aten


def _register_cpu_sdpa_flops() -> None:
    fwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    registry = flop_counter.flop_registry
    if fwd is not None and fwd not in registry:
        @flop_counter.register_flop_formula(fwd)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if bwd is not None and bwd not in registry:
        @flop_counter.register_flop_formula(bwd)
        def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args,
                               out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_sdpa_flops()


@contextlib.contextmanager
def attention_impl(model: nn.Module, impl: str) -> Iterator[None]:
    """Temporarily switch every MHSA2d in ``model`` to ``impl`` (one of ``ATTN_IMPLS``)."""
    layers = [m for m in model.modules() if isinstance(m, MHSA2d)]
    saved = [m.attn_impl for m in layers]
    for m in layers:
        m.attn_impl = impl
    try:
        yield
    finally:
        for m, s in zip(layers, saved):
            m.attn_impl = s


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: tuple[int, int], batch: int = 1, backbone_only: bool = False,
               backward: bool = False) -> int:
    """Multiply-adds of one forward (and backward) pass at ``size`` = (H, W).

    Counted on a copy of the model on the meta device: shapes only, no arithmetic, so counting a
    1024 x 1024 backbone takes a moment rather than a real forward pass."""
    model = copy.deepcopy(model).to("meta")
    x = torch.randn(batch, 3, *size, device="meta")
    was_training = model.training
    model.train(backward)
    try:
        with attention_impl(model, "bias"), flop_counter.FlopCounterMode(display=False) as counter:
            with torch.set_grad_enabled(backward):
                out = model.forward_features(x) if backbone_only else model(x)
                if backward:
                    loss = sum(o.float().mean() for o in out.values()) if isinstance(out, dict) else out.mean()
                    loss.backward()
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass
class Timing:
    mode: str  # "infer" or "train"
    dtype: str
    batch: int
    latency_ms: float
    images_per_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(model: nn.Module, size: tuple[int, int], batch: int, dtype: torch.dtype, train: bool = False,
               device: torch.device | str = "cpu", warmup: int = 2, iters: int = 3,
               channels_last: bool = True, backbone_only: bool = False) -> Timing:
    """Median wall time of a forward (inference) or forward+backward (train) step.

    Two untimed calls first: the first bf16 calls on CPU also pack weights and pick kernels."""
    device = torch.device(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, *size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train(train)
    fn = model.forward_features if backbone_only else model

    def step():
        with autocast(device, dtype), torch.set_grad_enabled(train):
            out = fn(x)
            if train:
                loss = sum(o.float().mean() for o in out.values()) if isinstance(out, dict) else out.float().mean()
                loss.backward()
        if train:
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return Timing("train" if train else "infer", str(dtype).replace("torch.", ""), batch,
                  median * 1000, batch / median)


def paper_table() -> list[dict]:
    """Our parameter and multiply-add counts of every paper model beside the paper's figures
    (arXiv 2101.11605: Table 1 for the 1024 x 1024 backbones, the ImageNet tables for the S1 / T
    models). Counted on the meta device: no memory is allocated."""
    from botnet.models import create_model
    from botnet.models.presets import PAPER_FIGURES

    rows = []
    for name, size, params_m, gmacs, backbone in PAPER_FIGURES:
        with torch.device("meta"):  # shapes are all that counting needs
            model = create_model(name)
        rows.append(dict(model=name, input=size, backbone_only=backbone, params_m=count_params(model) / 1e6,
                         paper_params_m=params_m, paper_gmacs=gmacs,
                         gmacs=count_macs(model, (size, size), backbone_only=backbone) / 1e9))
    return rows
