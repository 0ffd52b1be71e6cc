"""The training loop on a toy task: outputs, exact resume, accumulation, faults."""
import copy
import csv
import json

import pytest
import torch
from safetensors.torch import load_file
from toy_task import ToyTask, toy_config

from botnet.engine import NonFiniteLossError, read_metrics_csv, train
from botnet.engine.checkpoint import list_step_checkpoints, load_checkpoint
from botnet.errors import UserError


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics_csv(run_dir / "metrics.csv") if r["kind"] == "train"]


def test_run_folder_contents(tmp_path):
    cfg = toy_config(**{"ema.enabled": "true", "log.tensorboard": "true", "log.every_steps": 2, "checkpoint.keep_last": 2})
    summary = train(ToyTask(), cfg, tmp_path)
    assert (tmp_path / "config.yaml").read_text().count("every_steps: 2") == 1
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [int(r["step"]) for r in train_rows] == list(range(2, 25, 2))
    assert {"step", "epoch", "loss", "lr", "throughput", "loss_ce", "val_acc"} <= set(rows[0])
    assert [int(r["step"]) for r in rows if r["kind"] == "eval"] == [8, 16, 24]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == summary and metrics["finished"] and metrics["step"] == 24
    assert metrics["val_acc"] > 0.9 and metrics["best_val_acc"] >= metrics["val_acc"]
    assert all(isinstance(v, (int, float, bool)) for v in metrics.values())  # flat
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in list_step_checkpoints(tmp_path)] == ["step_00000020.pt", "step_00000024.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000024.pt")  # weights_only=True
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "rng", "step"} <= set(state)
    assert (tmp_path / "checkpoints" / "best.pt").exists()
    # the exported weights are the EMA copy, the one that was evaluated
    exported = load_file(str(tmp_path / "model.safetensors"))
    for k, v in state["ema"].items():
        if k.startswith("module."):
            torch.testing.assert_close(exported[k.removeprefix("module.")], v)


@pytest.mark.parametrize("stop_at, workers", [(10, 0), (13, 2)])
def test_resume_continues_bit_for_bit(tmp_path, stop_at, workers):
    # docs/training.md: "--resume ... continues bit-for-bit ... a resumed run logs the same losses as
    # one that never stopped". BatchNorm statistics, dropout, accumulation, EMA, random augmentation
    # in data-loading processes: every one draws on state the checkpoint must carry.
    kw = {"train.batch_size": 4, "train.accum_steps": 2, "ema.enabled": "true", "checkpoint.every_steps": 5,
          "train.workers": workers}
    full, part = tmp_path / "full", tmp_path / "part"
    train(ToyTask(dropout=0.3, norm=True), toy_config(**kw), full)
    train(ToyTask(dropout=0.3, norm=True), toy_config(**kw, **{"train.stop_after_steps": stop_at}), part)
    assert losses(part)[-1][0] == stop_at
    train(ToyTask(dropout=0.3, norm=True), toy_config(**kw), part, resume=part)
    a, b = losses(full), losses(part)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 25))
    assert b == a  # every logged loss, to the last bit
    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert wa.keys() == wb.keys() and any("running_mean" in k for k in wa)
    for k in wa:
        assert torch.equal(wb[k], wa[k]), k
    ca = load_checkpoint(full / "checkpoints" / "step_00000024.pt")
    cb = load_checkpoint(part / "checkpoints" / "step_00000024.pt")
    for k in ca["model"]:
        assert torch.equal(cb["model"][k], ca["model"][k]), k
    for state_a, state_b in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(state_b[k], state_a[k]) for k in state_a)


def test_resume_from_a_checkpoint_file_into_a_new_folder(tmp_path):
    train(ToyTask(), toy_config(**{"train.stop_after_steps": 8}), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "step_00000008.pt"
    summary = train(ToyTask(), toy_config(), tmp_path / "b", resume=ckpt)
    assert summary["step"] == 24
    assert [s for s, _ in losses(tmp_path / "b")] == list(range(1, 25))  # the log is carried over


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    train(ToyTask(), toy_config(**{"train.batch_size": 8, "train.epochs": 1}), tmp_path / "big")
    train(ToyTask(), toy_config(**{"train.batch_size": 2, "train.accum_steps": 4, "train.epochs": 1}), tmp_path / "acc")
    big, acc = load_file(str(tmp_path / "big" / "model.safetensors")), load_file(str(tmp_path / "acc" / "model.safetensors"))
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-4, atol=1e-5)


def test_clipping_and_adamw_and_bf16_run(tmp_path):
    cfg = toy_config(**{"train.clip_grad_norm": 0.5, "optim.name": "adamw", "optim.lr": 0.01, "amp.dtype": "bf16",
                        "train.channels_last": "true", "schedule.name": "step", "schedule.milestones": "[1, 2]",
                        "train.epochs": 2})
    summary = train(ToyTask(), cfg, tmp_path)
    assert summary["finished"] and summary["lr"] == pytest.approx(0.01 * 0.1)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    # checkpoints every 4 steps; the loss turns NaN on step 7
    with pytest.raises(NonFiniteLossError, match=r"step 7\b") as info:
        train(ToyTask(nan_at_call=7), toy_config(), tmp_path)
    assert "step_00000004.pt" in str(info.value)
    assert [p.name for p in list_step_checkpoints(tmp_path)] == ["step_00000004.pt"]
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000004.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert losses(tmp_path)[-1][0] == 6  # the log holds every good step


def test_fresh_run_into_an_existing_run_is_refused(tmp_path):
    train(ToyTask(), toy_config(**{"train.epochs": 1}), tmp_path)
    with pytest.raises(UserError, match="--resume"):
        train(ToyTask(), toy_config(**{"train.epochs": 1}), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint"):
        train(ToyTask(), toy_config(), tmp_path / "empty", resume=tmp_path / "empty")


def test_batchnorm_follows_the_device():
    """SyncBatchNorm only where PyTorch runs it (CUDA); on the CPU a model converted to it
    elsewhere trains with plain BatchNorm2d holding the same state."""
    from torch import nn

    from botnet.engine.distributed import batchnorm_for_device

    torch.manual_seed(0)

    def model():
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)))
        net[1].running_mean.uniform_()
        net[1].weight.requires_grad_(False)
        return net

    synced = batchnorm_for_device(model(), torch.device("cuda"), sync=True)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == 2
    unsynced = batchnorm_for_device(model(), torch.device("cuda"), sync=False)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in unsynced.modules())
    x = torch.randn(2, 3, 8, 8)
    synced.train()(x)  # no process group: SyncBatchNorm computes plain BatchNorm
    reference = {k: v.clone() for k, v in synced.state_dict().items()}
    expected = copy.deepcopy(synced)(x)
    plain = batchnorm_for_device(synced, torch.device("cpu"), sync=True)
    kinds = [type(m) for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [nn.BatchNorm2d, nn.BatchNorm2d]
    assert not plain[1].weight.requires_grad and plain[1].bias.requires_grad and plain.training
    state = plain.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    torch.testing.assert_close(plain(x), expected)


def test_a_batch_larger_than_the_training_set_names_the_batch_size_that_fits(tmp_path):
    from botnet.engine import train
    from botnet.errors import UserError
    from tests.engine.toy_task import ToyTask, toy_config

    task = ToyTask()
    n = len(task.build_datasets()[0])
    with pytest.raises(UserError, match=f"the training set has {n} images: fewer than one optimizer step .*"
                                        f"set --batch-size \\(train.batch_size\\) to at most {n}$"):
        train(task, toy_config(**{"train.batch_size": n + 1}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
