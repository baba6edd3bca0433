"""The built-in members engine: executing genesis and adds, reading its state, exact undo."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext
from p2pspace.core.identity import Identity
from p2pspace.core.kv_state import KVState
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.engines.members import Member, MembersEngine, MembersView, SpaceInfo
from p2pspace.errors import CommandError, LocalProtocolError, PermissionDeniedError, StorageError
from tests.helpers.replicas import wires_of

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
    # a (the manager) adds c as a guest and promotes b; b (a participant) may do neither.
    d1 = a.create(
        [
            members.add_command(
                member_id=idc.endpoint_id, key=idc.public_key, name="c", role="guest"
            )
        ],
        time=3,
    )
    d2 = a.create([members.role_command(idb.endpoint_id, "manager")], time=3)
    b.receive([d1.wire(), d2.wire()])
    for replica in (a, b):
        view = replica.members()
        assert view.get(idc.endpoint_id) == Member(
            id=idc.endpoint_id,
            key=idc.public_key,
            name="c",
            role="guest",
            added_by=(ida.endpoint_id, 3),
        )
        assert view.get(idb.endpoint_id) == Member(
            id=idb.endpoint_id,
            key=idb.public_key,
            name="b",
            role="manager",
            added_by=(ida.endpoint_id, 2),
        )
        assert sorted(m.id for m in view.members()) == sorted(
            i.endpoint_id for i in (ida, idb, idc)
        )
        assert replica.member_ids() == sorted(i.endpoint_id for i in (ida, idb, idc))
    assert a.state_digest() == b.state_digest()


def test_rename_by_a_manager_reaches_everyone_and_a_participants_is_refused(
    space_pair: tuple[Replica, Replica],
) -> None:
    a, b = space_pair
    renamed = a.create([members.rename_command("Team notes")], time=3)
    assert not b.receive([renamed.wire()]).rejected
    for replica in (a, b):
        assert replica.members().space() == SpaceInfo(name="Team notes", engines={"db": "rdb"})
    # b is a participant: its rename is refused before it is even stored.
    with pytest.raises(PermissionDeniedError):
        b.create([members.rename_command("mine")], time=4)
    assert a.members().space() == SpaceInfo(name="Team notes", engines={"db": "rdb"})
    for bad in ("", "x" * (members.MAX_TEXT + 1), 7):
        with pytest.raises(CommandError):
            MembersEngine().validate(
                Command(engine=members.INSTANCE, name="rename", args={"name": bad})
            )
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
    # A participant may not manage members (not even re-add itself), but may write.
    with pytest.raises(PermissionDeniedError):
        c.create(
            [members.add_command(member_id=idc.endpoint_id, key=idc.public_key, name="x")], time=5
        )
    delta = c.create([rdb.create("notes", "n1", {"text": "hi"})], time=5)
    b.receive(wires_of(a))
    result = b.receive([delta.wire()])
    assert not result.rejected
    assert rdb.view(b).get("notes", "n1") == {"text": "hi"}


# -- validation and reading ---------------------------------------------------------------------


def test_engine_validates_by_the_core_rules() -> None:
    ident = Identity.from_seed(b"v")
    good = members.add_command(member_id=ident.endpoint_id, key=ident.public_key, name="v")
    MembersEngine().validate(good)
    for bad in (
        members.add_command(member_id=ident.endpoint_id, key=ident.public_key, name="v", role="x"),
        Command(engine=members.INSTANCE, name="remove", args={}),
    ):
        with pytest.raises(CommandError):
            MembersEngine().validate(bad)


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
    st.builds(lambda i: members.remove_command(POOL[i].endpoint_id), st.integers(0, 3)),
    st.builds(members.rename_command, st.text(min_size=1, max_size=3)),
    st.builds(
        lambda i, r: members.role_command(POOL[i].endpoint_id, r),
        st.integers(0, 3),
        st.sampled_from(members.ROLES),
    ),
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
            # A view over the final state agrees with a plain model of the commands: an add
            # admits only a non-member, remove and role act only on current members.
            latest: dict[bytes, str] = {}
            for command, _seq in ops:
                args = command.args
                if command.name == "add":
                    latest.setdefault(args["id"], args["role"])
                elif command.name == "genesis":
                    latest[args["member"]["id"]] = "manager"
                elif command.name == "remove":
                    latest.pop(args["id"], None)
                elif command.name == "rename":
                    continue
                elif args["id"] in latest:
                    latest[args["id"]] = args["role"]
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
