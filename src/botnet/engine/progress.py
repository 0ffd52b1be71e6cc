"""Progress of long loops (evaluation, prediction over many images) for logs without a terminal:
a line every ``every_seconds`` with what is done, the rate and the time left; and of long steps
that have no count (an export), a line as each begins. The training loop writes its own line
(:class:`~botnet.engine.hooks.LogHook`)."""
from __future__ import annotations

import sys
import time
from typing import Callable

EVERY_SECONDS = 30.0


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    def __init__(self, what: str, total: int, unit: str = "images", every_seconds: float | None = None,
                 enabled: bool = True):
        self.what, self.total, self.unit = what, total, unit
        self.every_seconds = EVERY_SECONDS if every_seconds is None else every_seconds
        self.enabled = enabled
        self.done = 0
        self.started = self._last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_seconds and self.done < self.total:
            self._last = now
            rate = self.done / max(now - self.started, 1e-9)
            print(f"{self.what}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, "
                  f"eta {duration((self.total - self.done) / max(rate, 1e-9))}", file=sys.stderr, flush=True)


class Phases:
    """A line as each phase of a long job begins (``phases("tracing")``), and one with the time it
    took when the next begins or the job ends (``phases(None)``); silent without ``say``."""

    def __init__(self, say: Callable[[str], None] | None):
        self.say, self.started = say, None

    def __call__(self, line: str | None) -> None:
        now = time.monotonic()
        if self.say is not None:
            if self.started is not None:
                self.say(f"  done in {duration(now - self.started)}")
            if line is not None:
                self.say(line)
        self.started = now
