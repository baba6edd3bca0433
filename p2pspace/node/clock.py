"""The wall clock a node reads, injected so tests can set it.

Theory of operation. A node needs two kinds of time. *Wall time* -- milliseconds since the Unix
epoch -- is written into deltas and invitations and compared with an invitation's expiry, so it
must agree between machines; it comes from a :class:`Clock`. *Timer time* -- how long to wait
before the next tick, dial or deadline, and how long a connection has been open -- is trio's
own clock (:func:`trio.current_time`, :func:`trio.sleep`), so that trio's ``MockClock`` drives
every timer of the node in tests. The two never mix: no deadline is computed from wall time,
and nothing written to the store or the wire comes from trio's clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Where a node reads wall time."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemClock:
    """The machine's wall clock (the default)."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)


SYSTEM_CLOCK = SystemClock()

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]
