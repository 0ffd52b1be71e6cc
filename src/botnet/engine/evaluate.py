"""Evaluation entry shared by the trainer and the ``botnet eval`` commands."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import Dataset

from botnet.engine import distributed as du
from botnet.engine.loader import eval_loader
from botnet.engine.progress import Progress
from botnet.engine.task import Evaluation, Task
from botnet.errors import UserError

#: what ``botnet eval`` writes: a name of its own, so that evaluating into a run folder keeps the
#: run's training metrics.json
EVAL_FILE = "eval.json"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
#: the weights' metadata key of the precision their training run evaluated them in
EVAL_AMP = "eval_amp"
_AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls and convolutions are fast here: a CUDA device with bf16, or a CPU whose
    oneDNN has bf16 kernels (AVX-512 or AMX). On an AVX2-only CPU bf16 is converted in software
    and runs slower than fp32 (benchmarks/demo_step.py measures both)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_amp(device: torch.device, amp: str) -> str:
    """``amp`` with ``"auto"`` replaced by what suits the device: bf16 where it is native, else fp32."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(torch.device(device)) else "fp32"


def weights_amp(device: torch.device, amp: str, metadata: dict) -> str:
    """The precision in which ``botnet eval`` runs weights for ``--amp amp``: ``"auto"`` takes the
    one their run evaluated them in (:data:`EVAL_AMP` in the weights' metadata), so that the same
    weights give the same metrics as the run reported, where the device runs it natively (fp16
    on CUDA, bf16 where :func:`native_bf16`); otherwise, and for older files, :func:`resolve_amp`."""
    recorded = metadata.get(EVAL_AMP)
    if amp != "auto" or recorded not in AMP_DTYPES:
        return resolve_amp(device, amp)
    usable = {"fp32": True, "bf16": native_bf16(device), "fp16": device.type == "cuda"}[recorded]
    return recorded if usable else resolve_amp(device, "auto")


def autocast(device: torch.device, amp: str | torch.dtype):
    """bf16 autocast on CPU or CUDA, fp16 on CUDA, or nothing for fp32 (``amp`` by name or dtype;
    ``"auto"``: see :func:`resolve_amp`)."""
    amp = resolve_amp(device, _AMP_NAMES.get(amp, amp))
    if amp not in AMP_DTYPES:
        raise UserError(f"amp.dtype={amp!r}: expected one of {', '.join(AMP_DTYPES)}")
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype is torch.float16 and device.type != "cuda":
        raise UserError("amp.dtype=fp16 needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str | None = None,
    amp: str = "auto",
    channels_last: bool = False,
) -> Evaluation:
    """Run ``task.evaluate`` over ``dataset`` and return its metrics and predictions, in the
    precision ``amp`` (``"auto"``, as ``botnet eval --amp``: bf16 where the device runs it natively,
    else fp32).

    Under torch.distributed each rank reads its shard and the task reduces across ranks; every
    rank returns the same metrics. ``model`` is put in eval mode (and moved to ``device``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    loader = eval_loader(
        dataset,
        batch_size,
        rank=du.rank(),
        world_size=du.world_size(),
        workers=workers,
        collate_fn=task.collate_fn(train=False),
        pin_memory=device.type == "cuda",
    )
    progress = Progress("evaluation", len(dataset), enabled=du.rank() == 0)

    def counted():
        for batch in loader:
            yield batch
            progress.update(task.batch_size(batch) * du.world_size())

    try:
        with autocast(device, amp):
            return task.evaluate(model, counted(), device)
    finally:
        model.train(was_training)
