"""User-facing errors, and the warning for a renamed Python keyword.

Anything the user can fix (a bad path, a malformed file, an unknown model name) raises
:class:`UserError`. The command line prints its message without a traceback and exits non-zero;
library callers get an ordinary exception that subclasses ``ValueError``.
"""
from __future__ import annotations

import warnings
from typing import Any


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


def old_argument(function: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of a renamed Python keyword: the old keyword's where it is given, with a
    FutureWarning naming the new one (one name per quantity: the command line's), else ``new``'s."""
    if old_value is None:
        return new_value
    warnings.warn(f"{function}({old}=) is deprecated; use {new}=", FutureWarning, stacklevel=3)
    return old_value
