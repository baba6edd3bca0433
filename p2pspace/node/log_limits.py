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

Lines may also name a *kind* (for example "a connection refused"): at most ``per_kind`` keys of
one kind open a window at once, and a line of a further key of that kind is counted in one
shared window of the kind instead. So a peer that comes back from ever new addresses, or with
ever new keys, still makes only a bounded number of lines an interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

INTERVAL = 60.0
MAX_KEYS = 1024
PER_KIND = 16


@dataclass(frozen=True, slots=True)
class _Others:
    """The key of the window shared by the lines of a kind past its ``per_kind`` keys."""

    kind: Hashable


@dataclass(slots=True, kw_only=True)
class _Window:
    opened: float
    level: int
    line: str  # the line written when the window opened
    more: int = 0  # occurrences counted since, not written
    kind: Hashable = None


class LogLimiter:
    """Writes to ``logger`` at most one line per key and ``interval``, then a summary."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        now: Callable[[], float],
        interval: float = INTERVAL,
        max_keys: int = MAX_KEYS,
        per_kind: int = PER_KIND,
    ) -> None:
        self._logger = logger
        self._now = now
        self.interval = interval
        self._max_keys = max_keys
        self._per_kind = per_kind
        self._windows: dict[Hashable, _Window] = {}
        self._kinds: dict[Hashable, int] = {}  # open windows by kind

    def log(
        self,
        level: int,
        key: Hashable,
        message: str,
        *args: object,
        count: int = 1,
        kind: Hashable = None,
    ) -> bool:
        """Write ``message % args`` at ``level``, unless a line of ``key`` was written less than
        ``interval`` ago: then only count it. ``count``: how many occurrences this line stands
        for (the first is written, the others counted). ``kind``: see the module docstring.
        ``args`` are formatted only if the line is written. Returns True if it was written."""
        now = self._now()
        window = self._current(key, now)
        if window is None and kind is not None and self._kinds.get(kind, 0) >= self._per_kind:
            key = _Others(kind)
            window = self._current(key, now)
        if window is not None:
            window.more += count
            return False
        line = message % args if args else message
        self._logger.log(level, line)
        self._windows[key] = _Window(opened=now, level=level, line=line, more=count - 1, kind=kind)
        if kind is not None and not isinstance(key, _Others):
            self._kinds[kind] = self._kinds.get(kind, 0) + 1
        if len(self._windows) > self._max_keys:
            self._close(next(iter(self._windows)))
        return True

    def _current(self, key: Hashable, now: float) -> _Window | None:
        """The open window of ``key``; one whose interval is over is summed up and closed."""
        window = self._windows.get(key)
        if window is not None and now - window.opened >= self.interval:
            self._close(key)
            window = None
        return window

    def flush(self) -> None:
        """Write the summaries of the intervals that are over."""
        now = self._now()
        due = [k for k, w in self._windows.items() if now - w.opened >= self.interval]
        for key in due:
            self._close(key)

    def _close(self, key: Hashable) -> None:
        window = self._windows.pop(key)
        if window.kind is not None and not isinstance(key, _Others):
            left = self._kinds[window.kind] - 1
            if left:
                self._kinds[window.kind] = left
            else:
                del self._kinds[window.kind]
        if window.more:
            self._logger.log(
                window.level,
                "%d more like this%s in the last %g s: %s",
                window.more,
                " from other peers" if isinstance(key, _Others) else "",
                self.interval,
                window.line,
            )


__all__ = ["INTERVAL", "MAX_KEYS", "PER_KIND", "LogLimiter"]
