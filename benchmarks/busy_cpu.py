"""Training throughput on a CPU that another job shares: the demo's first steps (the
``demo_shapes`` recipe, from scratch) under each CPU setting of ``botnet.engine.threads``
(torch's intra-op threads, loader processes, OpenMP's passive wait), alone and beside a competing
job that keeps two threads busy with matmuls (as another user's training would). Each run is a
fresh process, so that the thread count and the wait policy are set before torch starts.

    python benchmarks/busy_cpu.py                  # results/busy_cpu.md, .json: 40 steps, 2 rounds
    python benchmarks/busy_cpu.py --quick          # 4 steps, 1 round, 2 settings: a smoke run only

A setting's "loader processes" is its cap (``max_workers``), the number a recipe that asks for
more gets; the demo's own recipe loads in the main process (0). img/s counts the steps after
the first two (the first steps build caches and, with amp auto, compare bf16 with fp32 once per
machine). Candidates alternate within each round, so each meets the machine in the same state;
each figure is the median over rounds. The setting every run takes is ``DEFAULT`` in
``botnet/engine/threads.py``: one that loses nothing alone and keeps at least half its idle rate
beside the job (BENCHMARKS.md says which and why).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common
from botnet.engine.threads import DEFAULT, ENV_VAR, SETTINGS

#: the competing job: two threads of matmuls, spinning OpenMP waits (torch's default), forever
COMPETITOR = ("import torch\ntorch.set_num_threads({threads})\na = torch.randn(768, 768)\n"
              "while True:\n    a = torch.tanh(a @ a)\n")
SKIP_STEPS = 2


def child(run_dir: str, data_dir: str, steps: int, workers: int) -> None:
    """One training run of the demo recipe (runs in its own process, started by :func:`one_run`)."""
    from botnet.data.shapes import shapes_dataset_paths
    from botnet.detection.api import train_detector
    from botnet.detection.config import DetectionConfig
    from botnet.engine.config import resolve_run_config

    data = shapes_dataset_paths(Path(data_dir))
    cfg = resolve_run_config(DetectionConfig, "demo_shapes", [
        f"data.train_images={data['train_images']}", f"data.train_ann={data['train_ann']}",
        f"data.val_images={data['val_images']}", f"data.val_ann={data['val_ann']}",
        f"train.stop_after_steps={steps}", f"train.workers={workers}", "train.device=cpu",
        "log.every_steps=1", "log.tensorboard=false", "log.plot=false", "log.progress=never",
        "eval.every_epochs=0", "checkpoint.every_steps=0"])
    train_detector(cfg, run_dir)


def one_run(name: str, data_dir: Path, run_dir: Path, steps: int) -> dict:
    """img/s of the steps after the first SKIP_STEPS, and the run's wall time."""
    from botnet.engine import read_metrics_csv

    setting = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env.update(setting.environment(), **{ENV_VAR: name})
    workers = setting.max_workers or 0
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", str(run_dir), str(data_dir), str(steps), str(workers)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    rows = [r for r in read_metrics_csv(run_dir / "metrics.csv") if r["kind"] == "train" and r["step"] > SKIP_STEPS]
    # each row is one step (log.every_steps=1) and its throughput that step's img/s: the run's img/s
    # is the images over the seconds, batch / throughput seconds per step
    batch = batch_size()
    seconds = sum(batch / r["throughput"] for r in rows)
    shutil.rmtree(run_dir)
    return {"img_s": len(rows) * batch / seconds, "wall_s": wall, "workers": workers}


def batch_size() -> int:
    from botnet.detection.config import DetectionConfig
    from botnet.engine.config import resolve_run_config

    return resolve_run_config(DetectionConfig, "demo_shapes", []).train.batch_size


class Competitor:
    """The competing job, started and stopped around one measured run."""

    def __init__(self, threads: int):
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        env.pop("OMP_WAIT_POLICY", None)
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITOR.format(threads=self.threads)], env=env)
        time.sleep(2.0)  # running at full speed before the measured run starts
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=40, help="training steps per run (default 40, the demo's first)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--competitor-threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="4 steps, 1 round, two settings: proves the script runs")
    p.add_argument("--out", help="report name under results/ (default busy_cpu, busy_cpu_quick with --quick)")
    args = p.parse_args()
    if args.child:
        run_dir, data_dir, steps, workers = args.child
        return child(run_dir, data_dir, int(steps), int(workers))
    if args.quick:
        args.steps, args.rounds, args.settings = 4, 1, ["torch", "threads1_passive"]
    if args.steps <= SKIP_STEPS:
        p.error(f"--steps must be above {SKIP_STEPS} (the first steps are not counted)")
    from botnet.data.shapes import make_shapes_dataset

    info = common.machine(torch.device("cpu"))
    work = Path(tempfile.mkdtemp(prefix="botnet-busy-cpu-"))
    try:
        make_shapes_dataset(work / "data", train=args.steps * batch_size(), val=4, img_size=128, seed=0)
        samples: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.rounds):
            for name in args.settings:
                for where in ("alone", "busy"):
                    run_dir = work / f"{name}_{where}_{r}"
                    if where == "busy":
                        with Competitor(args.competitor_threads):
                            result = one_run(name, work / "data", run_dir, args.steps)
                    else:
                        result = one_run(name, work / "data", run_dir, args.steps)
                    samples.setdefault((name, where), []).append(result)
                    print(f"round {r + 1}: {name} {where}: {result['img_s']:.2f} img/s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {key: statistics.median(s["img_s"] for s in runs) for key, runs in samples.items()}
    rows = []
    for name in args.settings:
        s = SETTINGS[name]
        alone, busy = med[(name, "alone")], med[(name, "busy")]
        rows.append([name + (" (default)" if name == DEFAULT else ""), s.threads or f"torch's ({info['cores']})",
                     samples[(name, "alone")][0]["workers"], "yes" if s.passive_wait else "no", alone, busy,
                     busy / alone])
    best = max(args.settings, key=lambda n: med[(n, "busy")])
    text = (f"**the demo's first {args.steps} training steps** (`demo_shapes` recipe, batch {batch_size()}, img/s of "
            f"steps {SKIP_STEPS + 1}-{args.steps}; median of {args.rounds} alternating rounds), alone and beside a "
            f"{args.competitor_threads}-thread matmul job\n\n"
            + common.markdown_table(["setting", "intra-op threads", "loader processes", "passive wait", "img/s alone",
                                     "img/s beside the job", "beside / alone"], rows)
            + f"\n\nMost img/s beside the job: **{best}** ({med[(best, 'busy')]:.2f} img/s, "
            f"{med[(best, 'busy')] / med[(best, 'alone')]:.2f} of its own idle rate).")
    data = {"steps": args.steps, "rounds": args.rounds, "competitor_threads": args.competitor_threads,
            "median_img_s": {f"{n} {w}": v for (n, w), v in med.items()},
            "samples": {f"{n} {w}": runs for (n, w), runs in samples.items()}, "best_beside_job": best}
    common.write_report(args.out or ("busy_cpu_quick" if args.quick else "busy_cpu"),
                        "Training beside another job (cpu)", info, [text], data)


if __name__ == "__main__":
    main()
