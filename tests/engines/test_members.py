"""The built-in members engine: genesis, adding members, validation and exact undo."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.delta import Command, make_body
from p2pspace.core.engine import DeltaContext
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica, validate_genesis
from p2pspace.core.store import KVState, Store
from p2pspace.engines import members
from p2pspace.engines.members import Member, MembersEngine, MembersView, SpaceInfo, member_grant
from p2pspace.errors import (
    CommandError,
    ForgedDeltaError,
    LocalProtocolError,
    NotMemberError,
    StorageError,
    WrongSpaceError,
)
from tests.conftest import wires_of

SPACE = b"\x09" * 16


def test_genesis_makes_creator_manager(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    me = identities[0]
    replica = Replica.create_space(
        make_store("m"),
        me,
        name="Team",
        time=1,
        engines={"db": "rdb", "notes": "rdb"},
        member_name="Ann",
        nonce=b"\x03" * 16,
    )
    view = replica.members()
    assert view.space() == SpaceInfo(name="Team", engines={"db": "rdb", "notes": "rdb"})
    creator = Member(
        id=me.endpoint_id,
        key=me.public_key,
        name="Ann",
        role="manager",
        added_by=(me.endpoint_id, 1),
    )
    assert list(view.members()) == [creator]
    assert view.get(me.endpoint_id) == creator
    assert view.get(identities[1].endpoint_id) is None
    assert replica.is_member(me.endpoint_id)
    assert replica.member_ids() == [me.endpoint_id]
    assert replica.name == "Team"


def test_add_member_and_re_add(
    space_pair: tuple[Replica, Replica], identities: list[Identity]
) -> None:
    a, b = space_pair
    ida, idb, idc = identities[0], identities[1], identities[2]
    for replica in (a, b):
        got = replica.members().get(idb.endpoint_id)
        assert got == Member(
            id=idb.endpoint_id,
            key=idb.public_key,
            name="b",
            role="participant",
            added_by=(ida.endpoint_id, 2),
        )
    # b (a participant) adds c as a guest; a re-adds b as a manager with a new name.
    d1 = b.create(
        [
            members.add_command(
                member_id=idc.endpoint_id, key=idc.public_key, name="c", role="guest"
            )
        ],
        time=3,
    )
    d2 = a.create(
        [
            members.add_command(
                member_id=idb.endpoint_id, key=idb.public_key, name="Bee", role="manager"
            )
        ],
        time=3,
    )
    a.receive([d1.wire()])
    b.receive([d2.wire()])
    for replica in (a, b):
        view = replica.members()
        assert view.get(idc.endpoint_id) == Member(
            id=idc.endpoint_id,
            key=idc.public_key,
            name="c",
            role="guest",
            added_by=(idb.endpoint_id, 1),
        )
        assert view.get(idb.endpoint_id) == Member(
            id=idb.endpoint_id,
            key=idb.public_key,
            name="Bee",
            role="manager",
            added_by=(ida.endpoint_id, 3),
        )
        assert sorted(m.id for m in view.members()) == sorted(
            i.endpoint_id for i in (ida, idb, idc)
        )
        assert replica.member_ids() == sorted(i.endpoint_id for i in (ida, idb, idc))
    assert a.state_digest() == b.state_digest()


def test_new_member_can_create_after_grant(
    space_pair: tuple[Replica, Replica],
    identities: list[Identity],
    make_store: Callable[[str], Store],
) -> None:
    a, b = space_pair
    idc = identities[2]
    c = Replica.join(make_store("c"), idc, a.genesis.wire())
    c.receive(wires_of(a))
    with pytest.raises(LocalProtocolError):
        c.create(
            [members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="me")], time=3
        )
    a.create([members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="c")], time=4)
    c.receive(wires_of(a))
    delta = c.create(
        [members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="renamed")], time=5
    )
    b.receive(wires_of(a))
    result = b.receive([delta.wire()])
    assert not result.rejected
    got = b.members().get(idc.endpoint_id)
    assert got is not None and got.name == "renamed"


def test_member_grant() -> None:
    ident = Identity.from_seed(b"g")
    add = members.add_command(member_id=ident.endpoint_id, key=ident.public_key, name="x")
    assert member_grant(add) == (ident.endpoint_id, ident.public_key)
    genesis = members.genesis_command(
        name="s",
        nonce=b"\x00" * 16,
        engines={},
        member_id=ident.endpoint_id,
        key=ident.public_key,
        member_name="",
    )
    assert member_grant(genesis) == (ident.endpoint_id, ident.public_key)
    assert member_grant(Command(engine="db", name="add", args=add.args)) is None


# -- validation ---------------------------------------------------------------------------------

ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")


def _add_args(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "id": BOB.endpoint_id,
        "key": BOB.public_key,
        "name": "bob",
        "role": "participant",
    }
    args.update(changes)
    return {k: v for k, v in args.items() if v is not ...}


BAD_ADDS: list[tuple[str, Any]] = [
    ("id-of-other-key", _add_args(id=ALICE.endpoint_id)),
    ("id-wrong-size", _add_args(id=BOB.endpoint_id + b"\x00")),
    ("id-not-bytes", _add_args(id=BOB.endpoint_id.hex())),
    ("key-wrong-size", _add_args(key=BOB.public_key[:31])),
    ("key-not-bytes", _add_args(key=list(BOB.public_key))),
    ("bad-role", _add_args(role="owner")),
    ("role-not-str", _add_args(role=1)),
    ("name-not-str", _add_args(name=b"bob")),
    ("name-too-long", _add_args(name="n" * (members.MAX_TEXT + 1))),
    ("extra-key", _add_args(extra=1)),
    ("missing-role", _add_args(role=...)),
    ("missing-id", _add_args(id=...)),
    ("args-not-map", [BOB.endpoint_id, BOB.public_key, "bob", "participant"]),
]


@pytest.mark.parametrize("args", [a for _i, a in BAD_ADDS], ids=[i for i, _a in BAD_ADDS])
def test_add_validation_errors(space_pair: tuple[Replica, Replica], args: Any) -> None:
    command = Command(engine=members.INSTANCE, name="add", args=args)
    with pytest.raises(CommandError):
        MembersEngine().validate(command)
    a, _b = space_pair
    before = (a.order_digest(), a.state_digest())
    with pytest.raises(LocalProtocolError):
        a.create([command], time=9)
    assert (a.order_digest(), a.state_digest()) == before


def test_add_validation_accepts_roles_and_empty_name() -> None:
    for role in members.ROLES:
        MembersEngine().validate(Command(engine="members", name="add", args=_add_args(role=role)))
    MembersEngine().validate(Command(engine="members", name="add", args=_add_args(name="")))
    MembersEngine().validate(
        Command(engine="members", name="add", args=_add_args(name="n" * members.MAX_TEXT))
    )


def _genesis_args(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "space",
        "nonce": b"\x00" * 16,
        "engines": {"db": "rdb"},
        "member": {"id": ALICE.endpoint_id, "key": ALICE.public_key, "name": "alice"},
    }
    args.update(changes)
    return {k: v for k, v in args.items() if v is not ...}


BAD_GENESES: list[tuple[str, Any]] = [
    ("empty-name", _genesis_args(name="")),
    ("short-nonce", _genesis_args(nonce=b"\x00" * 15)),
    ("engines-not-map", _genesis_args(engines=["db"])),
    ("engine-named-members", _genesis_args(engines={"members": "rdb"})),
    ("engine-kind-not-str", _genesis_args(engines={"db": 1})),
    ("engine-name-empty", _genesis_args(engines={"": "rdb"})),
    ("too-many-engines", _genesis_args(engines={f"e{i}": "rdb" for i in range(33)})),
    (
        "member-id-mismatch",
        _genesis_args(member={"id": BOB.endpoint_id, "key": ALICE.public_key, "name": "x"}),
    ),
    (
        "member-extra-key",
        _genesis_args(
            member={"id": ALICE.endpoint_id, "key": ALICE.public_key, "name": "x", "role": "guest"}
        ),
    ),
    ("extra-key", _genesis_args(extra=True)),
    ("missing-nonce", _genesis_args(nonce=...)),
]


@pytest.mark.parametrize("args", [a for _i, a in BAD_GENESES], ids=[i for i, _a in BAD_GENESES])
def test_genesis_validation_errors(args: Any) -> None:
    with pytest.raises(CommandError):
        MembersEngine().validate(Command(engine="members", name="genesis", args=args))


def test_unknown_command_refused() -> None:
    with pytest.raises(CommandError):
        MembersEngine().validate(Command(engine="members", name="remove", args={}))


def test_create_space_refuses_bad_genesis(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    store = make_store("g")
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="", time=1)
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="x", time=1, engines={"members": "rdb"})
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="x", time=1, member_name="m" * 201)
    assert store.spaces() == []


def test_genesis_command_only_in_genesis(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    again = members.genesis_command(
        name="again",
        nonce=b"\x01" * 16,
        engines={},
        member_id=a.endpoint_id,
        key=a.identity.public_key,
        member_name="",
    )
    with pytest.raises(LocalProtocolError):
        a.create([again], time=5)


def _genesis(
    signer: Identity, *, commands: list[Command] | None = None, sign: bool = True, **changes: Any
) -> Any:
    unsigned = make_body(
        space=b"",
        creator=signer.endpoint_id,
        seq=1,
        rank=1,
        deps={},
        prev=b"",
        time=0,
        commands=commands
        if commands is not None
        else [Command(engine="members", name="genesis", args=_genesis_args(**changes))],
    )
    return unsigned.with_signature(signer.sign(unsigned.body)) if sign else unsigned


def test_validate_genesis() -> None:
    space_id, engines = validate_genesis(_genesis(ALICE))
    assert engines == {"db": "rdb"}
    assert len(space_id) == 16
    with pytest.raises(CommandError):  # the genesis member must be its creator
        validate_genesis(_genesis(BOB))  # signed by Bob, names Alice
    with pytest.raises(CommandError):  # unknown engine kind
        validate_genesis(_genesis(ALICE, engines={"db": "spreadsheet"}))
    with pytest.raises(CommandError):  # members is not an extra engine kind
        validate_genesis(_genesis(ALICE, engines={"db": "members"}))
    with pytest.raises(CommandError):  # two commands
        validate_genesis(
            _genesis(
                ALICE,
                commands=[
                    Command(engine="members", name="genesis", args=_genesis_args()),
                    Command(engine="members", name="genesis", args=_genesis_args()),
                ],
            )
        )
    with pytest.raises(ForgedDeltaError):
        validate_genesis(_genesis(ALICE, sign=False))
    forged = _genesis(ALICE, sign=False).with_signature(BOB.sign(_genesis(ALICE).body))
    with pytest.raises(ForgedDeltaError):
        validate_genesis(forged)


def test_genesis_of_other_space_rejected(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    result = b.receive([_genesis(ALICE).wire()])
    assert [type(r.error) for r in result.rejected] == [WrongSpaceError]
    assert b.receive([a.genesis.wire()]).duplicates == 1


def test_non_member_delta_rejected(
    space_pair: tuple[Replica, Replica], identities: list[Identity]
) -> None:
    """A delta from an endpoint no grant admitted is refused (NotMemberError)."""
    a, b = space_pair
    outsider = identities[3]
    unsigned = make_body(
        space=a.space_id,
        creator=outsider.endpoint_id,
        seq=1,
        rank=3,
        deps=dict(a.vector),
        prev=b"",
        time=3,
        commands=[
            members.add_command(member_id=outsider.endpoint_id, key=outsider.public_key, name="me")
        ],
    )
    delta = unsigned.with_signature(outsider.sign(unsigned.body))
    result = b.receive([delta.wire()])
    assert [type(r.error) for r in result.rejected] == [NotMemberError]
    assert not b.is_member(outsider.endpoint_id)


def test_corrupt_members_state_is_storage_error(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    with a.store.transaction():
        a.state("members").put(members.SPACE_KEY, b"\xff")
        a.state("members").flush()
    with pytest.raises(StorageError):
        a.members().space()


# -- undo exactness -----------------------------------------------------------------------------

POOL = [Identity.from_seed(f"pool-{i}".encode()) for i in range(4)]


def _add(i: int, name: str, role: str) -> Command:
    return members.add_command(
        member_id=POOL[i].endpoint_id, key=POOL[i].public_key, name=name, role=role
    )


def _gen(i: int, name: str) -> Command:
    return members.genesis_command(
        name=name,
        nonce=b"\x00" * 16,
        engines={"db": "rdb"},
        member_id=POOL[i].endpoint_id,
        key=POOL[i].public_key,
        member_name=name,
    )


member_commands = st.one_of(
    st.builds(_add, st.integers(0, 3), st.text(max_size=3), st.sampled_from(members.ROLES)),
    st.builds(_gen, st.integers(0, 3), st.text(min_size=1, max_size=3)),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    ops=st.lists(st.tuples(member_commands, st.integers(1, 5)), min_size=1, max_size=20),
    suffix=st.integers(0, 20),
)
def test_undo_exact(ops: list[tuple[Command, int]], suffix: int) -> None:
    engine = MembersEngine()
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "s.sqlite3", durability="normal")
        try:
            state = KVState(store, SPACE, members.INSTANCE)
            with store.transaction():
                store.state_put(SPACE, "db", members.MEMBER_PREFIX + POOL[0].endpoint_id, b"db")
            initial = store.state_rows(SPACE)
            done: list[tuple[Command, DeltaContext, bytes]] = []
            snapshots = []

            def run(command: Command, ctx: DeltaContext) -> None:
                engine.validate(command)
                snapshots.append(store.state_rows(SPACE))
                with store.transaction():
                    undo = engine.execute(state, command, ctx)
                    state.flush()
                done.append((command, ctx, codec.encode_trusted(undo)))

            def undo_last() -> tuple[Command, DeltaContext]:
                command, ctx, undo = done.pop()
                with store.transaction():
                    engine.undo(state, command, codec.decode(undo))
                    state.flush()
                assert store.state_rows(SPACE) == snapshots.pop()
                return command, ctx

            for n, (command, seq) in enumerate(ops):
                run(
                    command,
                    DeltaContext(space=SPACE, creator=POOL[seq % 4].endpoint_id, seq=n + 1, time=n),
                )
            # A view over the final state agrees with the last add/genesis of each member.
            latest: dict[bytes, str] = {}
            for command, _seq in ops:
                if command.name == "add":
                    latest[command.args["id"]] = command.args["role"]
                else:
                    latest[command.args["member"]["id"]] = "manager"
            view = MembersView(state)
            assert {m.id: m.role for m in view.members()} == latest

            # Undo a suffix, redo it: identical bytes.
            final = store.state_rows(SPACE)
            k = min(suffix, len(done))
            undone = [undo_last() for _ in range(k)]
            for command, ctx in reversed(undone):
                run(command, ctx)
            assert store.state_rows(SPACE) == final

            while done:
                undo_last()
            assert store.state_rows(SPACE) == initial
        finally:
            store.close()
