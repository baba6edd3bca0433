"""check_engine on every built-in engine, and small broken engines proving each rule can fail."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext, Engine, EngineState
from p2pspace.core.identity import Identity
from p2pspace.engines import members, rdb
from p2pspace.engines.members import MembersEngine
from p2pspace.engines.rdb import RdbEngine
from p2pspace.errors import CommandError, LocalProtocolError
from p2pspace.testing import (
    EngineContractError,
    EngineContractReport,
    MemoryEngineState,
    check_engine,
)

ALICE, BOB, CAROL = (Identity.from_seed(name) for name in (b"alice", b"bob", b"carol"))


def _add(who: Identity, name: str, role: str = "participant") -> Command:
    return members.add_command(member_id=who.endpoint_id, key=who.public_key, name=name, role=role)


def _genesis(name: str, nonce: bytes, engines: dict[str, str]) -> Command:
    return members.genesis_command(
        name=name,
        nonce=nonce,
        engines=engines,
        member_id=ALICE.endpoint_id,
        key=ALICE.public_key,
        member_name="alice",
    )


MEMBERS_VALID = [
    _genesis("chores", b"\x01" * 16, {"db": "rdb"}),
    _genesis("renamed", b"\x02" * 16, {"db": "rdb", "tasks": "rdb"}),
    _add(BOB, "bob"),
    _add(BOB, "bobby", "guest"),  # bob is a current member: no effect
    _add(CAROL, "carol", "manager"),
    members.role_command(BOB.endpoint_id, "manager"),
    members.remove_command(BOB.endpoint_id),
    _add(BOB, "bob again"),  # re-admission after a removal
    members.quota_command(1024),
]
MEMBERS_INVALID = [
    Command(engine="members", name="remove", args={"id": BOB.endpoint_id, "x": 1}),
    Command(engine="members", name="role", args={"id": BOB.endpoint_id, "role": "owner"}),
    Command(engine="members", name="quota", args={"bytes": 0}),
    Command(engine="members", name="expel", args={"id": BOB.endpoint_id}),
    Command(engine="members", name="add", args=[BOB.endpoint_id]),
    members.add_command(member_id=CAROL.endpoint_id, key=BOB.public_key, name="x"),
    _add(BOB, "bob", "owner"),
    _add(BOB, "b" * 201),
    _genesis("", b"\x01" * 16, {}),
    _genesis("short nonce", b"\x01" * 8, {}),
    _genesis("self", b"\x01" * 16, {"members": "members"}),
]

# Ids in the namespaces of check_engine's two default creators (b"\x01" * 16, b"\x02" * 16).
RDB_FIRST, RDB_SECOND = rdb.owned_id(b"\x01" * 16, "t1"), rdb.owned_id(b"\x02" * 16, "n2")
RDB_VALID = [
    rdb.create("tasks", "t1", {"title": "milk", "done": False}),
    rdb.create("tasks", "t1", {"title": "other"}),  # exists: a recorded no-op
    rdb.set_fields("tasks", "t1", {"done": True, "by": b"\x01" * 16}),
    rdb.delete("tasks", "t1"),
    rdb.set_fields("tasks", "t2", {"done": True}),  # absent (or deleted): a recorded no-op
    rdb.create("tasks", "t2", {"title": "bins", "tags": ["a", "b"], "score": 1.5}),
    # Made by its namespace's creator; by the other one, a squat: a recorded no-op.
    rdb.create("notes", RDB_FIRST, {"text": "an owned record", "n": 1}, owned=True),
    rdb.set_fields("notes", RDB_FIRST, {"text": "an owner's edit, or a stranger's no-op"}),
    rdb.set_fields("notes", RDB_FIRST, {"n": 2, "added": [None]}),  # one replaced, one added
    rdb.delete("notes", RDB_FIRST),
    rdb.create("notes", RDB_SECOND, {"nested": {"a": [1, {"b": None}]}}, owned=True),
    rdb.create("tasks", RDB_SECOND, {"title": "not owned, in a namespace"}),
    rdb.set_fields("tasks", RDB_SECOND, {"title": "anyone's edit"}),
    # Owned, but in no namespace: a recorded no-op whoever makes it.
    Command(
        engine="db",
        name="create",
        args={"owned": True, "table": "notes", "fields": {"x": 1}, "record": "t1"},
    ),
    rdb.delete("notes", "missing"),
]
RDB_INVALID = [
    Command(engine="db", name="drop", args={"table": "tasks"}),
    Command(engine="db", name="create", args=["tasks", "t1", {}]),
    rdb.create("tasks", "t1", {}),
    rdb.create("tasks", "", {"a": 1}),
    rdb.create("ta\0sks", "t1", {"a": 1}),
    rdb.create("tasks", "r" * 129, {"a": 1}),
    rdb.set_fields("tasks", "t1", {"": 1}),
    Command(engine="db", name="create", args={"owned": False, **rdb.create("t", "r", {}).args}),
    Command(engine="db", name="delete", args={"table": "tasks", "record": "t1", "x": 1}),
]


def test_the_members_engine_keeps_the_contract() -> None:
    report = check_engine(MembersEngine(), MEMBERS_VALID, invalid=MEMBERS_INVALID)
    assert report.invalid == len(MEMBERS_INVALID) and report.changes > 0
    assert report.commuting_pairs > 0  # bob's and carol's adds touch separate keys


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rdb_engine_keeps_the_contract(seed: int) -> None:
    report = check_engine(RdbEngine(), RDB_VALID, invalid=RDB_INVALID, seed=seed)
    # The samples reach both kinds of execution and commands on separate records.
    assert report.changes > 0 and report.no_ops > 0 and report.commuting_pairs > 0
    assert report.states == 12 * 9 and report.executions == report.states * len(RDB_VALID)


def test_owned_records_see_both_their_owner_and_a_stranger() -> None:
    owned = [
        rdb.create("notes", rdb.owned_id(ALICE.endpoint_id, "n"), {"text": "mine"}, owned=True),
        rdb.set_fields("notes", rdb.owned_id(ALICE.endpoint_id, "n"), {"text": "edited"}),
        rdb.delete("notes", rdb.owned_id(ALICE.endpoint_id, "n")),
    ]
    one = check_engine(RdbEngine(), owned, creators=[ALICE.endpoint_id])
    two = check_engine(RdbEngine(), owned, creators=[ALICE.endpoint_id, BOB.endpoint_id])
    # A stranger's edit of an owned record is a recorded no-op: more no-ops with two creators.
    assert two.no_ops > one.no_ops


def test_the_same_seed_gives_the_same_run() -> None:
    assert check_engine(RdbEngine(), RDB_VALID, seed=7) == check_engine(
        RdbEngine(), RDB_VALID, seed=7
    )
    report = check_engine(RdbEngine(), RDB_VALID[:1], sequences=2, steps=3)
    assert report == EngineContractReport(
        commands=1,
        invalid=0,
        states=8,
        executions=8,
        changes=2,  # only the empty state is changed by the create
        no_ops=6,
        sequences=2,
        commuting_pairs=0,
    )


# -- broken engines: each rule can fail -----------------------------------------------------


class ForgetsDeletes(RdbEngine):
    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        if command.name != "delete":
            super().undo(state, command, undo_record)


class TupleRecords(RdbEngine):
    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        record = super().execute(state, command, context)
        return None if record is None else tuple(record)


class RefusesAbsentRecords(RdbEngine):
    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        key = rdb.record_key(command.args["table"], command.args["record"])
        if command.name != "create" and state.get(key) is None:
            raise CommandError("no such record")
        return super().execute(state, command, context)


class NarrowFootprint(RdbEngine):
    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return frozenset({b"elsewhere"}) if command.name == "delete" else super().footprint(command)


class TextFootprint(RdbEngine):
    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return frozenset({command.args["record"]})


class Wavering(RdbEngine):
    """Declares a footprint every other time it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        self.asked += 1
        return super().footprint(command) if self.asked % 2 else None


class RemembersCreated(RdbEngine):
    """validate reads what execute saw: its verdict depends on state."""

    def __init__(self) -> None:
        self.created: set[str] = set()

    def validate(self, command: Command) -> None:
        super().validate(command)
        if command.name == "create" and command.args["record"] in self.created:
            raise CommandError("record exists")

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        if command.name == "create":
            self.created.add(command.args["record"])
        return super().execute(state, command, context)


class StampsACounter(RdbEngine):
    def __init__(self) -> None:
        self.calls = 0

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        self.calls += 1
        state.put(b"calls", str(self.calls).encode())
        return super().execute(state, command, context)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return None


class CountsInItsRecord(RdbEngine):
    def __init__(self) -> None:
        self.calls = 0

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        self.calls += 1
        return [self.calls, super().execute(state, command, context)]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        super().undo(state, command, undo_record[1])


class FootprintCrashes(RdbEngine):
    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return frozenset({command.args["fields"]["title"].encode()})


class EditsItsArguments(RdbEngine):
    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        if "fields" in command.args:
            command.args["fields"]["seen"] = True
        return super().execute(state, command, context)


class ValidateCrashes(RdbEngine):
    def validate(self, command: Command) -> None:
        if command.name not in ("create", "set", "delete"):
            raise KeyError(command.name)
        super().validate(command)


class StoresText(RdbEngine):
    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        if command.name == "delete":
            state.put(b"last", "deleted")  # type: ignore[arg-type]  # the bug under test
        return super().execute(state, command, context)


class UndoOfNoOpCrashes(RdbEngine):
    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        (old,) = undo_record  # a no-op's record is None
        super().undo(state, command, [old])


class RemembersInsteadOfRecording(RdbEngine):
    """Keeps the state it last saw in the engine, not in the undo record: undoing one command
    right after it works, undoing a sequence in reverse does not."""

    def __init__(self) -> None:
        self.saved: dict[bytes, bytes] = {}

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        self.saved = dict(state.scan(b""))
        super().execute(state, command, context)
        return None

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        for key, _value in list(state.scan(b"")):
            state.delete(key)
        for key, value in self.saved.items():
            state.put(key, value)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return None


class Notes(Engine):
    """``write {key, fields}``: stores the fields in the order given (plain CBOR) and keeps the
    old value decoded in its undo record. A canonical round trip reorders the map's keys, so
    undo from the stored record writes other bytes."""

    kind = "notes"

    def validate(self, command: Command) -> None:
        if command.name != "write":
            raise CommandError("notes has only write")

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        key = command.args["key"].encode()
        old = state.get(key)
        state.put(key, cbor2.dumps(command.args["fields"]))
        return [None if old is None else cbor2.loads(old)]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        key = command.args["key"].encode()
        (old,) = undo_record
        if old is None:
            state.delete(key)
        else:
            state.put(key, cbor2.dumps(old))


class Tally(Engine):
    """``item {name}`` adds an item; ``count`` scans the items and stores how many there are.
    count's footprint leaves out the items, so it does not commute with adding one."""

    kind = "tally"

    def validate(self, command: Command) -> None:
        if command.name not in ("item", "count"):
            raise CommandError("tally has item and count")

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        key = b"n" if command.name == "count" else b"i/" + command.args["name"].encode()
        old = state.get(key)
        count = sum(1 for _ in state.scan(b"i/"))
        state.put(key, str(count).encode() if command.name == "count" else b"1")
        return [old]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        key = b"n" if command.name == "count" else b"i/" + command.args["name"].encode()
        (old,) = undo_record
        if old is None:
            state.delete(key)
        else:
            state.put(key, old)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        if command.name == "count":
            return frozenset({b"n"})
        return frozenset({b"i/" + command.args["name"].encode()})


NOTES = [
    Command(engine="notes", name="write", args={"key": "a", "fields": {"zz": 1, "a": 2}}),
    Command(engine="notes", name="write", args={"key": "a", "fields": {"title": "x"}}),
]
TALLY = [
    Command(engine="tally", name="count", args={}),
    Command(engine="tally", name="item", args={"name": "x"}),
]

BROKEN: list[tuple[Callable[[], Engine], list[Command], str]] = [
    (ForgetsDeletes, RDB_VALID, "undo with .* did not restore the state: key b'r/"),
    (TupleRecords, RDB_VALID, r"undo record \(None,\) is not CBOR-native"),
    (RefusesAbsentRecords, RDB_VALID, "execute raised CommandError: no such record on a valid"),
    (NarrowFootprint, RDB_VALID, r"db.delete.*touched \[b'r/tasks\\x00t1'\] outside its"),
    (TextFootprint, RDB_VALID, r"footprint returned frozenset\(\{'t1'\}\): a frozenset of bytes"),
    (Wavering, RDB_VALID, "footprint gave two different answers"),
    (RemembersCreated, RDB_VALID, "validate accepted it at first and rejects it now"),
    (StampsACounter, RDB_VALID, "execute is not deterministic"),
    (CountsInItsRecord, RDB_VALID, r"gave undo records \[1, \[None\]\] and \[2, \[None\]\]"),
    (FootprintCrashes, RDB_VALID, r"db.set.*footprint raised KeyError: 'title'"),
    (EditsItsArguments, RDB_VALID, "execute changed the command's arguments"),
    (StoresText, RDB_VALID, "LocalProtocolError: engine state keys and values must be bytes"),
    (UndoOfNoOpCrashes, RDB_VALID, "undo raised TypeError"),
    (RemembersInsteadOfRecording, RDB_VALID, "undo, in that reverse order, did not restore"),
    (Notes, NOTES, r"undo with the stored \(decoded\) record .* did not restore"),
    (Tally, TALLY, r"tally.count\(\{\}\): it and tally.item.* do not commute"),
]


@pytest.mark.parametrize(
    ("make", "commands", "match"), BROKEN, ids=[make.__name__ for make, _c, _m in BROKEN]
)
def test_a_broken_engine_fails_the_check(
    make: Callable[[], Engine], commands: list[Command], match: str
) -> None:
    given = copy.deepcopy(commands)
    with pytest.raises(EngineContractError, match=match) as failure:
        check_engine(make(), commands)
    assert "replay with seed=0" in str(failure.value)
    assert commands == given  # the engine ran on copies, even the one that edits arguments
    # The same call fails the same way: the run is a function of the seed.
    with pytest.raises(EngineContractError) as again:
        check_engine(make(), commands)
    assert str(again.value) == str(failure.value)


def test_the_broken_engines_pass_every_other_rule_of_their_own_kind() -> None:
    # The fault, not the sample, is what fails: the same samples pass on the real engines.
    check_engine(RdbEngine(), RDB_VALID)
    notes = [c for c in NOTES if list(c.args["fields"]) == sorted(c.args["fields"])]
    check_engine(Notes(), notes)  # fields already in canonical order survive the round trip
    check_engine(Tally(), TALLY[1:])


def test_validate_verdicts_are_checked_both_ways() -> None:
    good, bad = RDB_VALID[0], RDB_INVALID[0]
    with pytest.raises(EngineContractError, match="validate rejects a valid command: rdb has"):
        check_engine(RdbEngine(), [good, bad])
    with pytest.raises(EngineContractError, match="validate accepts a command given as invalid"):
        check_engine(RdbEngine(), [good], invalid=[RDB_VALID[1]])
    with pytest.raises(EngineContractError, match="raised KeyError: 'drop'; a malformed command"):
        check_engine(ValidateCrashes(), [good], invalid=[bad])
    check_engine(ValidateCrashes(), [good], invalid=RDB_INVALID[1:])


def test_a_call_that_cannot_be_checked_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="at least one valid command"):
        check_engine(RdbEngine(), [])
    with pytest.raises(LocalProtocolError, match="at least one creator"):
        check_engine(RdbEngine(), RDB_VALID, creators=[])
    with pytest.raises(LocalProtocolError, match="cannot travel in a delta"):
        check_engine(RdbEngine(), [rdb.create("t", "r", {"when": {1, 2}})])


def test_the_memory_state_records_what_was_touched() -> None:
    state = MemoryEngineState({b"a/1": b"x", b"b": b"y"})
    assert state.get(b"missing") is None
    for key, _value in state.scan(b"a/"):
        state.put(key + b"!", b"written while scanning")
    state.delete(b"b")
    assert state.touched == {b"missing", b"a/1", b"a/1!", b"b"}
    assert state.snapshot() == {b"a/1": b"x", b"a/1!": b"written while scanning"}
    copy = state.copy()
    assert copy.snapshot() == state.snapshot() and copy.touched == set()
    with pytest.raises(LocalProtocolError, match="must be bytes"):
        state.put(b"k", bytearray(b"v"))  # type: ignore[arg-type]
