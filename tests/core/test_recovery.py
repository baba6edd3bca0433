"""A store older than its endpoint's history (a restored backup) recovers before it creates."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.errors import LocalProtocolError


def _backup(store: Store, target: Path) -> None:
    """A consistent copy of ``store``'s file, as a backup tool would take it."""
    source = sqlite3.connect(str(store.path))
    try:
        copy = sqlite3.connect(str(target))
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def test_a_restored_store_recovers_its_own_deltas_before_creating(
    space_pair: tuple[Replica, Replica], identities: list[Identity], tmp_path: Path
) -> None:
    a, b = space_pair
    a.create([rdb.create("t", "r1", {"v": 1})], time=3)
    b.receive(a.fetch([(a.endpoint_id, 1, 10)], max_count=100))
    _backup(a.store, tmp_path / "backup.sqlite3")
    a.create([rdb.create("t", "r2", {"v": 2})], time=4)
    a.create([rdb.create("t", "r3", {"v": 3})], time=5)
    b.receive(a.fetch([(a.endpoint_id, 1, 10)], max_count=100))
    assert b.vector[a.endpoint_id] == 5

    restored = Replica.open(
        Store(tmp_path / "backup.sqlite3", durability="normal"), identities[0], a.space_id
    )
    try:
        assert restored.vector[a.endpoint_id] == 3 and restored.can_create()
        restored.note_peer_vector(b.endpoint_id, dict(b.vector))
        assert restored.recovering() == 2
        assert not restored.can_create()
        with pytest.raises(LocalProtocolError, match="recovered"):
            restored.create([rdb.create("t", "lost", {"v": 0})], time=6)
        assert (a.endpoint_id, 4, 5) in restored.missing()
        result = restored.receive(b.fetch([(a.endpoint_id, 4, 5)], max_count=100))
        assert not result.rejected and restored.recovering() == 0
        delta = restored.create([rdb.create("t", "r4", {"v": 4})], time=7)
        assert delta.seq == 6
        result = b.receive([delta.wire()])
        assert not result.rejected
        assert restored.state_digest() == b.state_digest()
        assert restored.order_digest() == b.order_digest()
    finally:
        restored.store.close()


def test_a_peer_that_goes_away_stops_holding_creation_back(
    space_pair: tuple[Replica, Replica], make_store: Callable[[str], Store]
) -> None:
    a, b = space_pair
    a.note_peer_vector(b.endpoint_id, {a.endpoint_id: 99})
    assert not a.can_create()
    a.peer_gone(b.endpoint_id)
    assert a.can_create()
    # A vector that holds no more than this store is no claim at all.
    a.note_peer_vector(b.endpoint_id, dict(a.vector))
    assert a.recovering() == 0


def test_a_claim_withdrawn_unbacked_never_holds_creation_back_again(
    space_pair: tuple[Replica, Replica],
) -> None:
    """A member that claims to hold our deltas it never sends: once its session gives up the
    repairs (the claim drops back), its claims are ignored -- reconnecting to claim again
    cannot keep us from writing. An honest peer's claim, backed by the deltas, still counts."""
    a, b = space_pair
    liar, honest = b.endpoint_id, b"\x42" * 16
    me = a.endpoint_id
    a.note_peer_vector(liar, {me: 99})
    assert not a.can_create()
    a.note_peer_vector(liar, {me: 0})  # the repairs gave up: nothing came
    assert a.can_create()
    a.peer_gone(liar)
    a.note_peer_vector(liar, {me: 99})  # a new connection, the same untrue claim
    assert a.can_create() and a.recovering() == 0
    a.note_peer_vector(honest, {me: a.vector[me] + 1})
    assert not a.can_create()  # another peer's claim still counts
