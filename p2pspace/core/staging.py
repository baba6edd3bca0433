"""Deferred execution during a catch-up: which accepted deltas wait, and when they must run.

Theory of operation. While a catch-up from a peer is in progress the replica's owner may ask it
to *defer* execution. Accepted deltas are then *staged* here, in memory, instead of being
executed batch by batch:

* deltas that would reorder already-executed ones wait for one merge when the catch-up ends --
  one undo/redo pass instead of one per arriving batch -- or until the stage reaches its bound
  (:data:`MAX_STAGED` deltas or :data:`MAX_STAGED_BYTES` bytes), so a hostile or huge stream
  cannot grow memory without limit;
* deltas that all append to the log run in groups of :data:`APPEND_BATCH` (one transaction and
  one fsync per group, not per frame).

Staged deltas are accepted: the causal buffer counts them, and the replica answers rank and
hash lookups for them from here. Nothing here touches the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pspace.core.delta import Delta, DeltaId, OrderKey

MAX_STAGED = 200_000
MAX_STAGED_BYTES = 64 * 1024 * 1024
APPEND_BATCH = 4096


@dataclass(slots=True, kw_only=True)
class Stage:
    """Accepted deltas of one space waiting to execute. ``max_count`` and ``append_batch`` may
    be lowered by the owner (tests do, to exercise the bounds)."""

    max_count: int = MAX_STAGED
    max_bytes: int = MAX_STAGED_BYTES
    append_batch: int = APPEND_BATCH
    _deltas: dict[DeltaId, tuple[Delta, bytes]] = field(default_factory=dict)
    _min_key: OrderKey | None = None
    _bytes: int = 0

    def __len__(self) -> int:
        return len(self._deltas)

    def get(self, delta_id: DeltaId) -> Delta | None:
        staged = self._deltas.get(delta_id)
        return None if staged is None else staged[0]

    def add(self, delta: Delta, wire: bytes) -> None:
        self._deltas[delta.id] = (delta, wire)
        self._bytes += len(wire)
        key = delta.order_key
        if self._min_key is None or key < self._min_key:
            self._min_key = key

    def replace(self, delta: Delta, wire: bytes) -> None:
        """Put another copy of a staged delta in its place (equivocation: the copy kept)."""
        old = self._deltas.get(delta.id)
        if old is not None:
            self._bytes -= len(old[1])
            del self._deltas[delta.id]
        self.add(delta, wire)

    def must_wait(self, *, defer: bool, last_key: OrderKey | None) -> bool:
        """True if the staged deltas should keep waiting (``last_key``: the log's last key).

        Without ``defer`` nothing waits. With it, a stage that only appends waits for a group of
        ``append_batch``; one that reorders waits for its merge, until a bound is reached.
        """
        if not defer or not self._deltas:
            return False
        first = self._min_key
        appends = last_key is None or (first is not None and first > last_key)
        limit = self.append_batch if appends else self.max_count
        return len(self._deltas) < limit and self._bytes < self.max_bytes

    def take(self) -> list[tuple[Delta, bytes]]:
        """Every staged delta in order-key order; the stage is empty afterwards."""
        out = sorted(self._deltas.values(), key=lambda staged: staged[0].order_key)
        self.clear()
        return out

    def clear(self) -> None:
        self._deltas.clear()
        self._min_key = None
        self._bytes = 0
