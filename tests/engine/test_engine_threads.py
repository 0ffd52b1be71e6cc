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


def test_the_free_setting_takes_the_cores_no_other_job_keeps_busy(monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "free_cores", lambda cores: 0)  # another job on every core
        threads.apply_cpu_setting(threads.SETTINGS["free"])
        assert torch.get_num_threads() == 1
        assert "the CPU is busy (1 of 4 cores free): 1 intra-op thread (OMP_NUM_THREADS=N" in capsys.readouterr().err
        monkeypatch.setattr(threads, "free_cores", lambda cores: 3)
        threads.apply_cpu_setting(threads.SETTINGS["free"])
        assert torch.get_num_threads() == 3 and "3 of 4 cores free" in capsys.readouterr().err
        for idle in (4, 9, None):  # an idle machine, or a kernel that does not say: every core, no line
            monkeypatch.setattr(threads, "free_cores", lambda cores, idle=idle: idle)
            threads.apply_cpu_setting(threads.SETTINGS["free"])
            assert torch.get_num_threads() == 4 and capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/stat"), reason="reads /proc/stat")
def test_free_cores_reads_the_idle_share_of_the_machine():
    import os

    free = threads.free_cores(threads.usable_cores(), interval=0.05)
    assert free is not None and 0 <= free <= (os.cpu_count() or 1)
