"""User-facing errors, and the warning for a renamed Python keyword.

Anything the user can fix (a bad path, a malformed file, an unknown model name) raises
:class:`UserError`. The command line prints its message without a traceback and exits non-zero;
library callers get an ordinary exception that subclasses ``ValueError``.
"""
from __future__ import annotations

import difflib
import warnings
from typing import Any


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean 'optim.lr'?)`` for a misspelt name: the nearest known one, else for a dotted
    name one with the same last part (``lr`` -> ``optim.lr``); empty when nothing is close."""
    match = difflib.get_close_matches(name, known, 1, 0.6)
    match = match or [k for k in known if "." in name + k and k.split(".")[-1] == name.split(".")[-1]]
    return f" (did you mean {match[0]!r}?)" if match else ""


class UserError(ValueError):
    """An error caused by the user's input; the message says what and where."""


class DataError(UserError):
    """A dataset or annotation file is unusable. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            shown = "\n".join(f"  - {p}" for p in self.problems[:50])
            more = len(self.problems) - 50
            if more > 0:
                shown += f"\n  ... and {more} more"
            message = f"{message}\n{shown}"
        super().__init__(message)


def deprecation_line(old: str, new: str) -> str:
    """The one line an old spelling prints (a flag, a config key), naming the new one."""
    return f"botnet: warning: {old} is deprecated; use {new}"


def old_argument(function: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of a renamed Python keyword: the old keyword's where it is given, with a
    FutureWarning naming the new one (one name per quantity: the command line's), else ``new``'s."""
    if old_value is None:
        return new_value
    warnings.warn(f"{function}({old}=) is deprecated; use {new}=", FutureWarning, stacklevel=3)
    return old_value
