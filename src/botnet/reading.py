"""Opening a user's file: the checks every reader makes first.

A path that names a FIFO, a socket or a device blocks or streams forever when opened, so a reader
(images, COCO JSON, YAML recipes and dataset files, class-name lists, weights) first asks
:func:`regular_file`, which looks with ``stat`` (never opens) and refuses anything but a regular
file by name. Text is read as UTF-8 and refused by name, with the position of the first bad byte,
when it is not; YAML is refused when nested deeper than a person writes a config.

Images have one more limit: PIL refuses to decode more than twice ``Image.MAX_IMAGE_PIXELS``
(about 179 million pixels) from a small file, a decompression bomb; :mod:`botnet.data.images`
turns that into a message naming the file.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from botnet.errors import UserError

#: deeper YAML is refused: configs are a few levels deep, and PyYAML's recursion would exhaust the stack
MAX_YAML_DEPTH = 100


class NotARegularFile(UserError, OSError):
    """A path that exists but is no regular file (a FIFO, a socket, a device, a folder). An
    ``OSError`` too, so that the datasets skip it like any other unreadable file."""


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it names a regular file (through links); :class:`FileNotFoundError` if nothing is
    there, :class:`NotARegularFile` (naming the kind) for a FIFO, socket, device or folder."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}") from None
    except OSError as e:
        raise NotARegularFile(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{path}: this is {file_kind(mode)}, not a regular file, so it is not read "
                              f"({'an' if what[:1] in 'aeiou' else 'a'} {what} must be a file)")
    return path


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of a regular file; a missing file, another kind of file or bytes that are
    not UTF-8 are a :class:`UserError` naming the file."""
    try:
        data = regular_file(path, what).read_bytes()
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    except NotARegularFile:
        raise
    except OSError as e:
        raise UserError(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: this {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at position "
                        f"{e.start}); save it as UTF-8") from None


def _depth(text: str) -> int:
    """How deep brackets and braces nest in ``text`` (an upper bound on YAML flow nesting; block
    nesting is bounded by the indentation a line can hold)."""
    deepest = level = 0
    for ch in text:
        if ch in "[{":
            level += 1
            deepest = max(deepest, level)
        elif ch in "]}":
            level = max(level - 1, 0)
    return deepest


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refusing text nested deeper than :data:`MAX_YAML_DEPTH` and
    naming ``where`` (a file, a flag) in every error."""
    import yaml

    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    if max(_depth(text), indent // 2) > MAX_YAML_DEPTH:
        raise UserError(f"{where}: nested deeper than {MAX_YAML_DEPTH} levels; not a config")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{where}: not valid YAML: {e}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read") from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """:func:`load_yaml` of :func:`read_text`."""
    return load_yaml(read_text(path, what), str(path))
