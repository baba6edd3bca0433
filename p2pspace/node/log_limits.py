"""Log lines that repeat are written once per interval, then summed up.

Theory of operation. A peer that keeps sending what we refuse -- the same refused delta a
thousand times, a connection we refuse every few seconds -- must not fill the log, yet the
first occurrence must show at once. Each kind of line has a *key* (for example the peer and the
type of the error). The first line of a key is written when it happens; later ones within
``interval`` seconds are only counted; once the interval is over, one summary line says how many
more there were ("999 more like this in the last 60 s: ..."), written by the next line of that
key or by :meth:`LogLimiter.flush`, which the node's ticker calls. Time comes from the injected
``now`` (trio's clock in the node), so tests drive it exactly. At most ``max_keys`` keys are
followed at once; past that the oldest is summed up early and forgotten, so a flood of distinct
keys costs bounded memory (and at most one summary line each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

INTERVAL = 60.0
MAX_KEYS = 1024


@dataclass(slots=True, kw_only=True)
class _Window:
    opened: float
    level: int
    line: str  # the line written when the window opened
    more: int = 0  # occurrences counted since, not written


class LogLimiter:
    """Writes to ``logger`` at most one line per key and ``interval``, then a summary."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        now: Callable[[], float],
        interval: float = INTERVAL,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._logger = logger
        self._now = now
        self.interval = interval
        self._max_keys = max_keys
        self._windows: dict[Hashable, _Window] = {}

    def log(self, level: int, key: Hashable, message: str, *args: object, count: int = 1) -> bool:
        """Write ``message % args`` at ``level``, unless a line of ``key`` was written less than
        ``interval`` ago: then only count it. ``count``: how many occurrences this line stands
        for (the first is written, the others counted). Returns True if the line was written."""
        now = self._now()
        window = self._windows.get(key)
        if window is not None and now - window.opened >= self.interval:
            self._close(key)
            window = None
        if window is not None:
            window.more += count
            return False
        line = message % args if args else message
        self._logger.log(level, line)
        self._windows[key] = _Window(opened=now, level=level, line=line, more=count - 1)
        if len(self._windows) > self._max_keys:
            self._close(next(iter(self._windows)))
        return True

    def flush(self) -> None:
        """Write the summaries of the intervals that are over."""
        now = self._now()
        due = [k for k, w in self._windows.items() if now - w.opened >= self.interval]
        for key in due:
            self._close(key)

    def _close(self, key: Hashable) -> None:
        window = self._windows.pop(key)
        if window.more:
            self._logger.log(
                window.level,
                "%d more like this in the last %g s: %s",
                window.more,
                self.interval,
                window.line,
            )


__all__ = ["INTERVAL", "MAX_KEYS", "LogLimiter"]
