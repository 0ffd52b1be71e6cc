
import pytest
import torch
from torch import nn

from botnet.engine.config import OptimConfig, ScheduleConfig
from botnet.engine.ema import ModelEma
from botnet.engine.optim import build_optimizer, build_scheduler, effective_lr, lr_factor, param_groups


def test_cosine_with_linear_warmup():
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, warmup_start_factor=0.0, min_lr_ratio=0.1)
    f = [lr_factor(s, 110, 10, cfg) for s in range(111)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone after warmup


def test_step_schedule_milestones_as_fractions_follow_the_run_and_warmup_is_capped():
    cfg = ScheduleConfig(name="step", milestone_fractions=[2 / 3, 8 / 9], milestones=[1, 2], gamma=0.1,
                         warmup_steps=500, warmup_start_factor=0.0)
    for total in (180, 360):  # decays at 2/3 and 8/9 of any length; the milestones in epochs lose
        f = [lr_factor(s, total, 10, cfg) for s in range(total)]
        assert f[total // 4 - 1] < 1.0 and f[total // 4] == pytest.approx(1.0)  # warmup capped at 1/4
        assert f[total * 2 // 3 - 1] == pytest.approx(1.0) and f[total * 2 // 3] == pytest.approx(0.1)
        assert f[total * 8 // 9] == pytest.approx(0.01)


def test_step_schedule_milestones_in_epochs():
    cfg = ScheduleConfig(name="step", milestones=[8, 11], gamma=0.1)
    spe = 5
    assert lr_factor(8 * spe - 1, 60, spe, cfg) == 1.0
    assert lr_factor(8 * spe, 60, spe, cfg) == pytest.approx(0.1)
    assert lr_factor(11 * spe, 60, spe, cfg) == pytest.approx(0.01)


def test_warmup_epochs_and_scheduler_drives_optimizer():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, OptimConfig(lr=1.0))
    sched = build_scheduler(opt, ScheduleConfig(name="constant", warmup_epochs=1, warmup_start_factor=0.5), 20, 4)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0, 1.0])


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 1e-4)
    assert {p.ndim for p in decay["params"]} == {4, 2}
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])


def test_optimizers_and_lr_scaling():
    model = nn.Linear(2, 2)
    sgd = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, base_batch=256), global_batch=1024)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.4)
    adamw = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3))
    assert isinstance(adamw, torch.optim.AdamW)
    assert effective_lr(OptimConfig(lr=0.1), 4096) == 0.1  # no base_batch: absolute


def test_ema_is_an_exponential_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEma(model, decay=0.5)
    start = [p.detach().clone() for p in model.state_dict().values()]
    expected = start
    for i in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model(torch.randn(4, 3))  # moves the BatchNorm statistics
        d = min(0.5, (1 + i) / (10 + i))
        now = list(model.state_dict().values())
        expected = [e * d + n * (1 - d) if n.is_floating_point() else n for e, n in zip(expected, now)]
        ema.update(model)
    for got, want in zip(ema.module.state_dict().values(), expected):
        torch.testing.assert_close(got, want.to(got.dtype))
    assert not torch.allclose(ema.module[0].weight, model[0].weight.detach())


def test_loading_processes_never_exceed_the_cpus(monkeypatch):
    import os

    from botnet.engine import loader

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [loader.usable_workers(n) for n in (0, 1, 2, 4, 16)] == [0, 1, 2, 2, 2]
    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 1))
    assert loader.train_loader(dataset, 2, rank=0, world_size=1, seed=0, workers=4).num_workers == 2
    assert loader.eval_loader(dataset, 2, workers=4).num_workers == 2
