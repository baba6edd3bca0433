"""Staging during a catch-up: what waits, when it runs, and how often executed deltas undo."""

from __future__ import annotations

from p2pspace.core.delta import decode_delta
from p2pspace.core.replica import Replica
from p2pspace.core.staging import Stage
from tests.helpers.replicas import UndoCounter, assert_same, diverge, set_command, wires_of


def test_without_defer_each_batch_undoes_again(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    _wa, wb = diverge(a, b)
    counter = UndoCounter(a)
    for wire in wb:
        a.receive([wire])
    # The contrast to staging: a's last delta was undone once per arriving batch.
    assert max(counter.counts.values()) == 3
    assert counter.calls == 3


def test_defer_stages_and_release_merges_once(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    wa, wb = diverge(a, b)
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
    assert_same(a, b)
    assert a.release().executed == ()  # nothing left


def test_defer_stage_is_bounded(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    wa, wb = diverge(a, b, k=4)
    a.stage.max_count = 3
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
    assert_same(a, b)


def test_defer_appending_deltas_commit_in_groups(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    a.stage.append_batch = 2
    d1 = b.create(set_command(0, "b"), time=3)
    d2 = b.create(set_command(1, "b"), time=4)
    d3 = b.create(set_command(2, "b"), time=5)
    first = a.receive([d1.wire()], defer=True)  # appends, but waits for a group of two
    assert first.executed == () and a.staged_count == 1
    second = a.receive([d2.wire()], defer=True)
    assert [x.id for x in second.executed] == [d1.id, d2.id]
    assert second.undone == 0 and a.staged_count == 0
    third = a.receive([d3.wire()], defer=False)  # not deferred: executes at once
    assert [x.id for x in third.executed] == [d3.id]
    assert_same(a, b)


def test_local_create_keeps_a_staged_merge_staged(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    _wa, wb = diverge(a, b, k=3)
    staged = a.receive(wb, defer=True).staged
    assert staged == a.staged_count > 0
    a.create(set_command(0, "during catch-up"), time=9)  # appends; the staged merge waits
    assert a.staged_count == staged
    a.release()
    assert a.staged_count == 0
    b.receive(wires_of(a))
    assert_same(a, b)


def test_stage_waits_only_while_deferred_and_under_its_bounds(
    space_pair: tuple[Replica, Replica],
) -> None:
    a, b = space_pair
    _wa, wb = diverge(a, b)
    deltas = [decode_delta(w) for w in wb]
    last_key = max(d.order_key for d in deltas)
    stage = Stage(max_count=3, append_batch=2)
    assert not stage.must_wait(defer=True, last_key=None)  # nothing staged: nothing to wait for
    stage.add(deltas[1], wb[1])
    assert stage.get(deltas[1].id) == deltas[1]
    assert stage.get(deltas[0].id) is None
    assert not stage.must_wait(defer=False, last_key=last_key)
    # Reordering (the log already holds later keys): waits for the merge, up to max_count.
    assert stage.must_wait(defer=True, last_key=last_key)
    stage.add(deltas[0], wb[0])
    assert stage.must_wait(defer=True, last_key=last_key)
    # Appending (the stage sorts after the log): waits only for a group of append_batch.
    assert not stage.must_wait(defer=True, last_key=None)
    stage.add(deltas[2], wb[2])
    assert not stage.must_wait(defer=True, last_key=last_key)  # max_count reached
    assert [d for d, _w in stage.take()] == sorted(deltas, key=lambda d: d.order_key)
    assert len(stage) == 0
    byte_bound = Stage(max_bytes=len(wb[0]))
    byte_bound.add(deltas[0], wb[0])
    assert not byte_bound.must_wait(defer=True, last_key=last_key)  # max_bytes reached
