"""DDP and synchronized BatchNorm on the detection model, as the paper trains Mask R-CNN (arXiv
2101.11605, section 4.1: synchronized BatchNorm across the accelerators): part of ``gpu_check.py``.

Each case spawns ``world`` processes; every rank builds ``build_maskrcnn(norm="syncbn")`` once the
process group exists, prepares it as a training run does (``botnet.engine.parts.prepare_model``:
BatchNorm synchronized or not, the device, channels_last), wraps it in DDP and takes one SGD step
under bf16 autocast on its own image. Rank 0 gathers per rank: the number of SyncBatchNorm layers,
a checksum of the parameters after the step (DDP: equal on every rank), and the stem BatchNorm's
running mean (equal across ranks exactly when BatchNorm is synchronized: several processes on
CUDA; PyTorch's SyncBatchNorm runs on CUDA only, so on the CPU each process keeps its own
statistics, and one process has nothing to synchronize with).

One device holds two ranks only with gloo (NCCL takes one rank per device), so on one GPU the
synchronization is checked with gloo on CUDA tensors, and NCCL, the trainer's CUDA backend, with
one rank.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from botnet.detection.config import DetectionConfig
from botnet.detection.maskrcnn import build_maskrcnn
from botnet.detection.task import DetectionTask
from botnet.engine.distributed import DistInfo
from botnet.engine.parts import prepare_model


def _worker(rank: int, world: int, backend: str, device_type: str, init_file: str, out_file: str, size: int):
    from det_step import make_batch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    # channels_last 1x1 conv weights: DDP's bucket strides differ in size-1 dims only (as the trainer)
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    device = torch.device("cpu")
    if device_type == "cuda":  # one rank per device where there are enough, else all on device 0
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # the same initial weights on every rank
    # small heads: this checks the distributed set-up, not the model
    model = build_maskrcnn("botnet_tiny", num_classes=80, norm="syncbn", canvas=size, fpn_channels=32,
                           rpn_batch_size=64, rpn_pre_nms_train=200, rpn_post_nms_train=100, box_batch_size=64,
                           box_representation=64, mask_head_channels=(32,))
    cfg = DetectionConfig()  # norm syncbn, channels_last: the paper's recipe
    task = DetectionTask(cfg, [str(i) for i in range(80)])
    model = prepare_model(model, task, cfg, DistInfo(rank, world), device).train()
    n_sync = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device_type == "cuda" else None)
    images, targets = make_batch(2, size, device)  # rank r trains on image r
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        losses = ddp(images[rank:rank + 1], targets[rank:rank + 1])
    sum(loss.float() for loss in losses.values()).backward()
    optimizer.step()
    stem_bn = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    mine = torch.stack([sum(p.detach().double().sum() for p in model.parameters()),
                        stem_bn.running_mean.double().sum()]).to(device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    if rank == 0:
        every = torch.stack(every).cpu()
        with open(out_file, "w") as f:
            json.dump({"backend": backend, "world": world, "device": device_type, "sync_bn_layers": n_sync,
                       "params_equal": bool((every[:, 0] == every[0, 0]).all()),
                       "bn_stats_equal": bool((every[:, 1] == every[0, 1]).all()),
                       "loss": float(sum(v.detach().float() for v in losses.values()))}, f)
    dist.destroy_process_group()


def run_case(backend: str, world: int, device_type: str, size: int) -> dict:
    """One spawned DDP step; returns rank 0's summary and whether it is what this setup should give."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.json")
        mp.spawn(_worker, args=(world, backend, device_type, init_file, out_file, size), nprocs=world, join=True)
        with open(out_file) as f:
            res = json.load(f)
    synced = device_type == "cuda" and world > 1  # as a training run decides (prepare_model)
    res["expected"] = (res["params_equal"] and (res["sync_bn_layers"] > 0) == synced
                       and (world == 1 or res["bn_stats_equal"] == synced))
    return res


def cases(device_type: str) -> list[tuple[str, int]]:
    if device_type != "cuda":
        return [("gloo", 2)]
    if torch.cuda.device_count() >= 2:
        return [("nccl", 2)]
    return [("gloo", 2), ("nccl", 1)]
