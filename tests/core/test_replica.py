"""Replica: local creation, merging concurrent histories, staging, reopen, serving peers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest

import p2pspace.core.replica
from p2pspace.core.delta import Command, DeltaId, decode_delta
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import LocalProtocolError
from p2pspace.testing import causality_violation
from tests.conftest import wires_of


def _set(i: int, who: str) -> list[Command]:
    return [rdb.set_fields("t", "r", {"v": f"{who}{i}", who: i})]


def _log_ids(replica: Replica) -> list[DeltaId]:
    return [DeltaId(c, s) for c, s, _r, _w in replica.store.iter_log(replica.space_id)]


def _same(a: Replica, b: Replica) -> None:
    assert a.vector == b.vector
    assert a.order_digest() == b.order_digest()
    assert a.state_digest() == b.state_digest()


class UndoCounter:
    def __init__(self, replica: Replica) -> None:
        self.calls = 0
        self.counts: Counter[DeltaId] = Counter()
        replica.undo_listener = self

    def __call__(self, ids: Sequence[DeltaId]) -> None:
        self.calls += 1
        self.counts.update(ids)


def test_local_create_appends(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    a.create([rdb.create("t", "r", {"v": 0})], time=3)
    b.receive(wires_of(a))
    # b runs ahead in rank; a merges b's deltas, then creates: the new delta sorts last.
    for i in range(4):
        b.create(_set(i, "b"), time=4 + i)
    a.create(_set(0, "a"), time=4)
    a.receive(wires_of(b))
    b.receive(wires_of(a))
    counter, b_counter = UndoCounter(a), UndoCounter(b)
    undone = a.stats.undone
    for i in range(1, 4):
        d = a.create(_set(i, "a"), time=10 + i)
        assert _log_ids(a)[-1] == d.id
        assert d.rank == max(r for _c, _s, r, _w in a.store.iter_log(a.space_id))
    assert a.stats.undone == undone
    assert counter.calls == 0
    # b receives a's appended deltas; they append on b as well.
    result = b.receive(wires_of(a))
    assert len(result.executed) == 3
    assert result.undone == 0
    assert b_counter.calls == 0
    _same(a, b)


@pytest.mark.parametrize("k", [1, 3])
def test_concurrent_deltas_merge(space_pair: tuple[Replica, Replica], k: int) -> None:
    a, b = space_pair
    _seed_record(a, b)
    da = [a.create(_set(i, "a"), time=3 + i) for i in range(k)]
    db = [b.create(_set(i, "b"), time=3 + i) for i in range(k)]
    # a's own deltas that sort after b's earliest must be undone once and redone once.
    first_b = db[0].order_key
    expected_a = [d.id for d in da if d.order_key > first_b]
    expected_b = [d.id for d in db if d.order_key > da[0].order_key]
    assert len(expected_a) + len(expected_b) == 2 * k - 1  # exactly one creator's first wins
    ca, cb = UndoCounter(a), UndoCounter(b)
    ra = a.receive([d.wire() for d in db])
    rb = b.receive([d.wire() for d in da])
    assert (ra.undone, ra.redone) == (len(expected_a), len(expected_a))
    assert (rb.undone, rb.redone) == (len(expected_b), len(expected_b))
    assert sorted(ca.counts) == sorted(expected_a)
    assert sorted(cb.counts) == sorted(expected_b)
    assert a.stats.undone == a.stats.redone == len(expected_a)
    assert a.stats.merges == (1 if expected_a else 0)
    _same(a, b)
    assert _log_ids(a)[3:] == [d.id for d in sorted(da + db, key=lambda d: d.order_key)]
    winner = max(da + db, key=lambda d: d.order_key)
    assert a.rdb().get("t", "r") is not None
    assert a.rdb().get("t", "r")["v"] == winner.commands[0].args["fields"]["v"]
    assert causality_violation(a.dump_order()) is None


def _seed_record(a: Replica, b: Replica) -> None:
    a.create([rdb.create("t", "r", {"v": "seed"})], time=3)
    b.receive(wires_of(a))


def _diverge(a: Replica, b: Replica, k: int = 3) -> tuple[list[bytes], list[bytes]]:
    wa = [a.create(_set(i, "a"), time=3 + i).wire() for i in range(k)]
    wb = [b.create(_set(i, "b"), time=3 + i).wire() for i in range(k)]
    return wa, wb


def test_without_defer_each_batch_undoes_again(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    _wa, wb = _diverge(a, b)
    counter = UndoCounter(a)
    for wire in wb:
        a.receive([wire])
    # The contrast to staging: a's last delta was undone once per arriving batch.
    assert max(counter.counts.values()) == 3
    assert counter.calls == 3


def test_defer_stages_and_release_merges_once(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    wa, wb = _diverge(a, b)
    counter = UndoCounter(a)
    vector = dict(a.vector)
    digests = (a.order_digest(), a.state_digest())
    for n, wire in enumerate(wb, 1):
        result = a.receive([wire], defer=True)
        assert result.executed == ()
        assert result.staged == n
        assert a.staged_count == n
    assert a.vector == vector
    assert (a.order_digest(), a.state_digest()) == digests
    assert a.accepted_vector()[b.endpoint_id] == b.vector[b.endpoint_id]
    assert counter.calls == 0
    result = a.release()
    assert [d.id for d in result.executed] == [decode_delta(w).id for w in wb]
    assert a.staged_count == 0
    assert counter.calls == 1
    assert counter.counts and max(counter.counts.values()) == 1
    assert result.undone == result.redone == len(counter.counts)
    assert a.stats.merges == 1
    b.receive(wa)
    _same(a, b)
    assert a.release().executed == ()  # nothing left


def test_defer_stage_is_bounded(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    wa, wb = _diverge(a, b, k=4)
    a.max_staged = 3
    counter = UndoCounter(a)
    assert a.receive(wb[:1], defer=True).staged == 1
    assert a.receive(wb[1:2], defer=True).staged == 2
    result = a.receive(wb[2:3], defer=True)  # the stage is full: merge now
    assert len(result.executed) == 3
    assert a.staged_count == 0
    assert counter.calls == 1
    a.receive(wb[3:], defer=True)
    a.release()
    b.receive(wa)
    _same(a, b)


def test_defer_appending_deltas_commit_in_groups(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    a.append_batch = 2
    d1 = b.create(_set(0, "b"), time=3)
    d2 = b.create(_set(1, "b"), time=4)
    d3 = b.create(_set(2, "b"), time=5)
    first = a.receive([d1.wire()], defer=True)  # appends, but waits for a group of two
    assert first.executed == () and a.staged_count == 1
    second = a.receive([d2.wire()], defer=True)
    assert [x.id for x in second.executed] == [d1.id, d2.id]
    assert second.undone == 0 and a.staged_count == 0
    third = a.receive([d3.wire()], defer=False)  # not deferred: executes at once
    assert [x.id for x in third.executed] == [d3.id]
    _same(a, b)


def test_create_many_signs_last_of_chain(
    space_pair: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = space_pair
    chain = a.create_many([_set(i, "a") for i in range(4)], time=3)
    assert [d.signature is not None for d in chain] == [False, False, False, True]
    assert [d.seq for d in chain] == [3, 4, 5, 6]
    assert all(chain[i + 1].prev == chain[i].hash for i in range(3))
    assert [dict(d.deps) for d in chain[1:]] == [{}, {}, {}]
    # Chains longer than MAX_CHAIN are signed every MAX_CHAIN deltas.
    monkeypatch.setattr(p2pspace.core.replica, "MAX_CHAIN", 3)
    long = a.create_many([_set(i, "L") for i in range(7)], time=4)
    assert [d.signature is not None for d in long] == [False, False, True] * 2 + [True]
    result = b.receive(wires_of(a))
    assert not result.rejected
    assert len(result.executed) == 11
    _same(a, b)
    assert a.create_many([], time=5) == []


def test_create_many_is_one_transaction(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    before = (dict(a.vector), a.order_digest(), a.state_digest())
    with pytest.raises(LocalProtocolError):
        a.create_many([_set(0, "a"), [rdb.delete("", "r")]], time=3)
    assert (dict(a.vector), a.order_digest(), a.state_digest()) == before


def test_reopen_restores_everything(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    _seed_record(a, b)
    _wa, wb = _diverge(a, b)
    a.receive(wb)
    a.create_many([_set(i, "c") for i in range(3)], time=9)
    last = a.create(_set(9, "a"), time=10)
    expected = (dict(a.vector), a.order_digest(), a.state_digest(), a.dump_order())
    record = a.rdb().get("t", "r")
    assert record is not None
    space_id = a.space_id
    a.store.close()

    a2 = Replica.open(make_store("a"), identities[0], space_id)
    assert (dict(a2.vector), a2.order_digest(), a2.state_digest(), a2.dump_order()) == expected
    assert a2.member_ids() == sorted([identities[0].endpoint_id, identities[1].endpoint_id])
    assert a2.rdb().get("t", "r") == record
    d = a2.create(_set(10, "a"), time=11)
    # The hash chain and the own dependency vector survived: nothing new since ``last``.
    assert d.seq == last.seq + 1
    assert d.prev == last.hash
    assert d.deps == ()
    assert d.rank == last.rank + 1
    result = b.receive(wires_of(a2))
    assert not result.rejected
    _same(a2, b)
    with pytest.raises(LocalProtocolError):
        Replica.open(a2.store, identities[0], b"\x00" * 16)


def test_reopen_then_peer_delta_and_own_deps(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    a.create(_set(0, "a"), time=3)
    space_id = a.space_id
    a.store.close()
    db = b.create(_set(0, "b"), time=3)
    a2 = Replica.open(make_store("a"), identities[0], space_id)
    a2.receive([db.wire()])
    d = a2.create(_set(1, "a"), time=4)
    assert dict(d.deps) == {b.endpoint_id: db.seq}  # only what grew since a's previous delta
    assert not b.receive(wires_of(a2)).rejected
    _same(a2, b)


def test_fetch_extends_to_next_signed(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    me = a.endpoint_id
    single = a.create(_set(0, "a"), time=3)  # seq 3, signed
    chain = a.create_many([_set(i, "c") for i in range(4)], time=4)  # seq 4..7, 7 signed
    after = a.create(_set(1, "a"), time=5)  # seq 8, signed
    wire = {d.seq: d.wire() for d in [single, *chain, after]}
    assert a.fetch([(me, 3, 3)], max_count=10) == [wire[3]]
    assert a.fetch([(me, 4, 4)], max_count=10) == [wire[s] for s in range(4, 8)]
    assert a.fetch([(me, 5, 6)], max_count=10) == [wire[s] for s in range(5, 8)]
    assert a.fetch([(me, 7, 7)], max_count=10) == [wire[7]]
    assert a.fetch([(me, 3, 8)], max_count=10) == [wire[s] for s in range(3, 9)]
    assert a.fetch([(me, 5, 4)], max_count=10) == []
    assert a.fetch([(me, 9, 12)], max_count=10) == []
    assert a.fetch([(b"\x00" * 16, 1, 1)], max_count=10) == []
    # Several ranges of one creator answer in seq order (causal order), overlaps merged once.
    assert a.fetch([(me, 8, 8), (me, 3, 3)], max_count=10) == [wire[3], wire[8]]
    assert a.fetch([(me, 3, 4)] * 50, max_count=10) == [wire[s] for s in range(3, 8)]
    # The whole answer is capped (a chain in progress is finished to its signed delta).
    assert a.fetch([(me, 3, 8)], max_count=2) == [wire[s] for s in range(3, 8)]


def _lacking(replica: Replica, vector: dict[bytes, int]) -> list[bytes]:
    return [w for c, s, _r, w in replica.store.iter_log(replica.space_id) if s > vector.get(c, 0)]


def _stream(
    replica: Replica, vector: dict[bytes, int], *, max_count: int, max_bytes: int
) -> list[list[bytes]]:
    chunks: list[list[bytes]] = []
    cursor = replica.catch_up_start(vector)
    while cursor is not None:
        rows, cursor = replica.catch_up_chunk(
            vector, cursor, max_count=max_count, max_bytes=max_bytes
        )
        chunks.append([w for _c, _s, w in rows])
        assert len(chunks) < 1000
    return chunks


def test_catch_up_streams_exactly_what_is_lacking(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    for i in range(5):
        a.create(_set(i, "a"), time=3 + i)
    b.receive(wires_of(a)[:4])
    for i in range(4):
        b.create(_set(i, "b"), time=3 + i)
    b_vector = b.accepted_vector()  # lacks some of a's deltas, has b's own
    a.receive(wires_of(b))
    a.create_many([_set(i, "c") for i in range(70)], time=20)  # more than one log page
    for i in range(3):
        a.create(_set(i, "z"), time=30 + i)

    assert a.catch_up_start(a.vector) is None
    for vector in (b_vector, {}, {a.endpoint_id: 2}, {a.endpoint_id: 30, b.endpoint_id: 4}):
        expected = _lacking(a, vector)
        for max_count, max_bytes in ((3, 10**9), (1000, 10**9), (50, 1)):
            chunks = _stream(a, vector, max_count=max_count, max_bytes=max_bytes)
            assert [w for chunk in chunks for w in chunk] == expected
            assert all(len(chunk) <= max_count for chunk in chunks)
            if max_bytes == 1:
                assert all(len(chunk) == 1 for chunk in chunks)
            assert all(chunks[:-1]), "only the last chunk may be empty"

    # A replica holding exactly b's vector, fed the stream, ends equal to a.
    b_chunks = _stream(a, b_vector, max_count=7, max_bytes=10**9)
    c = Replica.join(make_store("c"), identities[2], a.genesis.wire())
    c.receive(wires_of(b))
    assert c.vector == b_vector
    for chunk in b_chunks:
        assert not c.receive(chunk).rejected
    _same(a, c)


def test_non_member_cannot_create(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, _b = space_pair
    c = Replica.join(make_store("c"), identities[2], a.genesis.wire())
    c.receive(wires_of(a))
    assert not c.is_member(c.endpoint_id)
    with pytest.raises(LocalProtocolError):
        c.create(_set(0, "c"), time=3)
    with pytest.raises(LocalProtocolError):
        c.create_many([_set(0, "c")], time=3)
    assert c.vector == a.vector
    assert c.endpoint_id not in c.vector


def test_dump_order_has_full_vectors(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    ida, idb = a.endpoint_id.hex(), b.endpoint_id.hex()
    _wa, wb = _diverge(a, b)
    a.receive(wb)
    b.receive(wires_of(a))
    a.create(_set(9, "a"), time=9)
    b.receive(wires_of(a))
    b.create(_set(9, "b"), time=10)
    a.receive(wires_of(b))
    dump = a.dump_order()
    assert dump == b.dump_order()
    assert causality_violation(dump) is None
    by_id = {(e["creator"], e["seq"]): e for e in dump}
    assert by_id[(ida, 1)]["deps"] == {}
    assert by_id[(ida, 2)]["deps"] == {ida: 1}
    assert by_id[(idb, 1)]["deps"] == {ida: 2}
    # Later deltas carry the full vector, not the diff they were sent with.
    assert by_id[(idb, 3)]["deps"] == {ida: 2, idb: 2}
    assert by_id[(ida, 6)]["deps"] == {ida: 5, idb: 3}
    assert by_id[(idb, 4)]["deps"] == {ida: 6, idb: 3}
    assert [e["seq"] for e in dump if e["creator"] == idb] == [1, 2, 3, 4]
    # The checker does catch an order that breaks a dependency.
    broken = [e for e in dump if e is not by_id[(idb, 4)]]
    broken.insert(broken.index(by_id[(ida, 6)]), by_id[(idb, 4)])
    assert causality_violation(broken) is not None


def test_member_added_by_peer_can_then_create(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    idc = identities[2]
    b.create([members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="c")], time=3)
    c = Replica.join(make_store("c"), idc, a.genesis.wire())
    c.receive(wires_of(b))
    d = c.create(_set(0, "c"), time=4)
    result = a.receive(wires_of(c))
    assert not result.rejected
    assert d.id in _log_ids(a)
    _same(a, c)


def test_local_create_keeps_a_staged_merge_staged(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    _wa, wb = _diverge(a, b, k=3)
    staged = a.receive(wb, defer=True).staged
    assert staged == a.staged_count > 0
    a.create(_set(0, "during catch-up"), time=9)  # appends; the staged merge waits
    assert a.staged_count == staged
    a.release()
    assert a.staged_count == 0
    b.receive(wires_of(a))
    _same(a, b)
