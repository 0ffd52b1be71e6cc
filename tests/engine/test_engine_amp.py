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
