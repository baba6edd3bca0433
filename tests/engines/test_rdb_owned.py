"""rdb namespaces: an id in a member's namespace can be created by that member only, so a record
it owns cannot be squatted by a delta that sorts before it."""

from __future__ import annotations

from typing import Any

import pytest

from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.engine import DeltaContext
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.engines.rdb import RdbEngine
from p2pspace.errors import LocalProtocolError
from p2pspace.testing import MemoryEngineState
from tests.helpers.replicas import assert_same, log_ids, wires_of

ALICE, BOB = b"\xa1" * 16, b"\xb0" * 16


def _context(creator: bytes) -> DeltaContext:
    return DeltaContext(space=b"\x05" * 16, creator=creator, seq=1, time=0)


# -- ids -----------------------------------------------------------------------------------


def test_an_owned_id_is_the_creators_namespace_and_the_local_id() -> None:
    record = rdb.owned_id(ALICE, "post-1")
    assert record == "a1a1a1a1a1a1a1a1~post-1"
    assert rdb.namespace(ALICE) == "a1a1a1a1a1a1a1a1"
    assert rdb.namespace_of(record) == rdb.namespace(ALICE)
    longest = rdb.owned_id(ALICE, "x" * (rdb.MAX_RECORD - rdb.NAMESPACE_HEX - 1))
    assert len(longest) == rdb.MAX_RECORD


@pytest.mark.parametrize(
    ("creator", "local"),
    [
        (ALICE, ""),
        (ALICE, "a\0b"),
        (ALICE, "x" * (rdb.MAX_RECORD - rdb.NAMESPACE_HEX)),
        (b"\xa1" * 8, "x"),
        ("a1" * 16, "x"),
        (ALICE, 7),
    ],
)
def test_owned_id_refuses_what_is_not_a_record_id(creator: Any, local: Any) -> None:
    with pytest.raises(LocalProtocolError):
        rdb.owned_id(creator, local)


@pytest.mark.parametrize(
    "record",
    [
        "a1a1a1a1a1a1a1a1~",  # nothing after the separator
        "A1A1A1A1A1A1A1A1~x",  # upper case: not an endpoint id's hex
        "a1a1a1a1a1a1a1~x",  # too short
        "a1a1a1a1a1a1a1a1a1~x",  # too long
        "a1a1a1a1a1a1a1g1~x",
        "a1a1a1a1a1a1a1a1.x",
        "0123456789abcdef",  # the discussion's ids of earlier releases
    ],
)
def test_plain_ids_are_in_no_namespace(record: str) -> None:
    assert rdb.namespace_of(record) is None
    assert rdb.may_create(BOB, record, owned=False)
    assert not rdb.may_create(BOB, record, owned=True)


def test_an_owned_create_helper_refuses_a_plain_id() -> None:
    with pytest.raises(LocalProtocolError, match="owned_id"):
        rdb.create("posts", "p1", {"v": 1}, owned=True)
    rdb.create("posts", rdb.owned_id(BOB, "p1"), {"v": 1}, owned=True)  # any namespace is fine
    rdb.create("posts", "p1", {"v": 1})


# -- the engine ------------------------------------------------------------------------------


def _owned_create(record: str, fields: dict[str, Any]) -> Command:
    # Built by hand: rdb.create refuses an owned plain id before it reaches an engine.
    args = {"owned": True, "table": "posts", "fields": fields, "record": record}
    return Command(engine="db", name="create", args=args)


@pytest.mark.parametrize(
    ("creator", "command"),
    [
        (BOB, rdb.create("posts", rdb.owned_id(ALICE, "p"), {"v": "bob's"}, owned=True)),
        (BOB, rdb.create("posts", rdb.owned_id(ALICE, "p"), {"v": "bob's"})),  # not owned
        (ALICE, _owned_create("p", {"v": "a plain id"})),
        (BOB, _owned_create("p", {"v": "a plain id"})),
    ],
    ids=["owned-in-another-namespace", "plain-in-another-namespace", "owned-plain", "owned-plain2"],
)
def test_a_create_outside_its_creators_namespace_is_a_recorded_noop(
    creator: bytes, command: Command
) -> None:
    engine, state = RdbEngine(), MemoryEngineState()
    engine.validate(command)  # well-formed: who may create it is decided at execution
    assert engine.execute(state, command, _context(creator)) is None
    assert state.snapshot() == {}


def test_creates_in_ones_own_namespace_and_plain_creates_take_effect() -> None:
    engine, state = RdbEngine(), MemoryEngineState()
    mine = rdb.owned_id(ALICE, "p")
    assert engine.execute(state, rdb.create("posts", mine, {"v": 1}, owned=True), _context(ALICE))
    assert engine.execute(state, rdb.create("posts", "plain", {"v": 2}), _context(BOB))
    shared = rdb.owned_id(ALICE, "shared")  # not owned: only alice creates it, anyone edits it
    assert engine.execute(state, rdb.create("posts", shared, {"v": 3}), _context(ALICE))
    assert engine.execute(state, rdb.set_fields("posts", shared, {"v": 4}), _context(BOB))
    view = rdb.RdbView(state)
    assert view.get("posts", mine) == {"v": 1} and view.owner("posts", mine) == ALICE
    assert view.get("posts", "plain") == {"v": 2} and view.owner("posts", "plain") is None
    assert view.get("posts", shared) == {"v": 4} and view.owner("posts", shared) is None


# -- a squat attempt through two replicas ---------------------------------------------------------


@pytest.mark.parametrize("owned", [True, False], ids=["owned-squat", "plain-squat"])
def test_a_squat_that_sorts_first_is_a_noop_and_the_author_keeps_the_record(
    space_pair: tuple[Replica, Replica], owned: bool
) -> None:
    a, b = space_pair
    record = rdb.owned_id(a.endpoint_id, "post")
    # Alice's record goes into a delta of higher rank (one unrelated delta of hers first), ...
    a.create([rdb.create("t", "busy", {"v": 0})], time=3)
    post = a.create([rdb.create("posts", record, {"body": "alice's"}, owned=True)], time=4)
    # ... while bob, having seen her id on the wire, creates it in a delta that depends only on
    # older history: it sorts before hers in the total order.
    squat = b.create([rdb.create("posts", record, {"body": "bob's"}, owned=owned)], time=4)
    assert squat.rank < post.rank
    b.receive(wires_of(a))
    a.receive([squat.wire()])
    assert_same(a, b)
    order = log_ids(a)
    assert order.index(DeltaId(b.endpoint_id, squat.seq)) < order.index(
        DeltaId(a.endpoint_id, post.seq)
    )
    for replica in (a, b):
        view = rdb.view(replica)
        assert view.get("posts", record) == {"body": "alice's"}
        assert view.owner("posts", record) == a.endpoint_id
    # The author can still edit her record; bob's edit of it is a recorded no-op.
    edit = a.create([rdb.set_fields("posts", record, {"body": "edited by alice"})], time=5)
    b.receive([edit.wire()])
    foreign = b.create([rdb.set_fields("posts", record, {"body": "edited by bob"})], time=6)
    a.receive([foreign.wire()])
    assert_same(a, b)
    for replica in (a, b):
        assert rdb.view(replica).get("posts", record) == {"body": "edited by alice"}
