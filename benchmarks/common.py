"""Shared helpers of the benchmark scripts: machine description, alternating timing, tables.

Timing protocol: every candidate runs once per round, rounds repeat, and each candidate's median
over rounds is reported. Candidates therefore share whatever else loads the machine at the time,
and ratios between them are taken within one process. Tables are written as Markdown under
``benchmarks/results/`` together with the exact command and the machine they came from.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from botnet.io import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def cpu_model() -> str:
    """lscpu's model name with its family / model numbers (one "AMD EPYC" name covers several
    generations), and the vector units that decide fp32 against bf16: AVX-512 (bf16), AMX."""
    info = _lscpu()
    name = info.get("Model name") or platform.processor() or "unknown CPU"
    if "CPU family" in info and "Model" in info:
        name += f" (family {info['CPU family']} model {info['Model']})"
    flags = set(info.get("Flags", "").split())
    units = [u for u, f in (("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile")) if f in flags]
    if flags:
        name += ", " + (" ".join(units) if units else "AVX2 only" if "avx2" in flags else "no AVX2")
    return name


def cpu_limits() -> dict:
    """What torch runs on this CPU: ATen's kernel level, whether oneDNN has native bf16, and any
    cap set through the environment (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA: how an AVX2-only
    machine is emulated on a newer one)."""
    out = {"capability": torch.backends.cpu.get_cpu_capability(),
           "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    out.update({k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)})
    return out


def machine(device: torch.device) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if device.type == "cpu":
        info.update(cpu_limits())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command() -> str:
    """The command line, the script named from the repository root (``python benchmarks/X.py ...``)
    wherever it was started from."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), RESULTS.parent.parent)
    caps = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)]
    return " ".join(caps + ["python", script] + sys.argv[1:])


def setup_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device,
              clock: str = "wall") -> dict[str, list[float]]:
    """Seconds per call of each candidate, run round-robin ``rounds`` times after ``warmup`` calls.

    ``clock="cpu"`` reads this thread's CPU time instead of wall time: with one intra-op thread it
    measures the work done rather than the share of the machine other processes left over."""
    read = time.thread_time if clock == "cpu" else time.perf_counter
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = read()
            fn()
            sync(device)
            samples[name].append(read() - t0)
    return samples


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(name: str, title: str, info: dict, sections: list[str], data: dict | None = None) -> Path:
    """Write ``results/NAME.md`` (and ``NAME.json`` with the raw numbers); print the Markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    head = [f"## {title}", "", f"Command: `{command()}`", "",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    text = "\n".join(head + [s + "\n" for s in sections])
    path = RESULTS / f"{name}.md"
    write_text(path, text)
    if data is not None:
        write_text(RESULTS / f"{name}.json",
                   json.dumps({"name": name, "machine": info, "command": command(), **data}, indent=1))
    print(text)
    return path


def run_parts(args, name: str, title: str, parts: dict[int, Callable[[torch.device], tuple[str, dict]]]) -> Path:
    """Run the parts selected by ``args.part`` on ``args.device`` (threads from ``args.threads``)
    and write them as one report, ``results/NAME_partNN[_cuda].md``."""
    setup_threads(args.threads)
    device = torch.device(args.device)
    info = machine(device)
    sections, data = [], {}
    for number in sorted(args.part):
        text, data[f"part{number}"] = parts[number](device)
        sections.append(text)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    numbers = "".join(str(n) for n in sorted(args.part))
    return write_report(f"{name}_part{numbers}{suffix}", f"{title} ({device.type})", info, sections, data)


def matmul_peak_tflops(device: torch.device, dtype=torch.bfloat16, n: int = 4096, rounds: int = 5) -> float:
    """The best of ``rounds`` n^3 ``torch.mm`` calls in ``dtype``, in TFLOP/s (2 n^3 per call)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    samples = alternate({"mm": lambda: torch.mm(a, b)}, rounds, 2, device)["mm"]
    return 2 * n**3 / min(samples) / 1e12  # best round: the peak the machine can reach


def top_ops(step, rows: int) -> list[list]:
    """The ``rows`` ops with the most self CPU time in one call of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key[:60], e.count, e.self_cpu_time_total / 1000, 100 * e.self_cpu_time_total / total]
            for e in events[:rows]]


def top_ops_table(step, rows: int) -> str:
    return markdown_table(["op", "calls", "self ms", "% of step"], top_ops(step, rows))
