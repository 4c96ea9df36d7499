"""Progress reporting: the engine reports bytes to a sink; only the CLI makes a visible bar, and only on a
terminal (never under cron)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import IO, Any, Protocol

from mirror.printable import printable

# The log level of -v, between INFO (the default) and DEBUG (-vv): each model revision's plan and outcome.
VERBOSE = 15


class ProgressSink(Protocol):
    def start(self, total: int, desc: str) -> None: ...

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def start(self, total: int, desc: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar on stderr, safe to update from several download threads."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._bar: Any = None
        self._lock = threading.Lock()

    def start(self, total: int, desc: str) -> None:
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(
            total=total, desc=printable(desc), unit="B", unit_scale=True, unit_divisor=1024, file=self._stream
        )

    def update(self, n: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def wants_bar(stream: IO[str], *, quiet: bool, no_progress: bool, env: Mapping[str, str]) -> bool:
    """A bar only for a person at a terminal: not with -q/--no-progress, TERM=dumb, or no tty (cron)."""
    if quiet or no_progress or env.get("TERM") == "dumb" or env.get("MIRROR_NO_PROGRESS"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
