"""The state of one engine instance of one space, as engines see it: a cached view of the store.

Theory of operation. Engines read and write their state through
:class:`~p2pspace.core.engine.EngineState`; :class:`KVState` is that interface over the
``state`` table of a :class:`~p2pspace.core.store.Store`, with a bounded read cache and
write-back of changes, so one merge writes each changed key once, inside the merge's
transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

from p2pspace.core.store import Store


class KVState:
    """:class:`~p2pspace.core.engine.EngineState` of one engine instance of one space.

    A bounded read cache plus write-back of changes: ``put``/``delete`` are buffered and written
    by :meth:`flush`, which the owner calls before committing the transaction (one statement per
    batch instead of one per command). After a rolled-back transaction the owner calls
    :meth:`reset`, dropping values that were never committed.
    """

    __slots__ = ("_cache", "_dirty", "_instance", "_max", "_space", "_store")

    def __init__(self, store: Store, space: bytes, instance: str, *, cache: int = 200_000) -> None:
        self._store = store
        self._space = space
        self._instance = instance
        self._cache: dict[bytes, bytes | None] = {}
        self._dirty: dict[bytes, bytes | None] = {}
        self._max = cache

    def reset(self) -> None:
        self._cache.clear()
        self._dirty.clear()

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        value = self._store.state_get(self._space, self._instance, key)
        if len(self._cache) >= self._max and not self._dirty:
            self._cache.clear()
        self._cache[key] = value
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._cache[key] = value
        self._dirty[key] = value

    def delete(self, key: bytes) -> None:
        self._cache[key] = None
        self._dirty[key] = None

    def flush(self) -> None:
        """Write buffered changes (inside the owner's transaction)."""
        if not self._dirty:
            return
        puts = [
            (self._space, self._instance, k, v) for k, v in self._dirty.items() if v is not None
        ]
        gone = [(self._space, self._instance, k) for k, v in self._dirty.items() if v is None]
        self._store.state_write(puts, gone)
        self._dirty.clear()
        if len(self._cache) >= self._max:
            self._cache.clear()

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self._dirty:
            self.flush()
        return iter(self._store.state_scan(self._space, self._instance, prefix))


__all__ = ["KVState"]
