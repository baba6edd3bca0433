"""Replica: local creation, merging concurrent histories, reopen, listeners after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest

import p2pspace.core.authenticity
from p2pspace.core.delta import Delta
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import LocalProtocolError
from p2pspace.testing import causality_violation
from tests.helpers.replicas import (
    UndoCounter,
    assert_same,
    diverge,
    log_ids,
    seed_record,
    set_command,
    wires_of,
)


def test_local_create_appends(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    a.create([rdb.create("t", "r", {"v": 0})], time=3)
    b.receive(wires_of(a))
    # b runs ahead in rank; a merges b's deltas, then creates: the new delta sorts last.
    for i in range(4):
        b.create(set_command(i, "b"), time=4 + i)
    a.create(set_command(0, "a"), time=4)
    a.receive(wires_of(b))
    b.receive(wires_of(a))
    counter, b_counter = UndoCounter(a), UndoCounter(b)
    undone = a.stats.undone
    for i in range(1, 4):
        d = a.create(set_command(i, "a"), time=10 + i)
        assert log_ids(a)[-1] == d.id
        assert d.rank == max(r for _c, _s, r, _w in a.store.iter_log(a.space_id))
    assert a.stats.undone == undone
    assert counter.calls == 0
    # b receives a's appended deltas; they append on b as well.
    result = b.receive(wires_of(a))
    assert len(result.executed) == 3
    assert result.undone == 0
    assert b_counter.calls == 0
    assert_same(a, b)


@pytest.mark.parametrize("k", [1, 3])
def test_concurrent_deltas_merge(space_pair: tuple[Replica, Replica], k: int) -> None:
    a, b = space_pair
    seed_record(a, b)
    da = [a.create(set_command(i, "a"), time=3 + i) for i in range(k)]
    db = [b.create(set_command(i, "b"), time=3 + i) for i in range(k)]
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
    assert_same(a, b)
    assert log_ids(a)[3:] == [d.id for d in sorted(da + db, key=lambda d: d.order_key)]
    winner = max(da + db, key=lambda d: d.order_key)
    assert rdb.view(a).get("t", "r") is not None
    assert rdb.view(a).get("t", "r")["v"] == winner.commands[0].args["fields"]["v"]
    assert causality_violation(a.dump_order()) is None


def test_create_many_signs_last_of_chain(
    space_pair: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = space_pair
    chain = a.create_many([set_command(i, "a") for i in range(4)], time=3)
    assert [d.signature is not None for d in chain] == [False, False, False, True]
    assert [d.seq for d in chain] == [3, 4, 5, 6]
    assert all(chain[i + 1].prev == chain[i].hash for i in range(3))
    assert [dict(d.deps) for d in chain[1:]] == [{}, {}, {}]
    # Chains longer than MAX_CHAIN are signed every MAX_CHAIN deltas.
    monkeypatch.setattr(p2pspace.core.authenticity, "MAX_CHAIN", 3)
    long = a.create_many([set_command(i, "L") for i in range(7)], time=4)
    assert [d.signature is not None for d in long] == [False, False, True] * 2 + [True]
    result = b.receive(wires_of(a))
    assert not result.rejected
    assert len(result.executed) == 11
    assert_same(a, b)
    assert a.create_many([], time=5) == []


def test_create_many_is_one_transaction(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    before = (dict(a.vector), a.order_digest(), a.state_digest())
    with pytest.raises(LocalProtocolError):
        a.create_many([set_command(0, "a"), [rdb.delete("", "r")]], time=3)
    assert (dict(a.vector), a.order_digest(), a.state_digest()) == before


def test_reopen_restores_everything(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    seed_record(a, b)
    _wa, wb = diverge(a, b)
    a.receive(wb)
    a.create_many([set_command(i, "c") for i in range(3)], time=9)
    last = a.create(set_command(9, "a"), time=10)
    expected = (dict(a.vector), a.order_digest(), a.state_digest(), a.dump_order())
    record = rdb.view(a).get("t", "r")
    assert record is not None
    space_id = a.space_id
    a.store.close()

    a2 = Replica.open(make_store("a"), identities[0], space_id)
    assert (dict(a2.vector), a2.order_digest(), a2.state_digest(), a2.dump_order()) == expected
    assert a2.member_ids() == sorted([identities[0].endpoint_id, identities[1].endpoint_id])
    assert rdb.view(a2).get("t", "r") == record
    d = a2.create(set_command(10, "a"), time=11)
    # The hash chain and the own dependency vector survived: nothing new since ``last``.
    assert d.seq == last.seq + 1
    assert d.prev == last.hash
    assert d.deps == ()
    assert d.rank == last.rank + 1
    result = b.receive(wires_of(a2))
    assert not result.rejected
    assert_same(a2, b)
    with pytest.raises(LocalProtocolError):
        Replica.open(a2.store, identities[0], b"\x00" * 16)


def test_reopen_then_peer_delta_and_own_deps(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    a.create(set_command(0, "a"), time=3)
    space_id = a.space_id
    a.store.close()
    db = b.create(set_command(0, "b"), time=3)
    a2 = Replica.open(make_store("a"), identities[0], space_id)
    a2.receive([db.wire()])
    d = a2.create(set_command(1, "a"), time=4)
    assert dict(d.deps) == {b.endpoint_id: db.seq}  # only what grew since a's previous delta
    assert not b.receive(wires_of(a2)).rejected
    assert_same(a2, b)


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
        c.create(set_command(0, "c"), time=3)
    with pytest.raises(LocalProtocolError):
        c.create_many([set_command(0, "c")], time=3)
    assert c.vector == a.vector
    assert c.endpoint_id not in c.vector


def test_dump_order_has_full_vectors(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    ida, idb = a.endpoint_id.hex(), b.endpoint_id.hex()
    _wa, wb = diverge(a, b)
    a.receive(wb)
    b.receive(wires_of(a))
    a.create(set_command(9, "a"), time=9)
    b.receive(wires_of(a))
    b.create(set_command(9, "b"), time=10)
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
    a.create([members.role_command(b.endpoint_id, "manager")], time=3)
    b.receive(wires_of(a))
    b.create([members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="c")], time=3)
    c = Replica.join(make_store("c"), idc, a.genesis.wire())
    c.receive(wires_of(b))
    d = c.create(set_command(0, "c"), time=4)
    result = a.receive(wires_of(c))
    assert not result.rejected
    assert d.id in log_ids(a)
    assert_same(a, c)


class ListenerProbe:
    """A listener that records each call and proves it runs outside any store transaction."""

    def __init__(self, replica: Replica) -> None:
        self.calls: list[list[tuple[Delta, bytes]]] = []
        replica.listeners.append(self)

    def __call__(self, replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
        # Store transactions do not nest: this raises if the merge's transaction were open.
        with replica.store.transaction():
            pass
        # What the listener is told is already committed, so visible in the log.
        logged = set(wires_of(replica))
        assert all(wire in logged for _d, wire in executed)
        self.calls.append(list(executed))


def test_listeners_hear_after_commit_once_per_call(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    probe_a, probe_b = ListenerProbe(a), ListenerProbe(b)
    _wa, wb = diverge(a, b)
    assert [[d.seq for d, _w in call] for call in probe_a.calls] == [[3], [4], [5]]
    result = a.receive(wb)
    assert result.undone > 0  # a merge: undo and redo ran inside one transaction
    assert probe_a.calls[-1] == list(result.executed_wires)
    assert [d for d, _w in result.executed_wires] == list(result.executed)
    assert [w for _d, w in result.executed_wires] == wb
    chain = a.create_many([set_command(i, "c") for i in range(3)], time=9)
    assert [d for d, _w in probe_a.calls[-1]] == chain  # one call for the whole group
    assert len(probe_b.calls) == 3
    assert a.receive(wb).executed_wires == ()  # duplicates: nothing executed, nobody told
    assert len(probe_a.calls) == 5


def test_staged_deltas_are_heard_when_released(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    _wa, wb = diverge(a, b)
    probe = ListenerProbe(a)
    assert a.receive(wb, defer=True).executed_wires == ()
    assert probe.calls == []
    result = a.release()
    assert probe.calls == [list(result.executed_wires)]
    assert [w for _d, w in result.executed_wires] == wb


def test_a_failing_listener_does_not_undo_the_commit(
    space_pair: tuple[Replica, Replica], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = space_pair

    def broken(_replica: Replica, _executed: Sequence[tuple[Delta, bytes]]) -> None:
        raise RuntimeError("listener bug")

    a.listeners.append(broken)
    probe = ListenerProbe(a)
    with caplog.at_level(logging.ERROR, logger="p2pspace.core.replica"):
        d = a.create(set_command(0, "a"), time=3)
    assert "listener" in caplog.text
    assert probe.calls == [[(d, d.wire())]]  # the listener after the broken one still heard
    assert log_ids(a)[-1] == d.id
    assert not b.receive(wires_of(a)).rejected
    assert_same(a, b)
