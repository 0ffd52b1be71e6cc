"""Data loaders that make a run reproducible and resumable.

Training: each rank reads its share of one seeded permutation per epoch (``DistributedSampler``
semantics), so ``world`` processes with batch ``b`` see exactly the images one process with batch
``world * b`` sees. Each sample's random augmentation is drawn from a generator seeded by
(seed, epoch, index), so it does not depend on worker count, rank or where the epoch was resumed.
A resumed epoch starts at its first unseen batch without loading the ones before it.

Evaluation: rank ``r`` reads items ``r, r + world, ...``; no padding, so no image is counted twice.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from botnet.engine.threads import capped_workers


class ResumableSampler(Sampler):
    """A ``DistributedSampler`` (seeded shuffle, ``drop_last``) that yields ``(index, epoch)``
    pairs and can start ``skip`` samples into the epoch."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int, seed: int, shuffle: bool = True):
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i, index in enumerate(self.inner):
            if i >= self.skip:
                yield index, self.epoch

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class SeededSamples(Dataset):
    """Wraps a dataset so that ``ds[(index, epoch)]`` runs the transforms under a generator seeded
    by (seed, epoch, index). The global RNG of the calling process is left as it was."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        # only the CPU generator is saved, seeded and restored: torch.random.fork_rng / torch.manual_seed
        # also queue a (lazy) seeding of every accelerator backend, a cost paid on every sample
        # (BENCHMARKS.md, "Figures once quoted in code comments")
        state = torch.get_rng_state()
        # large prime multipliers keep (seed, epoch, index) triples from colliding
        torch.default_generator.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_000_007 + index) % 2**63)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of the dataset, in order."""

    def __init__(self, dataset: Dataset, rank: int, world_size: int):
        self.n, self.rank, self.world = len(dataset), rank, world_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def _generator(seed: int) -> torch.Generator:
    # an explicit generator keeps DataLoader from drawing its worker base seed from the global RNG
    return torch.Generator().manual_seed(seed)


def usable_workers(requested: int) -> int:
    """``requested`` loading processes, at most as many as the CPUs this process may run on (more
    only compete for the same cores, and torch warns on every run). Augmentations are seeded per
    sample, so the count changes no result. The CPU setting (:mod:`botnet.engine.threads`) may cap it lower."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(capped_workers(requested), available))


def train_loader(dataset: Dataset, batch_size: int, *, rank: int, world_size: int, seed: int, workers: int,
                 collate_fn=None, pin_memory: bool = False) -> DataLoader:
    sampler = ResumableSampler(dataset, rank, world_size, seed)
    return DataLoader(
        SeededSamples(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=usable_workers(workers),
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        generator=_generator(seed),
    )


def eval_loader(dataset: Dataset, batch_size: int, *, rank: int = 0, world_size: int = 1, workers: int = 0,
                collate_fn=None, pin_memory: bool = False) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(dataset, rank, world_size),
        num_workers=usable_workers(workers),
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=False,
        generator=_generator(0),
    )
