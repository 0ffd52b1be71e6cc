"""torch.distributed helpers. A run started by ``torchrun`` finds RANK / WORLD_SIZE / LOCAL_RANK
in its environment; a plain ``python`` run is a world of one and never touches a process group."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from botnet.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: True when this module created the process group (and so must destroy it)
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise UserError(f"train.device={name!r}: expected auto, cpu or cuda")
    return torch.device("cpu")


def setup(backend: str = "auto", device: torch.device | None = None) -> DistInfo:
    """Join the process group described by the environment (if any)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "auto":
        on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        backend = "nccl" if on_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def batchnorm_for_device(model: torch.nn.Module, device: torch.device, sync: bool) -> torch.nn.Module:
    """BatchNorm as ``device`` runs it: with ``sync`` on CUDA, every BatchNorm made a
    ``SyncBatchNorm``; off CUDA, where PyTorch's ``SyncBatchNorm`` does not run, any ``SyncBatchNorm``
    (a model converted elsewhere) made a plain ``BatchNorm2d`` again, with its parameters and
    statistics, each process keeping its own. A training run calls this once, in
    :func:`botnet.engine.parts.prepare_model`."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync else model
    if isinstance(model, torch.nn.SyncBatchNorm):
        plain = torch.nn.BatchNorm2d(model.num_features, model.eps, model.momentum, model.affine,
                                     model.track_running_stats)
        plain.load_state_dict(model.state_dict())
        plain.train(model.training)
        for p_old, p_new in zip(model.parameters(), plain.parameters()):
            p_new.requires_grad_(p_old.requires_grad)
        return plain
    for name, child in model.named_children():
        model.add_module(name, batchnorm_for_device(child, device, sync))
    return model


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place, returns ``t``); a no-op in a world of one."""
    if is_enabled():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_enabled():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one in a world of one)."""
    if not is_enabled():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_enabled():
        dist.barrier()
