"""Checkpoints close blocks (DESIGN §12, p2pspace.core.checkpoint)."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.checkpoint import (
    BAD_DIGEST,
    CLOSED_BASE,
    NOT_CHECKPOINTER,
    OUT_OF_SEQUENCE,
    CheckpointPolicy,
)
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import PermissionDeniedError
from p2pspace.testing import causality_violation
from tests.helpers.replicas import UndoCounter, wires_of

IDS = [Identity.from_seed(f"checkpoint-{i}".encode()) for i in range(4)]


class Space:
    """A founder (IDS[0]) and two more managers, each with its own store."""

    def __init__(self, folder: Path) -> None:
        self.stores = [Store(folder / f"s{i}.sqlite3", durability="normal") for i in range(3)]
        a = Replica.create_space(self.stores[0], IDS[0], name="c", time=1, nonce=b"\x07" * 16)
        a.create(
            [
                members.add_command(
                    member_id=i.endpoint_id, key=i.public_key, name=f"m{n}", role="manager"
                )
                for n, i in enumerate(IDS[1:3], 1)
            ],
            time=2,
        )
        self.replicas = [a] + [
            Replica.join(self.stores[n], IDS[n], a.genesis.wire()) for n in (1, 2)
        ]
        self.sync()

    def sync(self) -> None:
        for dst in self.replicas:
            for src in self.replicas:
                if dst is not src:
                    assert not dst.receive(wires_of(src)).rejected

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def space(tmp_path: Path) -> Iterator[Space]:
    s = Space(tmp_path)
    yield s
    s.close()


def _blocks(replica: Replica) -> list[tuple[int, bytes, int, bytes | None]]:
    rows = replica.store._read(
        "SELECT block, creator, seq, undo FROM log WHERE space=? "
        "ORDER BY block, rank, creator, seq",
        (replica.space_id,),
    )
    return [(b, bytes(c), s, None if u is None else bytes(u)) for b, c, s, u in rows]


def test_a_checkpoint_closes_its_past_and_drops_its_undo_records(space: Space) -> None:
    a, b, _c = space.replicas
    for k in range(4):
        a.create([rdb.create("t", f"a{k}", {"v": k})], time=10)
        b.create([rdb.create("t", f"b{k}", {"v": k})], time=10)  # concurrent with all of a's
    checkpoint = a.create_checkpoint(time=20)
    assert a.horizon().number == 1 and a.horizon().checkpoint == checkpoint.id
    assert a.window() == (0, 0)
    assert all(block == CLOSED_BASE + 1 and undo is None for block, _c, _s, undo in _blocks(a))
    space.sync()
    for replica in space.replicas:
        assert replica.horizon().checkpoint == checkpoint.id
        rows = _blocks(replica)
        closed = [(c, s) for block, c, s, _u in rows if block < 0]
        open_ = [(c, s) for block, c, s, _u in rows if block == 0]
        # b's concurrent deltas sort after the block, whatever their rank; nothing else does.
        assert open_ == [(IDS[1].endpoint_id, s) for s in range(1, 5)]
        assert closed[-1] == (checkpoint.creator, checkpoint.seq)
        assert all(u is None for block, _c, _s, u in rows if block < 0)
        assert causality_violation(replica.dump_order()) is None
    assert len({(r.order_digest(), r.state_digest()) for r in space.replicas}) == 1


def test_a_backdated_delta_reorders_only_the_open_window(space: Space) -> None:
    a, b, _c = space.replicas
    stale = dict(b.vector)  # what b knew before the busy period
    for k in range(300):
        a.create([rdb.create("t", f"r{k}", {"v": k})], time=10)
    a.create_checkpoint(time=20)
    for k in range(5):
        a.create([rdb.set_fields("t", f"r{k}", {"v": -k})], time=30)
    # b, offline all along, writes a delta that depends only on old history (a low rank).
    assert b.vector == stale
    late = b.create([rdb.set_fields("t", "r0", {"late": True})], time=40)
    a.undo_listener = counter = UndoCounter(a)
    a.receive([late.wire()])
    assert sum(counter.counts.values()) <= 5  # the window after the checkpoint, not 300
    assert a.refusal(late.id) is None


def test_only_the_checkpointer_closes_a_block(space: Space) -> None:
    a, b, _c = space.replicas
    a.create([rdb.create("t", "x", {"v": 1})], time=10)
    space.sync()
    with pytest.raises(PermissionDeniedError):
        b.create_checkpoint(time=11)
    digest = bytes.fromhex(b.state_digest())
    forged = b.create([members.checkpoint_command(1, digest)], time=11)
    space.sync()
    for replica in space.replicas:
        assert replica.refusal(forged.id) == NOT_CHECKPOINTER
        assert replica.horizon().number == 0
    wrong = a.create([members.checkpoint_command(7, bytes.fromhex(a.state_digest()))], time=12)
    bad = a.create([members.checkpoint_command(1, b"\x00" * 32)], time=13)
    space.sync()
    for replica in space.replicas:
        assert replica.refusal(wrong.id) == OUT_OF_SEQUENCE
        assert replica.refusal(bad.id) == BAD_DIGEST
        assert replica.checkpoint_faults() == [(bad.id, BAD_DIGEST)]
        assert replica.horizon().number == 0


def test_the_checkpointer_hands_over_in_its_own_chain(space: Space) -> None:
    a, b, c = space.replicas
    # Anyone else's handover does nothing.
    c.create([members.checkpointer_command(IDS[2].endpoint_id)], time=5)
    space.sync()
    assert all(r.members().checkpointer() == IDS[0].endpoint_id for r in space.replicas)
    a.create([members.checkpointer_command(IDS[1].endpoint_id)], time=6)
    space.sync()
    assert not a.is_checkpointer() and b.is_checkpointer()
    made = b.create_checkpoint(time=7)
    space.sync()
    assert all(r.horizon().checkpoint == made.id for r in space.replicas)


def test_the_horizon_survives_a_restart(tmp_path: Path) -> None:
    space = Space(tmp_path)
    a = space.replicas[0]
    a.create([rdb.create("t", "x", {"v": 1})], time=10)
    made = a.create_checkpoint(time=20)
    a.create([rdb.create("t", "y", {"v": 1})], time=30)
    space.close()
    store = Store(tmp_path / "s0.sqlite3", durability="normal")
    try:
        again = Replica.open(store, IDS[0], a.space_id)
        horizon = again.horizon()
        assert (horizon.number, horizon.checkpoint, horizon.time) == (1, made.id, 20)
        assert again.window()[0] == 1
        second = again.create_checkpoint(time=40)
        assert again.horizon().number == 2 and again.horizon().checkpoint == second.id
    finally:
        store.close()


def test_policy_waits_for_a_bound_and_the_members_acks() -> None:
    policy = CheckpointPolicy(max_count=10, max_bytes=1000, max_age_ms=100, force=4)
    me, m1 = b"m" * 16, b"n" * 16
    vector = {me: 5, m1: 3}
    args: dict[str, Any] = {"vector": vector, "members": [m1]}
    caught_up = {m1: {me: 5, m1: 3}}
    assert not policy.due(count=0, size=0, age_ms=10_000, acked=caught_up, **args)
    assert not policy.due(count=5, size=100, age_ms=50, acked=caught_up, **args)
    for due in ({"count": 10, "size": 1, "age_ms": 0}, {"count": 1, "size": 1000, "age_ms": 0}):
        assert policy.due(acked=caught_up, **due, **args)
        assert not policy.due(acked={m1: {me: 4, m1: 3}}, **due, **args)  # m1 lacks one
    assert policy.due(count=2, size=1, age_ms=100, acked=caught_up, **args)
    # Far past a bound, a silent member no longer holds history back.
    assert policy.due(count=40, size=1, age_ms=0, acked={}, **args)


def test_checkpoint_due_only_for_the_checkpointer(space: Space) -> None:
    a, b, _c = space.replicas
    policy = CheckpointPolicy(max_count=3)
    for k in range(3):
        a.create([rdb.create("t", f"x{k}", {"v": k})], time=10)
    acked = {r.endpoint_id: dict(a.vector) for r in space.replicas[1:]}
    assert a.checkpoint_due(policy, now=11, acked=acked)
    assert not a.checkpoint_due(policy, now=11, acked={})
    space.sync()
    assert not b.checkpoint_due(policy, now=11, acked=acked)


# -- every delivery order -------------------------------------------------------------------


def _history(folder: Path, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    space = Space(folder)
    try:
        replicas = space.replicas
        t = 10
        for round_ in range(5):
            for n, r in enumerate(replicas):
                for _ in range(rng.randrange(1, 4)):
                    t += 1
                    r.create([rdb.set_fields("t", f"s{rng.randrange(2)}", {"v": t})], time=t)
                    if rng.random() < 0.3:
                        r.create([rdb.create("t", f"o{n}-{t}", {"n": n})], time=t)
            if round_ == 2:
                replicas[0].create([members.checkpointer_command(IDS[1].endpoint_id)], time=t)
            for r in replicas:
                if rng.random() < 0.5:
                    if r.is_checkpointer():
                        r.create_checkpoint(time=t)
                    elif r.role() == "manager":  # a concurrent one: closes nothing
                        digest = bytes.fromhex(r.state_digest())
                        number = r.horizon().number + 1
                        r.create([members.checkpoint_command(number, digest)], time=t)
            for dst in replicas:
                for src in replicas:
                    if dst is not src and rng.random() < 0.4:
                        dst.receive(wires_of(src))
        space.sync()
        assert len({r.order_digest() for r in replicas}) == 1
        return wires_of(replicas[0])
    finally:
        space.close()


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[list[bytes], Any]]:
    out = []
    for seed in range(4):
        folder = tmp_path_factory.mktemp(f"c{seed}")
        wires = _history(folder, seed)
        store = Store(folder / "s0.sqlite3", durability="normal")
        reference = Replica.open(store, IDS[0], _space_id(wires[0]))
        expected = (reference.order_digest(), reference.state_digest(), _shape(reference))
        store.close()
        out.append((wires, expected))
    return out


def _space_id(genesis: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "g.sqlite3", durability="normal")
        try:
            return Replica.join(store, IDS[3], genesis).space_id
        finally:
            store.close()


def _shape(replica: Replica) -> list[tuple[int, bytes, int, bool]]:
    """The blocks, and for each delta whether its undo record is kept (open or a no-op)."""
    return [(block, c, s, _undoable(undo)) for block, c, s, undo in _blocks(replica)]


def _undoable(undo: bytes | None) -> bool:
    if undo is None:
        return False
    record = codec.decode_stored(undo)
    return not (type(record) is dict and "noop" in record)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_delivery_order_closes_the_same_blocks(histories: Any, data: Any) -> None:
    wires, expected = histories[data.draw(st.integers(0, len(histories) - 1))]
    order = data.draw(st.permutations(wires[1:]))
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "f.sqlite3", durability="normal")
        try:
            replica = Replica.join(store, IDS[3], wires[0])
            i = 0
            while i < len(order):
                size = data.draw(st.integers(1, 6))
                assert not replica.receive(order[i : i + size]).rejected
                i += size
            assert replica.pending_count == 0
            got = (replica.order_digest(), replica.state_digest(), _shape(replica))
            assert got == expected
            assert replica.horizon().number >= 1
        finally:
            store.close()


def _removal_first_or_last(
    tmp_path: Path, history: list[bytes], removal: bytes, check: Callable[[str, Replica], None]
) -> None:
    """Deliver ``history`` (genesis first) to two fresh replicas, ``removal`` first to one and
    last to the other; ``check`` each, then require that both ended alike."""
    genesis, rest = history[0], [*history[1:], removal]
    orders = {"removal first": [removal, *rest[:-1]], "checkpoint first": rest}
    results = set()
    for label, order in orders.items():
        store = Store(tmp_path / f"{label}.sqlite3", durability="normal")
        try:
            fresh = Replica.join(store, IDS[3], genesis)
            for wire in order:
                fresh.receive([wire])
            assert fresh.pending_count == 0, label
            check(label, fresh)
            results.add((fresh.order_digest(), fresh.state_digest()))
        finally:
            store.close()
    assert len(results) == 1


def test_a_removal_outside_the_block_voids_nothing_in_it(space: Space, tmp_path: Path) -> None:
    a, b, c = space.replicas
    v = c.create([rdb.create("t", "by-c", {"v": 1})], time=10)
    a.receive([v.wire()])
    checkpoint = a.create_checkpoint(time=11)  # v is in its block
    removal = b.create([members.remove_command(IDS[2].endpoint_id)], time=12)  # b lacks v

    def check(label: str, fresh: Replica) -> None:
        assert fresh.horizon().checkpoint == checkpoint.id, label
        assert fresh.refusal(v.id) is None, label  # it ran: the removal sorts after
        assert rdb.view(fresh).get("t", "by-c") is not None, label

    _removal_first_or_last(tmp_path, wires_of(a), removal.wire(), check)


def test_a_checkpoint_concurrent_with_its_creators_removal_still_closes(
    space: Space, tmp_path: Path
) -> None:
    a, b, _c = space.replicas
    a.create([rdb.create("t", "x", {"v": 1})], time=10)
    space.sync()
    checkpoint = a.create_checkpoint(time=11)
    removal = b.create([members.remove_command(IDS[0].endpoint_id)], time=12)  # b lacks it

    def check(label: str, fresh: Replica) -> None:
        assert fresh.horizon().checkpoint == checkpoint.id, label
        assert fresh.members().role_of(IDS[0].endpoint_id) is None, label  # removed after

    _removal_first_or_last(tmp_path, wires_of(a), removal.wire(), check)


def test_a_concurrent_demotion_does_not_split_who_the_checkpointer_is(space: Space) -> None:
    a, b, c = space.replicas
    demote = c.create([members.role_command(IDS[1].endpoint_id, "participant")], time=10)
    a.create([members.checkpointer_command(IDS[1].endpoint_id)], time=12)
    b.receive(wires_of(a))
    made = b.create_checkpoint(time=13)  # b holds no demotion yet
    a.receive([demote.wire()])
    with pytest.raises(PermissionDeniedError):  # a handed over, whatever sorts first
        a.create_checkpoint(time=14)
    space.sync()
    for replica in space.replicas:
        assert replica.members().checkpointer() == IDS[1].endpoint_id
        assert replica.horizon().checkpoint == made.id
        assert replica.members().role_of(IDS[1].endpoint_id) == "participant"
    assert len({(r.order_digest(), r.state_digest()) for r in space.replicas}) == 1
