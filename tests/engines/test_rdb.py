"""The record database engine, through a real Replica and directly against a store's KVState."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2pspace.core import codec
from p2pspace.core.delta import Command, Delta, make_body
from p2pspace.core.engine import DeltaContext
from p2pspace.core.identity import Identity
from p2pspace.core.kv_state import KVState
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.engines.rdb import RdbEngine, RdbView, record_key
from p2pspace.errors import CommandError, LocalProtocolError, StorageError
from tests.helpers.replicas import wires_of


@pytest.fixture
def replica(make_store: Callable[[str], Store], identities: list[Identity]) -> Replica:
    return Replica.create_space(
        make_store("rdb"), identities[0], name="rdb", time=1, nonce=b"\x01" * 16
    )


def _last_undo(replica: Replica) -> Any:
    """The decoded undo blob of the latest executed delta (one record per command)."""
    rows = replica.store.suffix_desc(replica.space_id, (-1, 0, b"", 0))
    undo = rows[0][5]
    assert undo is not None
    return codec.decode(undo)


def craft(sender: Replica, commands: list[Command], *, time: int = 9) -> Delta:
    """A correctly chained, ranked and signed next delta of ``sender``, skipping validation."""
    me = sender.endpoint_id
    heads = sender.store.heads(sender.space_id)
    seq, _rank, prev = heads.get(me, (0, 0, b""))
    unsigned = make_body(
        space=sender.space_id,
        creator=me,
        seq=seq + 1,
        rank=max(r for _s, r, _h in heads.values()) + 1,
        deps={c: s for c, s in sender.vector.items() if c != me},
        prev=prev,
        time=time,
        commands=commands,
    )
    return unsigned.with_signature(sender.identity.sign(unsigned.body))


# -- semantics through a replica ------------------------------------------------------------------


def test_create_set_delete(replica: Replica) -> None:
    view = rdb.view(replica)
    replica.create([rdb.create("t", "r1", {"a": 1, "b": "x"})], time=2)
    assert view.get("t", "r1") == {"a": 1, "b": "x"}
    assert _last_undo(replica) == [[None]]

    replica.create([rdb.set_fields("t", "r1", {"b": "y", "c": [1, b"\x00", None]})], time=3)
    assert view.get("t", "r1") == {"a": 1, "b": "y", "c": [1, b"\x00", None]}
    # Only what the set changed: b's old value, and c, which the record did not have.
    assert _last_undo(replica) == [[{"b": "x"}, ["c"]]]

    replica.create([rdb.delete("t", "r1")], time=4)
    assert _last_undo(replica) == [[False]]
    assert view.get("t", "r1") is None
    raw = replica.state("db").get(record_key("t", "r1"))
    assert raw is not None
    assert codec.decode(raw) == [{"a": 1, "b": "y", "c": [1, b"\x00", None]}, True]
    assert list(view.records("t")) == []
    assert view.tables() == ["t"]  # the tombstone keeps the table known


def test_noops_are_recorded(replica: Replica) -> None:
    view = rdb.view(replica)
    state = replica.state("db")
    # set / delete on a missing record
    replica.create([rdb.set_fields("t", "ghost", {"a": 1})], time=2)
    assert _last_undo(replica) == [None]
    replica.create([rdb.delete("t", "ghost")], time=3)
    assert _last_undo(replica) == [None]
    assert state.get(record_key("t", "ghost")) is None
    assert {i for i, _k, _v in replica.store.state_rows(replica.space_id)} == {"members"}

    replica.create([rdb.create("t", "r", {"a": 1})], time=4)
    before = state.get(record_key("t", "r"))
    # create on an existing record
    replica.create([rdb.create("t", "r", {"a": 2, "z": 0})], time=5)
    assert _last_undo(replica) == [None]
    assert state.get(record_key("t", "r")) == before
    assert view.get("t", "r") == {"a": 1}

    replica.create([rdb.delete("t", "r")], time=6)
    tomb = state.get(record_key("t", "r"))
    # set, delete and create on a deleted record
    for i, command in enumerate(
        [rdb.set_fields("t", "r", {"a": 3}), rdb.delete("t", "r"), rdb.create("t", "r", {"a": 4})]
    ):
        replica.create([command], time=7 + i)
        assert _last_undo(replica) == [None]
        assert state.get(record_key("t", "r")) == tomb
    assert view.get("t", "r") is None
    assert replica.executed_count() == 1 + 3 + 2 + 3  # genesis + the deltas above: all in the log


def test_several_commands_in_one_delta(replica: Replica) -> None:
    replica.create(
        [
            rdb.create("t", "a", {"n": 1}),
            rdb.set_fields("t", "a", {"n": 2}),
            rdb.create("u", "b", {"n": 3}),
            rdb.delete("t", "missing"),
        ],
        time=2,
    )
    undo = _last_undo(replica)
    assert len(undo) == 4
    assert undo[0] == [None] and undo[3] is None
    view = rdb.view(replica)
    assert list(view.records("t")) == [("a", {"n": 2})]
    assert view.tables() == ["t", "u"]


def test_records_and_tables_views(replica: Replica) -> None:
    replica.create(
        [
            rdb.create("t", "b", {"v": 2}),
            rdb.create("t", "a", {"v": 1}),
            rdb.create("t", "c", {"v": 3}),
            rdb.create("tt", "a", {"v": 9}),
            rdb.create("s", "x", {"v": 0}),
        ],
        time=2,
    )
    replica.create([rdb.delete("t", "c")], time=3)
    view = rdb.view(replica)
    # "tt" must not leak into "t" although its key starts with the same bytes
    assert list(view.records("t")) == [("a", {"v": 1}), ("b", {"v": 2})]
    assert list(view.records("tt")) == [("a", {"v": 9})]
    assert list(view.records("nope")) == []
    assert view.tables() == ["s", "t", "tt"]


def test_other_instance(make_store: Callable[[str], Store], identities: list[Identity]) -> None:
    replica = Replica.create_space(
        make_store("x"),
        identities[0],
        name="x",
        time=1,
        engines={"db": "rdb", "notes": "rdb"},
        nonce=b"\x02" * 16,
    )
    replica.create([rdb.create("t", "r", {"v": 1}, instance="notes")], time=2)
    assert rdb.view(replica, "notes").get("t", "r") == {"v": 1}
    assert rdb.view(replica, "db").get("t", "r") is None
    with pytest.raises(LocalProtocolError):
        rdb.view(replica, "members")  # an instance, but not of the rdb kind
    with pytest.raises(LocalProtocolError):
        rdb.view(replica, "nothere")
    with pytest.raises(LocalProtocolError):
        replica.create([rdb.create("t", "r", {"v": 1}, instance="nothere")], time=3)


def test_later_set_wins_on_every_replica(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    a.create([rdb.create("t", "r", {"v": 0, "w": 0})], time=3)
    b.receive(wires_of(a))
    da = a.create([rdb.set_fields("t", "r", {"v": "a"})], time=4)
    db = b.create([rdb.set_fields("t", "r", {"v": "b", "w": "b"})], time=4)
    db2 = b.create([rdb.delete("t", "r")], time=5)
    a.receive([db.wire(), db2.wire()])
    b.receive([da.wire()])
    assert a.state_digest() == b.state_digest()
    assert a.order_digest() == b.order_digest()
    # da and db are concurrent with equal rank: the creator id breaks the tie, db2 is last.
    assert da.rank == db.rank
    assert rdb.view(a).get("t", "r") is None
    raw = a.state("db").get(record_key("t", "r"))
    assert raw is not None
    fields, deleted = codec.decode(raw)
    assert deleted is True
    winner = "a" if a.endpoint_id > b.endpoint_id else "b"
    assert fields == {"v": winner, "w": "b"}


def test_corrupt_record_is_storage_error(replica: Replica) -> None:
    with replica.store.transaction():
        replica.state("db").put(record_key("t", "r"), b"\xff\xff")
        replica.state("db").flush()
    with pytest.raises(StorageError):
        rdb.view(replica).get("t", "r")


# -- validation -----------------------------------------------------------------------------------

BAD_COMMANDS: list[tuple[str, str, Any]] = [
    ("unknown-command", "update", {"table": "t", "record": "r", "fields": {"a": 1}}),
    ("args-not-map", "create", ["t", "r", {"a": 1}]),
    ("missing-fields", "create", {"table": "t", "record": "r"}),
    ("extra-key", "set", {"table": "t", "record": "r", "fields": {"a": 1}, "x": 1}),
    ("delete-with-fields", "delete", {"table": "t", "record": "r", "fields": {"a": 1}}),
    ("empty-table", "create", {"table": "", "record": "r", "fields": {"a": 1}}),
    ("nul-in-table", "create", {"table": "t\x00u", "record": "r", "fields": {"a": 1}}),
    ("long-table", "delete", {"table": "t" * (rdb.MAX_TABLE + 1), "record": "r"}),
    ("bytes-record", "delete", {"table": "t", "record": b"r"}),
    ("nul-in-record", "delete", {"table": "t", "record": "r\x00"}),
    ("long-record", "delete", {"table": "t", "record": "r" * (rdb.MAX_RECORD + 1)}),
    ("int-record", "set", {"table": "t", "record": 7, "fields": {"a": 1}}),
    ("fields-not-map", "set", {"table": "t", "record": "r", "fields": [1]}),
    ("empty-fields", "create", {"table": "t", "record": "r", "fields": {}}),
    (
        "too-many-fields",
        "create",
        {"table": "t", "record": "r", "fields": {f"f{i}": i for i in range(rdb.MAX_FIELDS + 1)}},
    ),
    ("bytes-field-name", "set", {"table": "t", "record": "r", "fields": {b"a": 1}}),
    ("empty-field-name", "set", {"table": "t", "record": "r", "fields": {"": 1}}),
    ("long-field-name", "set", {"table": "t", "record": "r", "fields": {"f" * 65: 1}}),
]


@pytest.mark.parametrize(
    ("name", "args"), [(n, a) for _i, n, a in BAD_COMMANDS], ids=[i for i, _n, _a in BAD_COMMANDS]
)
def test_validate_refuses_bad_shapes(
    space_pair: tuple[Replica, Replica], name: str, args: Any
) -> None:
    a, b = space_pair
    command = Command(engine="db", name=name, args=args)
    with pytest.raises(CommandError):
        RdbEngine().validate(command)

    # Locally: refused before anything is stored.
    digests = (a.order_digest(), a.state_digest())
    with pytest.raises(LocalProtocolError):
        a.create([command], time=5)
    assert (a.order_digest(), a.state_digest()) == digests

    # Remotely: a signed, well-chained delta holding it may come from a newer release: it is
    # kept (causality holds, it is relayed) but is a recorded no-op that changes no state.
    state_before = b.state_digest()
    crafted = craft(a, [command])
    result = b.receive([crafted.wire()])
    assert result.rejected == () and result.unsupported == (crafted.id,)
    assert b.state_digest() == state_before
    assert b.refusal(crafted.id) is not None
    assert b.pending_count == 0


def test_validate_accepts_limits() -> None:
    engine = RdbEngine()
    engine.validate(
        rdb.create(
            "t" * rdb.MAX_TABLE,
            "r" * rdb.MAX_RECORD,
            {f"{i:0{rdb.MAX_FIELD}d}": i for i in range(rdb.MAX_FIELDS)},
        )
    )
    engine.validate(rdb.set_fields("t", "r", {"f": {"nested": [1.5, True, None, b""]}}))
    engine.validate(rdb.delete("t", "r"))


def test_valid_crafted_delta_is_accepted(space_pair: tuple[Replica, Replica]) -> None:
    """The crafting helper itself makes acceptable deltas (so rejections above are real)."""
    a, b = space_pair
    result = b.receive([craft(a, [rdb.create("t", "r", {"v": 1})]).wire()])
    assert not result.rejected
    assert len(result.executed) == 1
    assert rdb.view(b).get("t", "r") == {"v": 1}


# -- undo exactness -----------------------------------------------------------------------------

TABLES = ("t", "u")
CREATOR = b"\x07" * 16
# The executing creator's namespace and another's: creates in the other one are no-ops.
OWNED_RECORDS = (rdb.owned_id(CREATOR, "o"), rdb.owned_id(b"\x08" * 16, "o"))
RECORDS = ("a", "b", "c", *OWNED_RECORDS)
FIELD_NAMES = ("x", "y", "z")
values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 3), max_size=2),
)
field_maps = st.dictionaries(st.sampled_from(FIELD_NAMES), values, min_size=1, max_size=3)
commands = st.one_of(
    st.builds(rdb.create, st.sampled_from(TABLES), st.sampled_from(RECORDS), field_maps),
    st.builds(
        lambda table, record, fields: rdb.create(table, record, fields, owned=True),
        st.sampled_from(TABLES),
        st.sampled_from(OWNED_RECORDS),
        field_maps,
    ),
    st.builds(rdb.set_fields, st.sampled_from(TABLES), st.sampled_from(RECORDS), field_maps),
    st.builds(rdb.delete, st.sampled_from(TABLES), st.sampled_from(RECORDS)),
)

SPACE = b"\x05" * 16
CONTEXT = DeltaContext(space=SPACE, creator=CREATOR, seq=1, time=0)


class RdbUndoMachine(RuleBasedStateMachine):
    """Random rdb commands executed and undone against a real store; undo must be byte-exact."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.store = Store(Path(self._dir.name) / "s.sqlite3", durability="normal")
        self.engine = RdbEngine()
        self.state = KVState(self.store, SPACE, "db")
        self.view = RdbView(self.state)
        # (command, encoded undo record, state rows before it)
        self.done: list[tuple[Command, bytes, list[tuple[str, bytes, bytes]]]] = []
        self.model: dict[tuple[str, str], tuple[dict[str, Any], bool]] = {}
        self.models: list[dict[tuple[str, str], tuple[dict[str, Any], bool]]] = []

    @initialize()
    def neighbours(self) -> None:
        # Rows of another instance and another space sharing the keys: must never be touched.
        with self.store.transaction():
            self.store.state_put(SPACE, "da", record_key("t", "a"), b"other instance")
            self.store.state_put(SPACE, "dc", b"zzz", b"other instance")
            self.store.state_put(b"\x06" * 16, "db", record_key("t", "a"), b"other space")
        self.initial = self.rows()

    def rows(self) -> list[tuple[str, bytes, bytes]]:
        return self.store.state_rows(SPACE) + self.store.state_rows(b"\x06" * 16)

    def _apply(self, command: Command) -> None:
        before = self.rows()
        self.models.append(dict(self.model))
        with self.store.transaction():
            undo = self.engine.execute(self.state, command, CONTEXT)
            self.state.flush()
        # The replica stores undo records as canonical CBOR; go through the same round trip.
        self.done.append((command, codec.encode_trusted(undo), before))
        args = command.args
        key = (args["table"], args["record"])
        current = self.model.get(key)
        if command.name == "create":
            owned = args.get("owned") is True
            if current is None and rdb.may_create(CREATOR, args["record"], owned=owned):
                self.model[key] = (dict(args["fields"]), False)
        elif current is not None and not current[1]:
            if command.name == "set":
                self.model[key] = ({**current[0], **args["fields"]}, False)
            else:
                self.model[key] = (current[0], True)

    def _undo_last(self) -> Command:
        command, undo, before = self.done.pop()
        with self.store.transaction():
            self.engine.undo(self.state, command, codec.decode(undo))
            self.state.flush()
        assert self.rows() == before
        self.model = self.models.pop()
        return command

    @rule(command=commands)
    def execute(self, command: Command) -> None:
        self.engine.validate(command)
        self._apply(command)

    @precondition(lambda self: bool(self.done))
    @rule(k=st.integers(1, 8))
    def undo_suffix_then_redo(self, k: int) -> None:
        k = min(k, len(self.done))
        before = self.rows()
        undone = [self._undo_last() for _ in range(k)]
        for command in reversed(undone):
            self._apply(command)
        assert self.rows() == before

    @invariant()
    def view_matches_model(self) -> None:
        for table in TABLES:
            expected = sorted(
                (record, fields)
                for (t, record), (fields, deleted) in self.model.items()
                if t == table and not deleted
            )
            assert list(self.view.records(table)) == expected

    def teardown(self) -> None:
        try:
            if hasattr(self, "initial"):
                while self.done:
                    self._undo_last()
                assert self.rows() == self.initial
        finally:
            self.store.close()
            self._dir.cleanup()


RdbUndoMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRdbUndo = RdbUndoMachine.TestCase
