"""Tests that need their own processes: torchrun with two ranks, and a SIGKILL mid-checkpoint."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_task import ToyTask, toy_config

from botnet.engine import read_metrics_csv, train
from botnet.engine.checkpoint import list_step_checkpoints, load_checkpoint

pytestmark = pytest.mark.slow  # new processes: torchrun with two ranks, a killed run

HERE = Path(__file__).resolve().parent


def _script(tmp_path, body: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n" + textwrap.dedent(body))
    return path


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_torchrun_two_ranks_equal_one_process_with_the_global_batch(tmp_path):
    # 2 ranks x batch 2 x 2 accumulation steps == 1 process x batch 8
    script = _script(tmp_path, """
        from toy_task import ToyTask, toy_config
        from botnet.engine import train
        cfg = toy_config(**{"train.batch_size": 2, "train.accum_steps": 2, "train.epochs": 1, "ema.enabled": "true"})
        train(ToyTask(), cfg, sys.argv[1])
    """)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(ddp_dir)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    train(ToyTask(), toy_config(**{"train.batch_size": 8, "train.epochs": 1, "ema.enabled": "true"}), single_dir)

    for name in ("model.safetensors", "best.safetensors"):
        a, b = load_file(str(single_dir / name)), load_file(str(ddp_dir / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    raw_a = load_checkpoint(single_dir / "checkpoints" / "step_00000008.pt")["model"]
    raw_b = load_checkpoint(ddp_dir / "checkpoints" / "step_00000008.pt")["model"]
    for k in raw_a:
        torch.testing.assert_close(raw_b[k], raw_a[k], rtol=1e-4, atol=1e-5)
    # the logged losses are the mean over all ranks, i.e. over the global batch
    la = [r["loss"] for r in read_metrics_csv(single_dir / "metrics.csv") if r["kind"] == "train"]
    lb = [r["loss"] for r in read_metrics_csv(ddp_dir / "metrics.csv") if r["kind"] == "train"]
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-4, atol=1e-5)


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_and_resume_works(tmp_path):
    # the step-8 checkpoint gets half its bytes on disk, then the process is killed
    script = _script(tmp_path, """
        import io, os, signal
        import torch
        from toy_task import ToyTask, toy_config
        from botnet.engine import train

        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):
            # checkpoints are written to an open file (its name: the temporary one)
            if os.path.basename(getattr(f, "name", f)).startswith(".step_00000008.pt"):
                buf = io.BytesIO()
                real_save(obj, buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save
        train(ToyTask(), toy_config(**{"checkpoint.keep_last": 1}), sys.argv[1])
    """)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), str(run_dir)], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert [p.name for p in list_step_checkpoints(run_dir)] == ["step_00000004.pt"]
    assert load_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")["step"] == 4
    assert list((run_dir / "checkpoints").glob(".step_00000008.pt.*.tmp"))  # the half-written file

    summary = train(ToyTask(), toy_config(**{"checkpoint.keep_last": 1}), run_dir, resume=run_dir)
    assert summary["finished"] and summary["step"] == 24
    reference = tmp_path / "reference"
    train(ToyTask(), toy_config(**{"checkpoint.keep_last": 1}), reference)
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
