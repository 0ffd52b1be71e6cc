"""How a training run uses the CPU's cores: torch's intra-op threads, the loader processes, and
how OpenMP threads wait for work.

On a CPU that other jobs share, these three add up: intra-op threads (one per core by default)
plus loader processes plus the other job's threads, with idle OpenMP threads spinning rather than
sleeping, can leave a step many times slower than on an idle machine. Each candidate is a
:class:`CpuSetting`; ``benchmarks/busy_cpu.py`` runs the demo's first steps alone and beside a
competing job under each (BENCHMARKS.md), and :data:`DEFAULT` names the one every run takes.

A user's own choice always wins: ``OMP_NUM_THREADS`` in the environment keeps torch's thread count,
``OMP_WAIT_POLICY`` its wait policy, and ``BOTNET_CPU=NAME`` picks another setting for one run.
This module imports nothing heavy, so a launcher can read a setting's environment before torch
starts (OpenMP reads its wait policy once, when torch is loaded).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSetting:
    name: str
    #: torch's intra-op threads (None: torch's default, one per core)
    threads: int | None = None
    #: at most this many loader processes, whatever train.workers asks (None: no cap)
    max_workers: int | None = None
    #: OpenMP threads sleep when idle (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0) instead of spinning
    passive_wait: bool = False

    def environment(self) -> dict[str, str]:
        """The variables a process must start with for this setting (wait policy, thread count)."""
        env = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"} if self.passive_wait else {}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


#: the candidates benchmarks/busy_cpu.py measures, the first being the behaviour before it
SETTINGS = {s.name: s for s in (
    CpuSetting("torch"),
    CpuSetting("threads1", threads=1, max_workers=0),
    CpuSetting("threads2", threads=2, max_workers=0),
    CpuSetting("threads1_workers1", threads=1, max_workers=1),
    CpuSetting("threads1_workers2", threads=1, max_workers=2),
    CpuSetting("threads2_workers1", threads=2, max_workers=1),
    CpuSetting("threads2_workers2", threads=2, max_workers=2),
    CpuSetting("passive", passive_wait=True),
    CpuSetting("threads1_passive", threads=1, max_workers=0, passive_wait=True),
    CpuSetting("threads2_passive", threads=2, max_workers=0, passive_wait=True),
)}

#: the setting of every run: set it to the winner of benchmarks/busy_cpu.py (BENCHMARKS.md)
DEFAULT = "torch"

ENV_VAR = "BOTNET_CPU"


def cpu_setting(name: str | None = None) -> CpuSetting:
    """The setting called ``name``, else ``$BOTNET_CPU``, else :data:`DEFAULT`."""
    from botnet.errors import UserError

    name = name or os.environ.get(ENV_VAR) or DEFAULT
    if name not in SETTINGS:
        raise UserError(f"{ENV_VAR}={name}: unknown CPU setting; one of {', '.join(SETTINGS)}")
    return SETTINGS[name]


def apply_cpu_setting(setting: CpuSetting) -> None:
    """Set torch's thread count, unless ``OMP_NUM_THREADS`` chose it. The wait policy cannot
    change in a running process: a setting with ``passive_wait`` takes effect in processes started
    with its :meth:`~CpuSetting.environment` (the benchmark's runs, ``OMP_WAIT_POLICY=PASSIVE botnet ...``)."""
    import torch

    if setting.threads is not None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(setting.threads)


def capped_workers(requested: int, setting: CpuSetting | None = None) -> int:
    """``requested`` loader processes, at most the setting's cap."""
    setting = setting or cpu_setting()
    return requested if setting.max_workers is None else min(requested, setting.max_workers)
