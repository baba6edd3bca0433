"""When this endpoint was last connected to each peer, kept across restarts ("last seen").

Theory of operation. The node's ticker calls :meth:`LastSeen.note` with the peers connected now
that share a space with it (never strangers: each would be a row kept forever) and the clock's
time; a connected peer's time moves forward in memory on every tick. The store
is written when a peer is first seen, then at most every :data:`WRITE_EVERY_MS` per peer (one
transaction per :meth:`LastSeen.flush`, which the ticker calls after noting) and once more at
shutdown
(:meth:`LastSeen.flush` with ``everything=True``), so an idle connection costs no disk writes
and a crash loses at most that much of a time that is shown rounded to minutes anyway. A time
only grows: a clock set back does not make a peer look seen earlier than it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from p2pspace.core.store import Store
from p2pspace.errors import StorageError

log = logging.getLogger("p2pspace.node")

WRITE_EVERY_MS = 60_000


class LastSeen:
    """peer id -> ms of the last moment it was connected."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: dict[bytes, int] = dict(store.peer_seen())
        self._written = dict(self._seen)

    def get(self, peer: bytes) -> int:
        """When ``peer`` was last connected (ms), 0 if never."""
        return self._seen.get(peer, 0)

    def note(self, connected: Iterable[bytes], now_ms: int) -> None:
        """Every peer in ``connected`` is connected at ``now_ms``."""
        for peer in connected:
            if now_ms > self._seen.get(peer, 0):
                self._seen[peer] = now_ms

    def flush(self, *, everything: bool = False) -> None:
        """Write the first time of each peer and the times that moved by at least
        :data:`WRITE_EVERY_MS` since they were last written (every one that moved, if
        ``everything``). A store failure is logged, not
        raised: the next connection sets the time again."""
        rows = [
            (peer, seen)
            for peer, seen in sorted(self._seen.items())
            if seen > self._written.get(peer, 0)
            and (
                everything
                or peer not in self._written
                or seen - self._written[peer] >= WRITE_EVERY_MS
            )
        ]
        if not rows:
            return
        try:
            with self._store.transaction(sync=False):
                self._store.set_peer_seen(rows)
        except StorageError as exc:
            log.warning("cannot record when peers were last seen: %s", exc)
            return
        self._written.update(rows)


__all__ = ["WRITE_EVERY_MS", "LastSeen"]
