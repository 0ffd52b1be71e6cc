"""What a run writes about itself: ``metrics.csv``, ``metrics.json``, TensorBoard events,
``curves.png`` and the console progress. Only the main rank creates one of these; the others get
a :class:`NullRunLog`.

``metrics.csv`` has one row per logged training step (``kind=train``: step, epoch, loss, lr,
throughput and the task's other loss terms) and one per evaluation (``kind=eval``: the task's
metrics prefixed ``val_``). The file is rewritten atomically on each flush, so a column that first
appears later (the first evaluation) is added to every row.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from botnet.io import atomic_path, write_json, write_text

BASE_COLUMNS = ["kind", "step", "epoch", "loss", "lr", "throughput"]


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.csv with numbers parsed (empty cells dropped)."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    continue
                try:
                    row[k] = int(v) if k == "step" else float(v)
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows


def mlflow_installed(on: bool) -> str | None:
    """The config rule of ``log.mlflow``: on only where mlflow can be imported."""
    if on and importlib.util.find_spec("mlflow") is None:
        return 'needs the mlflow package: pip install "botnet[mlflow]" (or mlflow-skinny)'
    return None


class MlflowLog:
    """The run's metrics in MLflow's local file store, ``RUN/mlruns`` (no server; ``mlflow ui
    --backend-store-uri RUN/mlruns`` shows it): the config as parameters, training and validation
    rows as metrics by step. A resumed run continues its MLflow run. mlflow is imported only here."""

    def __init__(self, run_dir: Path, params: dict[str, Any], resumed: bool):
        from mlflow.tracking import MlflowClient

        # MLflow 3 keeps the file store (no server, no database package) behind this opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
        found = self.client.get_experiment_by_name("botnet")
        experiment = found.experiment_id if found else self.client.create_experiment("botnet")
        earlier = self.client.search_runs([experiment], max_results=1, order_by=["attributes.start_time DESC"])
        if resumed and earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment, run_name=run_dir.resolve().name).info.run_id
            flat = _flatten(params)
            for key in sorted(flat):  # MLflow caps a value at 6000 characters
                self.client.log_param(self.run_id, key, str(flat[key])[:6000])

    def log(self, prefix: str, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{k}", float(v), now, step) for k, v in values.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class RunLog:
    def __init__(self, run_dir: str | Path, total_steps: int, start_step: int = 0, *, tensorboard: bool = True,
                 plot: bool = True, progress: str = "auto", prior_csv: str | Path | None = None,
                 mlflow_params: dict[str, Any] | bool | None = None):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self.plot = plot
        self.rows: list[dict[str, Any]] = []
        prior = Path(prior_csv) if prior_csv is not None else self.csv_path
        if start_step > 0 and prior.exists():
            # a resumed run continues the log (also into a new folder); rows past the checkpoint
            # belong to the abandoned tail of the interrupted run
            self.rows = [r for r in read_metrics_csv(prior) if r.get("step", 0) <= start_step]
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        # beside TensorBoard when log.mlflow is on (a dict: the config, logged as its parameters)
        self.mlflow = MlflowLog(self.run_dir, dict(mlflow_params), start_step > 0) if mlflow_params else None
        self.interactive = progress == "always" or (progress == "auto" and sys.stderr.isatty())
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    # -- per step ------------------------------------------------------------------------------

    def step(self, n: int = 1, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def log_train(self, step: int, epoch: float, values: dict[str, float]) -> None:
        row = {"kind": "train", "step": step, "epoch": round(epoch, 4), **values}
        self.rows.append(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.mlflow is not None:
            self.mlflow.log("train", step, values)

    def log_eval(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        row = {"kind": "eval", "step": step, "epoch": round(epoch, 4), **{f"val_{k}": v for k, v in metrics.items()}}
        self.rows.append(row)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k}", v, step)
        if self.mlflow is not None:
            self.mlflow.log("val", step, metrics)
        self.message(f"step {step} (epoch {epoch:.2f}) eval: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    # -- files -------------------------------------------------------------------------------

    def flush(self) -> None:
        columns = list(BASE_COLUMNS)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.csv_path, buf.getvalue())
        if self.tb is not None:
            self.tb.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self.flush()
        write_json(self.run_dir / "metrics.json", summary)
        if self.plot:
            plot_curves(self.rows, self.run_dir / "curves.png")
        self.close(finished=bool(summary.get("finished")))

    def close(self, finished: bool = False) -> None:
        if self.mlflow is not None:
            self.mlflow.close(finished)
            self.mlflow = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class NullRunLog:
    """Non-main ranks: the same calls, nothing written or shown."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def plot_curves(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss (training, and validation when the task reports one), learning rate, and the other
    validation metrics against the step. Counts (``val_num_*``) are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    val_keys = sorted({k for r in evals for k in r if k.startswith("val_") and not k.startswith("val_num_")})

    def series(rs, key):
        # -1 marks a metric that is undefined for this data (pycocotools: no object of that size)
        pts = [(r["step"], r[key]) for r in rs
               if isinstance(r.get(key), float) and math.isfinite(r[key]) and not (rs is evals and r[key] < 0)]
        return list(zip(*pts)) if pts else None

    fig, (ax_loss, ax_lr, ax_val) = plt.subplots(1, 3, figsize=(15, 4))
    ax_val.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # one colour per metric
    for ax, rs, key, label, style in (
        (ax_loss, train, "loss", "train", "-"),
        (ax_lr, train, "lr", None, "-"),
        *((ax_loss, evals, k, f"val {k[4:]}", "o-") if "loss" in k else (ax_val, evals, k, k[4:], "o-")
          for k in val_keys),
    ):
        xy = series(rs, key)
        if xy:
            ax.plot(*xy, style, label=label)
    for ax, title in ((ax_loss, "loss"), (ax_lr, "learning rate"), (ax_val, "validation")):
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0] and ax is not ax_lr:
            ax.legend(fontsize="small", ncol=2 if ax is ax_val else 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)
