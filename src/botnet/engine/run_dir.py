"""What a run folder holds, and who may write there.

A folder holds a run when any of :data:`RUN_FILES` (or a step checkpoint) is in it: the one test
(:func:`holds_run`) that keeps a new run, or a resumed run moved to another folder, from writing
over a run, finished or not. While a run writes there the folder is locked (:class:`RunLock`), so
that a second run started on it is refused instead of mixing its files with the first one's.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from botnet.engine import distributed as du
from botnet.engine.checkpoint import CHECKPOINT_DIR, list_step_checkpoints, run_dir_of
from botnet.errors import UserError
from botnet.io import check_output_dir, remove_stale_tmp

#: files that show a folder holds a run: any one of them (a run killed before its first
#: checkpoint has config.yaml; a finished run whose checkpoints were deleted, its weights and logs)
RUN_FILES = ("config.yaml", "metrics.csv", "metrics.json", "model.safetensors", "best.safetensors", CHECKPOINT_DIR)
LOCK_FILE = ".run.lock"


def holds_run(folder: str | os.PathLike) -> list[str]:
    """The run files in ``folder`` (step checkpoints and :data:`RUN_FILES`); empty if none. The
    one test of "this folder holds a run", for new runs and resumed ones alike."""
    folder = Path(folder)
    found = [str(p.relative_to(folder)) for p in list_step_checkpoints(folder)]
    return found + [name for name in RUN_FILES if (folder / name).exists()]


def finished_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``metrics.json`` of a run that finished (and kept its weights), else None."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").is_file():
        return None
    try:
        summary = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("finished") is True else None


def prepare_run_dir(out_dir: str | os.PathLike, resume_from: str | os.PathLike | None) -> None:
    """Check a run folder before any work starts, and tidy it.

    A new run must not start in a folder that holds one (:func:`holds_run`); a resumed run may
    continue in its own folder or in a new one, but not in a folder that holds another run (the
    two runs' checkpoints and logs would mix). Temporary files left by writes that a kill
    interrupted are removed."""
    out_dir = Path(out_dir)
    found = holds_run(out_dir)
    if resume_from is None:
        if found:
            raise UserError(f"{out_dir} already holds a run ({', '.join(found[:4])}); continue it with --resume "
                            f"{out_dir}, or choose another output folder (or delete these files)")
    else:
        source = run_dir_of(resume_from)
        if found and out_dir.resolve() != source.resolve():
            raise UserError(
                f"--out {out_dir} holds another run ({', '.join(found[:4])}); continuing {source} there would mix "
                f"two runs' checkpoints and logs. Continue it in its own folder (--resume {source} without --out) "
                "or in an empty folder")
    remove_stale_tmp(out_dir)
    remove_stale_tmp(out_dir / CHECKPOINT_DIR)


class RunLock:
    """An exclusive lock on a run folder while one run writes there: the file :data:`LOCK_FILE`
    under ``fcntl.flock``, holding the process id and host name for the message of a run that is
    refused. The system drops the lock of a process that dies, so the file a killed run leaves is
    taken over (saying whose it was); a released lock is deleted."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def _holder(self, fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"process {int(info['pid'])} on {info['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "an unknown process"

    def acquire(self) -> "RunLock":
        run_dir = self.path.parent
        for _ in range(8):  # a lock released (and deleted) while we opened it: open the new one
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise UserError(f"cannot create the lock {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise UserError(f"{run_dir} is in use by another run ({holder}); wait for it to end or choose "
                                f"another --out (if no such run is going on, delete {self.path})") from None
            try:
                current = os.stat(self.path).st_ino
            except OSError:
                current = None
            if current != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            if os.fstat(fd).st_size:
                print(f"{self.path}: taking over the lock of {self._holder(fd)}, which is no longer running",
                      file=sys.stderr)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
            self.fd = fd
            return self
        raise UserError(f"{run_dir}: could not take the lock {self.path}; another run is starting there")

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # before the lock is dropped, so no one locks a deleted file
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def hold_run_dir(out_dir: str | os.PathLike, resume_from: str | os.PathLike | None,
                 main: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` for one run: the main process checks that it can be written
    (:func:`~botnet.io.check_output_dir`), locks it (:class:`RunLock`) and checks what it holds
    (:func:`prepare_run_dir`), alone, so that no process reads the files the main one starts
    writing. Its refusal is raised on every process, so that none waits for the others; a folder
    made here and left empty is removed when the run is refused."""
    out_dir = Path(out_dir)
    lock, made, error = RunLock(out_dir), not out_dir.exists(), None
    try:
        if main:
            try:
                check_output_dir(out_dir)
                lock.acquire()
                prepare_run_dir(out_dir, resume_from)
            except UserError as e:
                error = str(e)
        error = du.all_gather_objects(error)[0]
        if error is not None:
            raise UserError(error)
        yield
    finally:
        lock.release()
        if made and main:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty
