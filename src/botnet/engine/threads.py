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
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSetting:
    name: str
    #: torch's intra-op threads (None: torch's default, one per core; "free": the cores no other
    #: job keeps busy when the run starts, at least one)
    threads: int | str | None = None
    #: at most this many loader processes, whatever train.workers asks (None: no cap)
    max_workers: int | None = None
    #: OpenMP threads sleep when idle (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0) instead of spinning
    passive_wait: bool = False

    def environment(self) -> dict[str, str]:
        """The variables a process must start with for this setting (wait policy, thread count)."""
        env = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"} if self.passive_wait else {}
        if isinstance(self.threads, int):
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


#: the candidates benchmarks/busy_cpu.py measures, the first being the behaviour before it
SETTINGS = {s.name: s for s in (
    CpuSetting("torch"),
    CpuSetting("free", threads="free"),
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
DEFAULT = "free"

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

    if setting.threads is None or "OMP_NUM_THREADS" in os.environ:
        return
    if setting.threads != "free":
        torch.set_num_threads(setting.threads)
        return
    cores = usable_cores()
    free = free_cores(cores)
    threads = cores if free is None else max(1, min(cores, free))
    torch.set_num_threads(threads)
    if threads < cores:
        print(f"botnet: the CPU is busy ({threads} of {cores} cores free): {threads} intra-op thread"
              f"{'s' if threads > 1 else ''} (OMP_NUM_THREADS=N sets another count)", file=sys.stderr)


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_cores(cores: int, interval: float = 0.1) -> int | None:
    """How many of ``cores`` no other job keeps busy: the machine's idle share of CPU time over
    ``interval`` seconds (``/proc/stat``), in cores. None where the kernel does not say (not Linux).
    Sampled now rather than read from the load average, which lags a job that just started by a
    minute."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return round((os.cpu_count() or cores) * (idle1 - idle0) / (total1 - total0))


def capped_workers(requested: int, setting: CpuSetting | None = None) -> int:
    """``requested`` loader processes, at most the setting's cap."""
    setting = setting or cpu_setting()
    return requested if setting.max_workers is None else min(requested, setting.max_workers)
