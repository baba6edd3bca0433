"""Purge: a replica compacts its closed history and goes on without it (DESIGN §12)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pspace.core import history, snapshot
from p2pspace.core.delta import Delta, make_body
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.errors import LocalProtocolError, StorageError
from p2pspace.testing.hostile import craft_next
from tests.core.test_snapshot import IDS, Space, _busy
from tests.helpers.replicas import wires_of


@pytest.fixture
def space(tmp_path: Path) -> Iterator[Space]:
    s = Space(tmp_path)
    yield s
    s.close()


def test_packed_ranks_round_trip_and_truncation_is_a_storage_error() -> None:
    pairs = [(1, 5), (2, 3), (9, 300), (10, -4), (4000, 70000), (4001, 69999)]
    data = history.pack_ranks(pairs)
    assert history.unpack_ranks(data) == pairs
    assert len(data) < 3 * 2 * len(pairs)
    with pytest.raises(StorageError, match="truncated"):
        history.unpack_ranks(data[:-1] + bytes([data[-1] | 0x80]))
    with pytest.raises(StorageError, match="truncated"):
        history.unpack_ranks(history.pack_ranks([(1, 1)])[:1])
    with pytest.raises(LocalProtocolError):
        history.pack_ranks([(2, 1), (2, 2)])


def test_compaction_deletes_closed_deltas_and_keeps_state_and_the_window(space: Space) -> None:
    _busy(space, 80)
    space.a.create_checkpoint(time=20)
    for k in range(5):
        space.a.create([rdb.set_fields("t", f"a{k}", {"after": k})], time=30)
    assert not space.b.receive(wires_of(space.a)).rejected
    digest, vector = space.a.state_digest(), dict(space.a.vector)
    held = len(wires_of(space.a))
    path = space.stores[0].path
    space.a.store.vacuum()
    before = path.stat().st_size
    deleted = space.a.compact(vacuum=True)
    assert deleted > 100
    assert len(wires_of(space.a)) == held - deleted
    assert path.stat().st_size < before
    assert space.a.state_digest() == digest and dict(space.a.vector) == vector
    assert space.a.compacted() == space.a.store.closed_vector(space.a.space_id)
    # A copy of a compacted delta arriving again is a duplicate, not evidence or a rejection.
    old = wires_of(space.b)[:50]
    result = space.a.receive(old)
    assert not result.rejected and not result.executed
    assert space.a.state_digest() == digest
    # The space goes on: new deltas both ways, and the replica reopens compacted.
    made = space.b.create([rdb.set_fields("t", "a1", {"b2": 1})], time=40)
    assert not space.a.receive([made.wire()]).rejected
    mine = space.a.create([rdb.set_fields("t", "a2", {"a2": 1})], time=40)
    assert not space.b.receive([mine.wire()]).rejected
    assert space.a.state_digest() == space.b.state_digest()
    again = Replica.open(space.a.store, IDS[0], space.a.space_id)
    assert again.compacted() == space.a.compacted()
    assert again.state_digest() == space.b.state_digest()
    assert space.a.compact() == 0  # nothing more closed


def test_a_compacted_replica_serves_a_joiner_by_snapshot(space: Space) -> None:
    _busy(space, 40)
    space.a.create_checkpoint(time=20)
    space.a.create([rdb.set_fields("t", "a3", {"after": 1})], time=30)
    assert space.a.compact() > 0
    c = space.joiner()
    assert space.a.lacks_compacted(dict(c.vector))
    manifest, chunks = space.a.snapshot()
    c.install_snapshot(snapshot.verify(manifest, chunks, c.genesis))
    missing = [w for w in wires_of(space.a) if w not in set(wires_of(c))]
    assert not c.receive(missing).rejected
    assert c.state_digest() == space.a.state_digest()
    assert not space.a.lacks_compacted(dict(c.vector))


def test_compaction_is_refused_without_a_checkpoint_or_when_history_is_kept(
    space: Space,
) -> None:
    _busy(space, 5)
    held = len(wires_of(space.a))
    with pytest.raises(LocalProtocolError, match="no checkpoint"):
        space.a.compact()
    space.a.create_checkpoint(time=20)
    space.a.set_keep_history(True)
    assert space.a.keeps_history
    with pytest.raises(LocalProtocolError, match="keeps its history"):
        space.a.compact()
    assert len(wires_of(space.a)) == held + 1  # the checkpoint delta, nothing deleted
    assert Replica.open(space.a.store, IDS[0], space.a.space_id).keeps_history
    space.a.set_keep_history(False)
    assert space.a.compact() > 0


def _late_from_b(space: Space, *, rank_offset: int = 0) -> Delta:
    """B's next delta naming an old, closed, non-head delta of A among its dependencies (a
    delta made from an old view; ``rank_offset`` forges its rank)."""
    honest = craft_next(
        space.b,
        IDS[1],
        [rdb.set_fields("t", "a1", {"late": 1})],
        time=40,
        deps={IDS[0].endpoint_id: 5},
    )
    return _reranked(honest, honest.rank + rank_offset) if rank_offset else honest


def _reranked(delta: Delta, rank: int) -> Delta:
    """``delta`` signed again by B with another rank (a forgery only its rank gives away)."""
    forged = make_body(
        space=delta.space,
        creator=delta.creator,
        seq=delta.seq,
        rank=rank,
        deps=dict(delta.deps),
        prev=delta.prev,
        time=delta.time,
        commands=list(delta.commands),
    )
    return forged.with_signature(IDS[1].sign(forged.body))


def _snapshot_joiner(space: Space) -> Replica:
    """A compacts; a joiner installs A's snapshot and receives what A holds beyond it."""
    space.a.compact()
    c = space.joiner()
    manifest, chunks = space.a.snapshot()
    c.install_snapshot(snapshot.verify(manifest, chunks, c.genesis))
    assert not c.receive([w for w in wires_of(space.a) if w not in set(wires_of(c))]).rejected
    return c


def _joined_from_snapshot(space: Space) -> Replica:
    _busy(space, 40)
    space.a.create_checkpoint(time=20)
    assert not space.b.receive(wires_of(space.a)).rejected
    c = _snapshot_joiner(space)
    assert c.state_digest() == space.a.state_digest()
    return c


def test_a_snapshot_installed_replica_accepts_a_late_delta_on_closed_history(
    space: Space,
) -> None:
    c = _joined_from_snapshot(space)
    late = _late_from_b(space)
    # C holds A's delta 5 only as state, not its rank: the rank is bounded, not refused.
    for replica in (space.a, c):
        result = replica.receive([late.wire()])
        assert not result.rejected and [d.id for d in result.executed] == [late.id]
    assert c.state_digest() == space.a.state_digest()
    assert not space.b.receive([late.wire()]).rejected
    assert space.b.state_digest() == c.state_digest()


def test_a_snapshot_installed_replica_refuses_a_rank_beyond_the_bound(space: Space) -> None:
    c = _joined_from_snapshot(space)
    forged = _late_from_b(space, rank_offset=10_000)
    for replica in (space.a, c):
        result = replica.receive([forged.wire()])
        assert [r.delta_id for r in result.rejected] == [forged.id]
        assert "rank" in str(result.rejected[0].error)
    assert c.state_digest() == space.a.state_digest()


def test_a_rank_set_by_a_dependency_below_the_snapshot_is_accepted_and_bounded(
    space: Space,
) -> None:
    # A's deltas only, so B's next delta takes its rank from A's delta 20, which the joiner
    # holds only as state.
    for k in range(40):
        space.a.create([rdb.create("t", f"a{k}", {"v": k})], time=10)
    checkpoint = space.a.create_checkpoint(time=20)
    assert not space.b.receive(wires_of(space.a)).rejected
    c = _snapshot_joiner(space)
    honest = craft_next(
        space.b, IDS[1], [rdb.set_fields("t", "a1", {"late": 1})], time=40,
        deps={IDS[0].endpoint_id: 20},
    )  # fmt: skip
    assert honest.seq == 1 and honest.rank == 21
    # The joiner bounds that rank by A's last delta it holds, the checkpoint: a rank above it
    # is refused there as by the replicas that know the exact rank.
    too_high = _reranked(honest, checkpoint.rank + 1)
    for replica in (space.a, c):
        result = replica.receive([too_high.wire()])
        assert [r.delta_id for r in result.rejected] == [too_high.id]
        assert "rank" in str(result.rejected[0].error)
    for replica in (space.a, space.b, c):
        assert not replica.receive([honest.wire()]).rejected
    assert c.state_digest() == space.a.state_digest() == space.b.state_digest()
