"""The whole-model sections of ``gpu_check.py`` (5 to 8) and its measuring helpers."""
from __future__ import annotations

import time

import torch

import backbones as bb
import common
import det_step as ds
from botnet.models import create_model, get_model_config

BF16 = torch.bfloat16
#: the paper's comparison (arXiv 2101.11605, figure 1 and table 7): BoTNet-S1 T3..T7 at their sizes,
#: EfficientNet B4..B7 at theirs
PAPER = [("botnet_s1_t3", None), ("botnet_s1_t4", None), ("botnet_s1_t5", None), ("botnet_s1_t6", None),
         ("botnet_s1_t7", None), ("efficientnet_b4", 380), ("efficientnet_b5", 456), ("efficientnet_b6", 528),
         ("efficientnet_b7", 600)]


def peak_mb(step, device) -> float:
    """Peak device memory of one call above what was allocated before (CUDA; nan on the CPU)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def largest_alloc_mb(step, device) -> float:
    """The most memory any one op allocated (net, its own) during one call: an N x N tensor shows here."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, profile_memory=True) as prof:
        step()
    field = "self_device_memory_usage" if device.type == "cuda" else "self_cpu_memory_usage"
    return max(getattr(e, field) for e in prof.events()) / 2**20


def timed(fns: dict, cfg, device) -> dict[str, float]:
    return {k: common.median_ms(v) for k, v in common.alternate(fns, cfg["rounds"], cfg["warmup"], device).items()}


def run_backbones(args, cfg, device):
    size, batch = cfg["canvas"], cfg["bb_batch"]
    steps = {n: bb.make_step(*bb.prepare(n, size, batch, device, True), True, backbone=True)
             for n in ("resnet50", "botnet50")}
    med = timed(steps, cfg, device)
    mem = {n: peak_mb(s, device) for n, s in steps.items()}
    ratio = med["resnet50"] / med["botnet50"]
    rows = [[n, med[n], 1000 * batch / med[n], mem[n]] for n in steps]
    text = (f"forward_features at {size} x {size}, batch {batch}, bf16, channels_last, training\n\n"
            + common.markdown_table(["backbone", "step ms", "img/s", "peak MB"], rows)
            + f"\n\nBoT50 / R50 throughput: {ratio:.2f}")
    return text, {"median_ms": med, "peak_mb": mem}, [("BoT50 training throughput >= 0.85x R50", ratio >= 0.85,
                                                         f"{ratio:.2f}x")]


def run_maskrcnn(args, cfg, device):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from botnet.detection.maskrcnn import build_maskrcnn

    size, batch, cl = cfg["det_canvas"], cfg["det_batch"], torch.channels_last
    models = {"botnet50-fpn (ours)": build_maskrcnn("botnet50", 80, canvas=size).to(memory_format=cl),
              "torchvision r50-fpn": maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81,
                                                           min_size=size, max_size=size)}
    images, targets = ds.make_batch(batch, size, device)
    steps = {k: ds.make_step(m.to(device).train(), images, targets, BF16) for k, m in models.items()}
    med = timed(steps, cfg, device)
    mem = {k: peak_mb(s, device) for k, s in steps.items()}
    rows = [[k, med[k], mem[k]] for k in steps]
    return (f"batch {batch} x 3 x {size} x {size}, bf16 autocast, from scratch\n\n"
            + common.markdown_table(["model", "step ms", "peak MB"], rows), {"median_ms": med, "peak_mb": mem}, [])


def _classifier_step(name: str, size: int, batch: int, cfg, device) -> tuple[float, float]:
    """(median ms, peak MB) of one bf16 channels_last training step of a classifier."""
    import timm

    model = timm.create_model(name) if name.startswith("efficientnet") else create_model(name)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    step = bb.make_step(model, x, True, backbone=False)
    return timed({name: step}, cfg, device)[name], peak_mb(step, device)


def run_paper(args, cfg, device):
    rows, data = [], {}
    for name, size in PAPER:
        size = cfg["paper_size"] or size or get_model_config(name).img_size[0]
        batch, ms, mem = cfg["paper_batch"], float("nan"), float("nan")
        while batch >= 1:
            try:
                ms, mem = _classifier_step(name, size, batch, cfg, device)
                break
            except torch.OutOfMemoryError:
                batch //= 2
            torch.cuda.empty_cache()  # after the except block let the failed step's tensors go
        per_img = ms / batch if batch else float("nan")  # (batch 0: out of memory at batch 1)
        data[name] = {"size": size, "batch": batch, "step_ms": ms, "ms_per_img": per_img, "peak_mb": mem}
        rows.append([name, size, batch, ms, per_img, mem])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    per = {n: d["ms_per_img"] for n, d in data.items()}
    t7 = per["efficientnet_b7"] / per["botnet_s1_t7"]
    ts, bs = [n for n, _ in PAPER[:4]], [n for n, _ in PAPER[5:8]]
    matrix = [[t] + [per[b] / per[t] for b in bs] for t in ts]
    text = (f"forward + backward, bf16, channels_last, batch {cfg['paper_batch']} (halved on out-of-memory)\n\n"
            + common.markdown_table(["model", "input", "batch", "step ms", "ms / image", "peak MB"], rows)
            + f"\n\nT7 @ {data['botnet_s1_t7']['size']} vs B7 @ {data['efficientnet_b7']['size']}: {t7:.2f}x faster per "
            "image (paper, TPU-v3: 1.64x)\n\nSpeed-up of each T over "
            "each B (B ms per image / T ms per image)\n\n" + common.markdown_table(["", *bs], matrix))
    return text, {"models": data, "t7_vs_b7": t7}, [("T7 faster than B7 per image (paper: 1.64x)", t7 > 1, f"{t7:.2f}x")]


def run_compile(args, cfg, device):
    model, x = bb.prepare(cfg["compile_model"], cfg["canvas"], cfg["bb_batch"], device, True)
    eager = bb.make_step(model, x, True, backbone=True)
    model.forward_features = torch.compile(model.forward_features, fullgraph=True)
    t0 = time.perf_counter()
    compiled = bb.make_step(model, x, True, backbone=True)
    compiled()
    first = time.perf_counter() - t0
    med = timed({"eager": eager, "compiled": compiled}, cfg, device)
    return (common.markdown_table([f"{cfg['compile_model']} training step", "ms"], [[k, v] for k, v in med.items()])
            + f"\n\nfirst compiled call (compilation): {first:.0f} s", {"median_ms": med, "compile_s": first},
            [("the backbone compiles as one graph (fullgraph) and trains", True, f"{med['eager'] / med['compiled']:.2f}x")])
