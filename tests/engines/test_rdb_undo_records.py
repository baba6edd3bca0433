"""rdb undo records hold what a command changed, not the record it changed: a member cannot make
every replica store much more than it sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from p2pspace.core import codec
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.engines.rdb import RdbEngine, record_key
from p2pspace.testing import MemoryEngineState

CONTEXT = DeltaContext(space=b"\x05" * 16, creator=b"\x07" * 16, seq=1, time=0)


@pytest.fixture
def replica(make_store: Callable[[str], Store], identities: list[Identity]) -> Replica:
    return Replica.create_space(
        make_store("undo"), identities[0], name="undo", time=1, nonce=b"\x03" * 16
    )


def _stored_undo(replica: Replica) -> bytes:
    """The undo blob stored with the latest executed delta, as the store holds it."""
    rows = replica.store.suffix_desc(replica.space_id, (-1, 0, b"", 0))
    undo = rows[0][5]
    assert undo is not None
    return undo


def test_a_one_field_set_on_a_large_record_stores_a_small_undo_record(replica: Replica) -> None:
    big = {f"f{i:02d}": "x" * 1_000 for i in range(40)}
    replica.create([rdb.create("t", "big", {**big, "n": 1})], time=2)
    record = replica.state("db").get(record_key("t", "big"))
    assert record is not None and len(record) > 40_000

    set_one = rdb.set_fields("t", "big", {"n": 2})
    delta = replica.create([set_one], time=3)
    undo = _stored_undo(replica)
    assert codec.decode(undo) == [[{"n": 1}, []]]
    # Bounded by the changed field (an int here), not by the 40 kB record; smaller than the
    # delta that caused it (which carries its signature and header).
    assert len(undo) <= 16
    assert len(undo) < len(delta.wire())

    # A set that replaces a large field stores that field's old value, and nothing else.
    replica.create([rdb.set_fields("t", "big", {"f00": "y", "new": True})], time=4)
    undo = _stored_undo(replica)
    assert codec.decode(undo) == [[{"f00": "x" * 1_000}, ["new"]]]
    assert len(undo) < 1_000 + 32

    replica.create([rdb.delete("t", "big")], time=5)
    assert len(_stored_undo(replica)) <= 4  # [[False]]


SAMPLES: list[tuple[str, dict[str, Any], Command]] = [
    ("replace", {"a": 1, "b": "x"}, rdb.set_fields("t", "r", {"b": "y"})),
    ("add", {"a": 1}, rdb.set_fields("t", "r", {"zz": [1, 2], "b": None})),
    ("float", {"f": 1.5, "g": -0.0}, rdb.set_fields("t", "r", {"f": 2.25, "g": 0.1})),
    ("nested", {"m": {"k": [b"\x00", {"x": 1}]}}, rdb.set_fields("t", "r", {"m": {"k": 2}})),
    ("same-value", {"a": 1}, rdb.set_fields("t", "r", {"a": 1})),
    ("delete", {"a": 1, "b": [1.5]}, rdb.delete("t", "r")),
]


@pytest.mark.parametrize("owned", [False, True])
@pytest.mark.parametrize(
    ("fields", "command"), [(f, c) for _n, f, c in SAMPLES], ids=[n for n, _f, _c in SAMPLES]
)
def test_undo_restores_the_record_byte_for_byte(
    fields: dict[str, Any], command: Command, owned: bool
) -> None:
    engine, state = RdbEngine(), MemoryEngineState()
    record = rdb.owned_id(CONTEXT.creator, "r") if owned else "r"
    args = {**command.args, "record": record}
    command = Command(engine="db", name=command.name, args=args)
    engine.execute(state, rdb.create("t", record, fields, owned=owned), CONTEXT)
    before = state.snapshot()
    undo = engine.execute(state, command, CONTEXT)
    assert undo is not None  # it applied (a set of a field to its own value changes no byte)
    # Through the store's round trip, as the replica keeps it.
    engine.undo(state, command, codec.decode_stored(codec.encode_local(undo)))
    assert state.snapshot() == before


def test_whole_record_undo_records_of_earlier_releases_still_restore() -> None:
    # Earlier releases stored [previous record bytes] for every set and delete.
    engine, state = RdbEngine(), MemoryEngineState()
    engine.execute(state, rdb.create("t", "r", {"a": 1}), CONTEXT)
    before = state.snapshot()
    old = before[record_key("t", "r")]
    for command in (rdb.set_fields("t", "r", {"a": 2, "b": 3}), rdb.delete("t", "r")):
        engine.execute(state, command, CONTEXT)
        engine.undo(state, command, [old])
        assert state.snapshot() == before
