"""The CPU setting of a run: one named choice of threads, loader processes and wait policy."""
import pytest
import torch

from botnet.engine import threads
from botnet.engine.loader import usable_workers
from botnet.errors import UserError


def test_the_default_is_a_known_setting_and_botnet_cpu_picks_another(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    assert threads.cpu_setting() is threads.SETTINGS[threads.DEFAULT]
    monkeypatch.setenv(threads.ENV_VAR, "threads1_workers1")
    assert threads.cpu_setting().threads == 1 and threads.cpu_setting().max_workers == 1
    monkeypatch.setenv(threads.ENV_VAR, "threads9")
    with pytest.raises(UserError, match="BOTNET_CPU=threads9: unknown CPU setting; one of torch, "):
        threads.cpu_setting()


def test_a_setting_caps_loader_processes_and_sets_threads_unless_the_user_did(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "threads1_workers1")
    assert usable_workers(8) == 1 and usable_workers(0) == 0
    monkeypatch.setenv(threads.ENV_VAR, "torch")
    assert usable_workers(1) == 1  # no cap: the request (at most the CPUs)
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        threads.apply_cpu_setting(threads.SETTINGS["threads2"])
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins
        threads.apply_cpu_setting(threads.SETTINGS["threads1"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_passive_wait_is_in_the_environment_a_process_starts_with():
    env = threads.SETTINGS["threads1_passive"].environment()
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "1"}
    assert threads.SETTINGS["torch"].environment() == {}
