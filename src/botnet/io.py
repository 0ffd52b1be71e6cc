"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or a kill during the write leaves the previous file (if any) untouched and at most a
stray ``.tmp`` file, never a half-written result; :func:`remove_stale_tmp` clears those when the
same run starts again. A written file gets the permissions ``open()`` would give it: those of the
file it replaces, else ``0o666`` less the umask. A write that the system refuses (permissions,
a full disk, a file where a folder should be) is a :class:`~botnet.errors.UserError` naming the
file, and :func:`check_output_dir` finds such problems before any work starts.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from botnet.errors import UserError

#: the names ``atomic_path`` gives its temporary files: ``.<name>.<8 random characters>.tmp``
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)  # replacing a file keeps its permissions
    except OSError:
        return 0o666 & ~current_umask()


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise UserError(f"cannot create the folder {folder}: {blocker} is a file") from None
    except OSError as e:
        raise UserError(f"cannot create the folder {folder}: {_why(e)}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder (give a file name)")
    _make_folder(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {_why(e)}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, _file_mode(path))
            os.replace(tmp, path)
        except OSError as e:
            raise UserError(f"cannot write {path}: {_why(e)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be written, before any work starts: one that is a
    file, lies under a file, or is (or would be created in) a folder without write permission.
    Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: this is a file, not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the folder is" if existing == path else f"the folder would be created in {existing}, which is"
        raise UserError(f"{flag} {path}: {what} not writable")
    return path


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_path` writes left in ``folder`` (not
    in sub-folders); returns them. Only call when no write into ``folder`` can be under way."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if _TMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed
