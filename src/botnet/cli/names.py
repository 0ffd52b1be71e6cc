"""The flags that name one quantity on every command, and the old spellings they replace.

One name per quantity, as timm's scripts spell them: ``--img-size`` is the input side (a
detector's canvas side), ``--batch-size`` the images per step, ``--set KEY=VALUE`` an override.
An old spelling (``--canvas``, ``--size``, ``--batch``, ``--option``) still parses, hidden from
``--help``, and prints one line naming the new spelling, so existing scripts keep working.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from botnet.errors import deprecation_line


class _OldSpelling(argparse.Action):
    """An old flag: does what ``new`` does (same destination, type and count) and says so once."""

    def __init__(self, option_strings, dest, new: str, append: bool = False, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.append, self.warned = new, append, False

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if not self.warned:  # a repeated flag still gets one line
            print(deprecation_line(option_string, self.new), file=sys.stderr)
            self.warned = True
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def add_old_spelling(p: argparse.ArgumentParser, old: str, new: argparse.Action) -> None:
    """``old`` as a hidden alias of the flag ``new`` (what ``add_argument`` returned)."""
    p.add_argument(old, dest=new.dest, action=_OldSpelling, new=new.option_strings[0], type=new.type,
                   nargs=new.nargs, metavar=new.metavar, choices=new.choices, default=argparse.SUPPRESS,
                   append=isinstance(new, argparse._AppendAction), help=argparse.SUPPRESS)


def add_img_size(p: argparse.ArgumentParser, help: str, old: tuple[str, ...] = (), **kwargs: Any) -> None:
    """``--img-size``: the input side (classifiers) or the canvas side (detectors)."""
    flag = p.add_argument("--img-size", dest="img_size", help=help, **kwargs)
    for name in old:
        add_old_spelling(p, name, flag)


def add_batch_size(p: argparse.ArgumentParser, help: str | None = None, old: tuple[str, ...] = (),
                   **kwargs: Any) -> None:
    flag = p.add_argument("--batch-size", dest="batch_size", help=help, **kwargs)
    for name in old:
        add_old_spelling(p, name, flag)


def add_set(p: argparse.ArgumentParser, help: str, old: tuple[str, ...] = (), **kwargs: Any) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    flag = p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help,
                          **kwargs)
    for name in old:
        add_old_spelling(p, name, flag)
