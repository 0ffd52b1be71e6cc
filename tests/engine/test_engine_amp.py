"""amp.dtype=auto: bf16 where the device runs it natively, fp32 elsewhere."""
import pytest
import torch

import importlib

ev = importlib.import_module("botnet.engine.evaluate")  # the module (botnet.engine.evaluate is also a function)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_what_the_cpu_runs_natively(monkeypatch, native, expected):
    monkeypatch.setattr(ev, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    assert ev.resolve_amp(cpu, "auto") == expected
    assert ev.resolve_amp(cpu, "fp32") == "fp32" and ev.resolve_amp(cpu, "bf16") == "bf16"
    with ev.autocast(cpu, "auto"):
        dtype = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    assert dtype == (torch.bfloat16 if native else torch.float32)


def test_the_cpu_check_agrees_with_onednn():
    assert ev.native_bf16(torch.device("cpu")) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_training_says_which_precision_it_runs_in(tmp_path, capsys, monkeypatch):
    from botnet.engine import train
    from tests.engine.toy_task import ToyTask, toy_config

    monkeypatch.setattr(ev, "native_bf16", lambda device: False)
    train(ToyTask(), toy_config(**{"amp.dtype": "auto", "train.epochs": 1}), tmp_path)
    assert "process(es) on cpu in fp32" in capsys.readouterr().err


ac = importlib.import_module("botnet.engine.amp_choice")


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    """A CPU whose oneDNN has bf16 kernels, and an empty measurement cache."""
    monkeypatch.setattr(ev, "native_bf16", lambda device: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _choose(task, amp="auto", **settings):
    from tests.engine.toy_task import toy_config

    cfg = toy_config(**{"amp.dtype": amp, **settings})
    return ac.choose_training_amp(task, task.build_model(), task.build_datasets()[0], cfg, torch.device("cpu"))


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [(0.10, 0.20, "fp32"), (0.10, 0.12, "bf16"), (0.2, 0.1, "bf16")])
def test_auto_measures_where_the_cpu_has_bf16_and_keeps_fp32_only_when_clearly_faster(
        bf16_cpu, monkeypatch, fp32_s, bf16_s, expected):
    from tests.engine.toy_task import ToyTask

    calls = []

    def timed(*args, **kwargs):
        calls.append(1)
        return {"fp32": fp32_s, "bf16": bf16_s}

    monkeypatch.setattr(ac, "step_times", timed)
    amp, note = _choose(ToyTask())
    assert amp == expected and "measured" in note and len(calls) == 1
    # the same run again: the cached choice, whatever a new measurement would say
    monkeypatch.setattr(ac, "step_times", lambda *a, **k: pytest.fail("measured twice"))
    assert _choose(ToyTask())[0] == expected
    assert str(ac.cache_path()) in _choose(ToyTask())[1]
    # another batch size is another entry
    monkeypatch.setattr(ac, "step_times", timed)
    _choose(ToyTask(), **{"train.batch_size": 4})
    assert len(calls) == 2


def test_auto_does_not_measure_where_the_rule_is_sure(monkeypatch, tmp_path):
    from tests.engine.toy_task import ToyTask

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(ac, "step_times", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(ev, "native_bf16", lambda device: False)
    assert _choose(ToyTask())[0] == "fp32"  # AVX2-only: bf16 in software
    assert _choose(ToyTask(), "bf16") == ("bf16", "")
    assert not (tmp_path / "botnet").exists()


def test_the_measurement_leaves_the_model_and_the_random_state_as_they_were():
    from botnet.engine.checkpoint import rng_state
    from tests.engine.toy_task import ToyTask

    task = ToyTask(norm=True)
    torch.manual_seed(0)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = task.build_datasets()[0]
    state = rng_state()
    times = ac.step_times(task, model, data, 8, torch.device("cpu"))
    assert set(times) == {"fp32", "bf16"} and all(t > 0 for t in times.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())
    after = rng_state()
    assert torch.equal(after["torch"], state["torch"]) and after["python"] == state["python"]
    assert torch.equal(after["numpy"][1], state["numpy"][1])


def test_the_measurement_says_so_first_and_stops_at_its_budget(bf16_cpu, monkeypatch, capsys):
    from tests.engine.toy_task import ToyTask

    task = ToyTask()
    steps = []
    real_step = task.training_step
    monkeypatch.setattr(task, "training_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    assert _choose(task)[0] in ("bf16", "fp32")
    assert "amp auto: timing training steps in bf16 and in fp32 before training" in capsys.readouterr().err
    assert len(steps) == 2 * ac.ROUNDS
    # past its budget, a measurement still times a warm step of each precision, then stops
    steps.clear()
    model, data = task.build_model(), task.build_datasets()[0]
    times = ac.step_times(task, model, data, 8, torch.device("cpu"), budget_s=0)
    assert len(steps) == 4 and set(times) == {"fp32", "bf16"}
    # steps as long as LONG_STEP_S: the first of each counts as it is
    steps.clear()
    monkeypatch.setattr(ac, "LONG_STEP_S", 0.0)
    times = ac.step_times(task, model, data, 8, torch.device("cpu"))
    assert len(steps) == 2 and all(t > 0 for t in times.values())


def test_resume_under_auto_keeps_the_precision_the_checkpoint_recorded(tmp_path, capsys, monkeypatch):
    from botnet.engine import train
    from botnet.engine.checkpoint import load_checkpoint
    from tests.engine.toy_task import ToyTask, toy_config

    cfg = {"amp.dtype": "auto", "train.epochs": 1}
    monkeypatch.setattr(ev, "native_bf16", lambda device: False)
    train(ToyTask(), toy_config(**cfg, **{"train.stop_after_steps": 4}), tmp_path)
    # the same run resumed on a machine where auto would now choose bf16
    monkeypatch.setattr("botnet.engine.trainer.choose_training_amp", lambda *args: ("bf16", " (chosen anew)"))
    capsys.readouterr()
    train(ToyTask(), toy_config(**cfg), tmp_path, resume=tmp_path)
    assert "in fp32 (amp auto, as the checkpoint recorded)" in capsys.readouterr().err
    last = sorted((tmp_path / "checkpoints").glob("step_*.pt"))[-1]
    assert load_checkpoint(last)["amp"] == "fp32"
