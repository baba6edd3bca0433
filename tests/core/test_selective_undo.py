"""Selective undo/redo (DESIGN §13) against full undo/redo.

A merge undoes only the executed deltas whose footprints conflict with what moves in front of
them; the result must be the one full undo/redo gives: the same order, the same engine state and
the same stored undo records, whatever the delivery order. Histories mix conflicting edits of
shared records, edits of one's own records, deletes and role changes (members deltas, which
conflict with everything after them).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pspace.core import merge
from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command, decode_delta
from p2pspace.core.engine_registry import register_engine
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.engines.rdb import RdbEngine
from p2pspace.errors import StorageError
from tests.helpers.replicas import UndoCounter, wires_of

IDS = [Identity.from_seed(f"selective-{i}".encode()) for i in range(4)]
FULL = Limits(selective_undo=False)


def _undo_rows(replica: Replica) -> list[tuple[bytes, int, bytes | None]]:
    rows = replica.store._read(
        "SELECT creator, seq, undo FROM log WHERE space=? ORDER BY creator, seq",
        (replica.space_id,),
    )
    return [(bytes(c), s, None if u is None else bytes(u)) for c, s, u in rows]


def _history(folder: Path, seed: int, engines: dict[str, str] | None = None) -> list[bytes]:
    """Three writers editing concurrently, exchanging a random part of what they hold after
    each round; returns every delta (genesis first) in one replica's final log order."""
    rng = random.Random(seed)
    stores = [Store(folder / f"h{i}.sqlite3", durability="normal") for i in range(3)]
    try:
        a = Replica.create_space(
            stores[0], IDS[0], name="s", time=1, nonce=bytes([seed % 256]) * 16, engines=engines
        )
        a.create(
            [
                members.add_command(member_id=i.endpoint_id, key=i.public_key, name=f"m{n}")
                for n, i in enumerate(IDS[1:3], 1)
            ]
            + [rdb.create("t", f"s{k}", {"v": 0}) for k in range(3)],
            time=2,
        )
        others = [Replica.join(stores[n], IDS[n], a.genesis.wire()) for n in (1, 2)]
        replicas = [a, *others]
        for r in others:
            r.receive(wires_of(a))
        t = 10
        for _round in range(rng.randrange(3, 7)):
            for n, r in enumerate(replicas):
                for _ in range(rng.randrange(1, 6)):
                    t += 1
                    if r.role() == "guest":
                        continue  # demoted here; its concurrent deltas elsewhere are no-ops
                    r.create(_commands(rng, n, t), time=t)
            for dst in replicas:
                for src in replicas:
                    if dst is not src and rng.random() < 0.3:
                        dst.receive(wires_of(src))
        for dst in replicas:
            for src in replicas:
                if dst is not src:
                    dst.receive(wires_of(src))
        assert len({r.order_digest() for r in replicas}) == 1
        return wires_of(a)
    finally:
        for s in stores:
            s.close()


def _commands(rng: random.Random, n: int, t: int) -> list[Command]:
    roll = rng.random()
    if n == 0 and roll < 0.08:
        target = IDS[rng.choice((1, 2))].endpoint_id
        return [members.role_command(target, rng.choice(("participant", "guest")))]
    if roll < 0.35:
        return [rdb.set_fields("t", f"s{rng.randrange(3)}", {"v": t, f"by{n}": t})]
    if roll < 0.45:
        return [rdb.delete("t", f"s{rng.randrange(3)}")]
    own = f"o{n}-{rng.randrange(4)}"
    if roll < 0.7:
        return [rdb.create("t", own, {"n": n})]
    return [rdb.set_fields("t", own, {"w": t}), rdb.set_fields("t", f"o{n}-x", {"t": t})]


class _Fresh:
    def __init__(self, genesis: bytes, limits: Limits) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.store = Store(Path(self._dir.name) / "f.sqlite3", durability="normal")
        self.replica = Replica.join(self.store, IDS[3], genesis, limits=limits)
        self.undos = UndoCounter(self.replica)
        self.replica.undo_listener = self.undos

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


def _deliver(wires: Sequence[bytes], batches: Sequence[Sequence[bytes]], limits: Limits) -> Any:
    fresh = _Fresh(wires[0], limits)
    try:
        for batch in batches:
            result = fresh.replica.receive(batch)
            assert not result.rejected
        r = fresh.replica
        assert r.pending_count == 0
        return r.order_digest(), r.state_digest(), _undo_rows(r), r.stats.undone
    finally:
        fresh.close()


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    return [_history(tmp_path_factory.mktemp(f"h{seed}"), seed) for seed in range(10)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_selective_undo_ends_as_full_undo(histories: list[list[bytes]], data: Any) -> None:
    wires = histories[data.draw(st.integers(0, len(histories) - 1), label="history")]
    order = data.draw(st.permutations(wires[1:]), label="order")
    batches: list[list[bytes]] = []
    i = 0
    while i < len(order):
        size = data.draw(st.integers(1, 8), label="batch")
        batches.append(list(order[i : i + size]))
        i += size
    selective = _deliver(wires, batches, Limits())
    full = _deliver(wires, batches, FULL)
    assert selective[:3] == full[:3]
    assert selective[3] <= full[3]


def test_disjoint_concurrent_edits_cost_no_undo(tmp_path: Path) -> None:
    """Two writers that touch different records: a late batch sorting first undoes nothing
    (full undo/redo undoes the whole suffix)."""
    wires = _two_writers(tmp_path, shared=False)
    late_first = _late_first(wires)
    assert _deliver(wires, late_first, Limits())[3] == 0
    assert _deliver(wires, late_first, FULL)[3] > 0


def test_conflicting_edits_are_undone_and_match_full(tmp_path: Path) -> None:
    wires = _two_writers(tmp_path, shared=True)
    late_first = _late_first(wires)
    selective, full = _deliver(wires, late_first, Limits()), _deliver(wires, late_first, FULL)
    assert selective[:3] == full[:3]
    assert 0 < selective[3] <= full[3]


# The space's creator has the larger id, so the other writer's deltas sort first at equal
# ranks: delivered last, they reorder the creator's.
FOUNDER, WRITER = sorted(IDS[:2], key=lambda i: i.endpoint_id, reverse=True)


def _two_writers(folder: Path, *, shared: bool) -> list[bytes]:
    stores = [Store(folder / f"w{i}.sqlite3", durability="normal") for i in range(2)]
    try:
        a = Replica.create_space(stores[0], FOUNDER, name="w", time=1, nonce=b"\x01" * 16)
        add = members.add_command(member_id=WRITER.endpoint_id, key=WRITER.public_key, name="b")
        a.create([add, rdb.create("t", "x", {"v": 0})], time=2)
        b = Replica.join(stores[1], WRITER, a.genesis.wire())
        b.receive(wires_of(a))
        for k in range(6):
            a.create([rdb.set_fields("t", "x" if shared else f"a{k}", {"a": k})], time=10 + k)
            b.create([rdb.set_fields("t", "x" if shared else f"b{k}", {"b": k})], time=10 + k)
        a.receive(wires_of(b))
        return wires_of(a)
    finally:
        for s in stores:
            s.close()


def _late_first(wires: list[bytes]) -> list[list[bytes]]:
    """The founder's deltas first, then the writer's (which sort before them)."""
    early = [w for w in wires[1:] if decode_delta(w).creator != WRITER.endpoint_id]
    late = [w for w in wires[1:] if decode_delta(w).creator == WRITER.endpoint_id]
    return [early, late]


@register_engine
class _OpaqueRdb(RdbEngine):
    """rdb without footprints: every merge over it must undo the whole suffix."""

    kind = "opaque-rdb-selective-test"

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return None


def test_an_engine_without_footprints_falls_back_to_full_undo(tmp_path: Path) -> None:
    wires = _history(tmp_path, 3, engines={"db": _OpaqueRdb.kind})
    order = list(reversed(wires[1:]))
    batches = [order[i : i + 3] for i in range(0, len(order), 3)]
    selective, full = _deliver(wires, batches, Limits()), _deliver(wires, batches, FULL)
    assert selective == full


def _deliver_late(wires: list[bytes], *, forget_footprints: bool = False) -> tuple[Any, int, int]:
    """:func:`_late_first` into a fresh replica; ``forget_footprints`` clears the rows'
    recorded footprints between the batches (a store made before they were kept). Returns
    the digests, the undo count and how many stored deltas the late merge decoded."""
    early, late = _late_first(wires)
    fresh = _Fresh(wires[0], Limits())
    try:
        r = fresh.replica
        assert not r.receive(early).rejected
        if forget_footprints:
            with r.store.transaction():
                r.store._db.execute("UPDATE log SET keys=NULL")
        decoded = 0

        def counting(wire: bytes) -> Any:
            nonlocal decoded
            decoded += 1
            return decode_delta(wire)

        undone = r.stats.undone
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(merge, "decode_delta", counting)
            assert not r.receive(late).rejected
        return (r.order_digest(), r.state_digest(), _undo_rows(r)), r.stats.undone - undone, decoded
    finally:
        fresh.close()


@pytest.mark.parametrize("shared", [False, True])
def test_a_merge_decodes_only_what_it_undoes(tmp_path: Path, shared: bool) -> None:
    """The footprints kept in the log spare the merge decoding the deltas it leaves in place;
    a store without them decodes the whole suffix and still reaches the same result."""
    wires = _two_writers(tmp_path, shared=shared)
    kept, undone, decoded = _deliver_late(wires)
    assert decoded == undone
    assert (undone > 0) is shared
    forgotten, undone_again, decoded_all = _deliver_late(wires, forget_footprints=True)
    assert forgotten == kept and undone_again == undone
    early, late = _late_first(wires)
    first = min(decode_delta(w).order_key for w in late)
    suffix = [w for w in early if decode_delta(w).order_key > first]
    assert 0 < len(suffix) == decoded_all


keys_sets = st.frozensets(st.binary(max_size=40), max_size=6)


@given(keys=st.none() | keys_sets)
def test_packed_footprints_round_trip(keys: frozenset[bytes] | None) -> None:
    assert merge.unpack_keys(merge.pack_keys(keys)) == keys


def test_unpackable_footprints() -> None:
    # A key too long to pack counts as touching everything; a cut value is a storage error.
    assert merge.unpack_keys(merge.pack_keys(frozenset({b"k" * 70_000}))) is None
    packed = merge.pack_keys(frozenset({b"abc", b"de"}))
    with pytest.raises(StorageError):
        merge.unpack_keys(packed[:-1])
