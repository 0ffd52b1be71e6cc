"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or a kill during the write leaves the previous file (if any) untouched and at most a
stray ``.tmp`` file, never a half-written result; :func:`remove_stale_tmp` clears those when the
same run starts again. A written file gets the permissions ``open()`` would give it: those of the
file it replaces, else ``0o666`` less the umask. A write that the system refuses (permissions,
a full disk, a file where a folder should be) is a :class:`~botnet.errors.UserError` naming the
file, and :func:`check_output_dir` finds such problems before any work starts.

A command's outputs go through one :class:`Outputs`: it refuses to write over any of the
command's inputs, and on failure removes only the files the command itself created.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

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


def _os_error_behind(e: BaseException) -> OSError | None:
    """The OSError that caused ``e``: libraries (torch.save) report a failed write as their own
    error raised while handling the file object's OSError."""
    for _ in range(8):
        if e is None or isinstance(e, UserError):
            return None
        if isinstance(e, OSError):
            return e
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
    return None


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
        except Exception as e:
            cause = _os_error_behind(e)
            if cause is None:
                raise
            raise UserError(f"cannot write {path}: {_why(cause)}") from None
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


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
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


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class Outputs:
    """The files one command writes, kept apart from the files and folders it reads.

    :meth:`claim` refuses a path that is one of ``inputs`` (the same file, also through a link or
    another name) and notes whether the path is new; :meth:`rollback` (or leaving the ``with``
    block by an exception) removes the new ones only, never a file that was there before. An
    output ``folder`` must be writable (:func:`check_output_dir`) and must not be an input folder:
    the outputs would land among the inputs and replace those of the same name."""

    def __init__(self, inputs: Iterable[str | os.PathLike | None] = (), folder: str | os.PathLike | None = None,
                 flag: str = "--out"):
        self.flag = flag
        self.new: dict[Path, None] = {}  # in the order claimed; a dict, for thousands of files
        self._inputs: dict[tuple[int, int], Path] = {}
        for p in inputs:
            ident = _identity(p) if p is not None else None
            if ident is not None:
                self._inputs.setdefault(ident, Path(p))
        self.folder = None if folder is None else check_output_dir(folder, flag)
        same = self.input_at(self.folder) if self.folder is not None else None
        if same is not None:
            raise UserError(f"{flag} {self.folder}: this is an input folder ({same}); the outputs would be written "
                            "among the inputs (and over those of the same name). Choose another folder")

    def input_at(self, path: str | os.PathLike) -> Path | None:
        """The input that ``path`` names, if any."""
        ident = _identity(path)
        return self._inputs.get(ident) if ident is not None else None

    def claim(self, path: str | os.PathLike) -> Path:
        """``path``, checked not to be an input, to be written by this command."""
        path = Path(path)
        same = self.input_at(path)
        if same is not None:
            named = "" if same == path else f" {same}"
            raise UserError(f"cannot write {path}: it is this command's input{named}; choose another {self.flag}")
        if path not in self.new and not os.path.lexists(path):
            self.new[path] = None
        return path

    def write_json(self, path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
        return write_json(self.claim(path), obj, indent=indent)

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        return write_text(self.claim(path), text)

    def rollback(self) -> None:
        """Remove what this command created (and nothing else)."""
        for path in reversed(list(self.new)):
            with contextlib.suppress(OSError):
                path.unlink()
        self.new.clear()

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self.rollback()
