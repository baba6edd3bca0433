"""Helpers over replicas for core, engine and tool tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb


def wires_of(replica: Replica) -> list[bytes]:
    """Every executed delta of ``replica`` in log order, as stored."""
    return [wire for _c, _s, _r, wire in replica.store.iter_log(replica.space_id)]


def set_command(i: int, who: str) -> list[Command]:
    """Commands of one delta that all write record ``t/r`` (so concurrent ones conflict)."""
    return [rdb.set_fields("t", "r", {"v": f"{who}{i}", who: i})]


def log_ids(replica: Replica) -> list[DeltaId]:
    """The executed order, as delta ids."""
    return [DeltaId(c, s) for c, s, _r, _w in replica.store.iter_log(replica.space_id)]


def assert_same(a: Replica, b: Replica) -> None:
    """Same executed vector, same order, same engine state."""
    assert a.vector == b.vector
    assert a.order_digest() == b.order_digest()
    assert a.state_digest() == b.state_digest()


class UndoCounter:
    """Installed as ``replica.undo_listener``: counts merges (calls) and undos per delta."""

    def __init__(self, replica: Replica) -> None:
        self.calls = 0
        self.counts: Counter[DeltaId] = Counter()
        replica.undo_listener = self

    def __call__(self, ids: Sequence[DeltaId]) -> None:
        self.calls += 1
        self.counts.update(ids)


def seed_record(a: Replica, b: Replica) -> None:
    """``a`` creates record ``t/r``; ``b`` receives it."""
    a.create([rdb.create("t", "r", {"v": "seed"})], time=3)
    b.receive(wires_of(a))


def diverge(a: Replica, b: Replica, k: int = 3) -> tuple[list[bytes], list[bytes]]:
    """``a`` and ``b`` each create ``k`` concurrent conflicting deltas; returns their wires."""
    wa = [a.create(set_command(i, "a"), time=3 + i).wire() for i in range(k)]
    wb = [b.create(set_command(i, "b"), time=3 + i).wire() for i in range(k)]
    return wa, wb
