"""Members through the node facade: naming a member, every refusal in words, removal, roles,
leaving, invitations that only a manager issues and redeems, and the members events.

Naming is tested on member records directly; the rest runs real nodes on a MemoryNetwork under
trio's autojump clock (waits are on node state, bounded in virtual time).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pspace.core.delta import make_body
from p2pspace.core.identity import Identity, format_endpoint_id, short_id
from p2pspace.core.membership import Member
from p2pspace.engines import members as members_engine
from p2pspace.errors import (
    ConflictError,
    InvitationError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
)
from p2pspace.node.config import NodeConfig
from p2pspace.node.events import (
    MemberAdded,
    MemberRemoved,
    MembersWatch,
    NodeEvent,
    RemovedFromSpace,
    RoleChanged,
)
from p2pspace.node.node import Node
from p2pspace.node.views import display_names, find_member
from p2pspace.testing import MemoryNetwork, open_test_node

VIRTUAL_TIMEOUT = 600.0
BASE = NodeConfig(listen=("0.0.0.0", 7455), discovery=False, durability="normal", jitter_seed=3)


def member(
    seed: str, name: str, role: str = "participant", *, removed_by: bytes | None = None
) -> Member:
    ident = Identity.from_seed(seed.encode())
    return Member(
        id=ident.endpoint_id,
        key=ident.public_key,
        name=name,
        role=role,
        added_by=(b"\x00" * 16, 1),
        removed_by=None if removed_by is None else (removed_by, 2),
    )


# -- naming a member ------------------------------------------------------------------------------


def test_display_names_add_the_short_id_only_where_names_collide() -> None:
    ann, bob1, bob2 = member("a", "ann", "manager"), member("b1", "bob"), member("b2", "Bob")
    gone = member("c", "ann", removed_by=ann.id)
    nameless = member("d", "")
    names = display_names([ann, bob1, bob2, gone, nameless])
    assert names[ann.id] == "ann"  # the removed "ann" does not make the current one ambiguous
    assert names[gone.id] == f"ann ({short_id(gone.id)})"
    assert names[bob1.id] == f"bob ({short_id(bob1.id)})"  # names collide case-insensitively
    assert names[bob2.id] == f"Bob ({short_id(bob2.id)})"
    assert names[nameless.id] == short_id(nameless.id)


def test_a_member_is_found_by_every_id_form_and_by_unique_name() -> None:
    ann, bob1, bob2 = member("a", "ann", "manager"), member("b1", "bob"), member("b2", "bob")
    gone = member("c", "cy", removed_by=ann.id)
    everyone = [ann, bob1, bob2, gone]

    def find(text: str | bytes) -> Member:
        return find_member(everyone, text, space="notes")

    for text in (
        ann.id.hex(),
        ann.id.hex().upper(),
        format_endpoint_id(ann.id),
        format_endpoint_id(ann.id).replace("-", "").lower(),
        short_id(ann.id),
        short_id(ann.id).lower(),
        ann.id.hex()[:8],
        "ann",
        " ANN ",
    ):
        assert find(text) is ann, text
    assert find(ann.id) is ann
    assert find(f"bob ({short_id(bob2.id)})") is bob2  # the display name the views show
    assert find(short_id(bob1.id)) is bob1
    assert find("cy") is gone  # removed members are found by name too

    with pytest.raises(ConflictError, match=r"'bob' names several members .*use the member's id"):
        find("bob")
    with pytest.raises(NotFoundError, match="no member 'zed' in space 'notes'"):
        find("zed")
    with pytest.raises(NotFoundError, match="no member"):
        find(Identity.from_seed(b"other").endpoint_id)
    with pytest.raises(NotFoundError, match="name a member"):
        find("  ")


def test_a_name_wins_over_an_id_prefix_and_current_members_over_removed_ones() -> None:
    ann = member("a", "ann", "manager")
    prefix = short_id(ann.id)[:4]
    named = member("p", prefix.lower())  # a member whose name reads like ann's id prefix
    old_ann = member("o", "ann", removed_by=ann.id)
    everyone = [ann, named, old_ann]
    assert find_member(everyone, prefix.lower(), space="s") is named
    assert find_member(everyone, "ann", space="s") is ann


def test_the_watch_announces_what_changed_once() -> None:
    ann, bob = member("a", "ann", "manager"), member("b", "bob")
    before = {ann.id: ann, bob.id: bob}
    promoted = dataclasses.replace(bob, role="manager")

    delta = make_body(
        space=b"\x01" * 16,
        creator=ann.id,
        seq=3,
        rank=3,
        deps={},
        prev=b"\x00" * 32,
        time=1,
        commands=[members_engine.role_command(bob.id, "manager")],
    )
    watch = MembersWatch(bob.id)
    space = b"\x01" * 16
    assert watch.start(space, View(list(before.values()))) is True
    assert watch.start(space, View([])) is False
    events = watch.executed(space, [delta], View([ann, promoted]))
    assert events == [RoleChanged(space=space, member=bob.id, role="manager", by=ann.id)]
    assert watch.executed(space, [delta], View([ann, promoted])) == []
    removed = dataclasses.replace(promoted, removed_by=(ann.id, 4))
    events = watch.executed(space, [delta], View([ann, removed]))
    assert events == [
        MemberRemoved(space=space, member=bob.id, by=ann.id),
        RemovedFromSpace(space=space, by=ann.id),
    ]


class View:
    """What :class:`MembersWatch` reads of a members state: everyone, removed ones included."""

    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def everyone(self) -> list[Member]:
        return self.members


# -- real nodes -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Team:
    """ann (manager, the creator), bob (participant) and cy (guest) in one space."""

    network: MemoryNetwork
    stack: contextlib.AsyncExitStack
    ann: Node
    bob: Node
    cy: Node
    space: bytes

    async def node(self, name: str) -> Node:
        return await self.stack.enter_async_context(
            open_test_node(
                self.ann.home.parent / name,
                network=self.network,
                config=dataclasses.replace(BASE, name=name),
            )
        )


@contextlib.asynccontextmanager
async def team(tmp: Path) -> AsyncIterator[Team]:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_test_node(
                    tmp / name, network=network, config=dataclasses.replace(BASE, name=name)
                )
            )
            for name in ("ann", "bob", "cy")
        ]
        ann, bob, cy = nodes
        space = ann.create_space("notes").space_id
        await bob.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        await cy.join(ann.invite(space, role="guest"), timeout=VIRTUAL_TIMEOUT)
        await synced(nodes, space)
        yield Team(network=network, stack=stack, ann=ann, bob=bob, cy=cy, space=space)


async def synced(nodes: list[Node], space: bytes) -> None:
    """Wait until every node has executed what any of them had when called."""
    target: dict[bytes, int] = {}
    for node in nodes:
        for creator, seq in node.replica(space).vector.items():
            target[creator] = max(target.get(creator, 0), seq)
    for node in nodes:
        await node.wait_until(has_executed(node, space, target), timeout=VIRTUAL_TIMEOUT)


def has_executed(node: Node, space: bytes, target: dict[bytes, int]) -> Callable[[], bool]:
    replica = node.replica(space)
    return lambda: all(replica.vector.get(c, 0) >= s for c, s in target.items())


def roles(node: Node, space: bytes) -> dict[str, str]:
    return {m.display_name: m.role for m in node.members(space) if m.current}


async def test_members_views_name_everyone_and_mark_this_endpoint(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with team(tmp_path) as t:
        ann, bob, space = t.ann, t.bob, t.space
        assert roles(ann, space) == {"ann": "manager", "bob": "participant", "cy": "guest"}
        views = {m.name: m for m in bob.members(space)}
        assert views["bob"].me and not views["ann"].me
        assert views["ann"].online and views["ann"].connected
        assert views["bob"].short_id == short_id(bob.endpoint_id)
        assert bob.resolve_member(space, "ann").id == ann.endpoint_id
        info = bob.space_info(space)
        assert (info.member, info.role, info.removed_by) == (True, "participant", None)


async def test_every_refusal_says_why(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with team(tmp_path) as t:
        ann, bob, cy, space = t.ann, t.bob, t.cy, t.space
        with pytest.raises(PermissionDeniedError, match="a guest cannot make changes"):
            cy.rdb_set(space, "t", "r", {"v": 1})
        with pytest.raises(PermissionDeniedError, match=r"only a manager .* \(you are a guest\)"):
            cy.set_role(space, "cy", "participant")
        with pytest.raises(PermissionDeniedError, match=r"only a manager .*you are a participant"):
            bob.remove_member(space, "cy")
        with pytest.raises(PermissionDeniedError, match="only a manager"):
            bob.set_role(space, "bob", "manager")
        with pytest.raises(PermissionDeniedError, match="only a manager can invite"):
            bob.invite(space)
        with pytest.raises(PermissionDeniedError, match="you are the last manager"):
            ann.leave_space(space)
        with pytest.raises(PermissionDeniedError, match="you are the last manager"):
            ann.set_role(space, "ann", "participant")
        with pytest.raises(PermissionDeniedError, match="you are the last manager"):
            ann.remove_member(space, ann.endpoint_id)
        with pytest.raises(ConflictError, match="bob is a participant already"):
            ann.set_role(space, "bob", "participant")
        with pytest.raises(LocalProtocolError, match="a role is one of"):
            ann.set_role(space, "bob", "emperor")
        with pytest.raises(NotFoundError, match="no member 'zed'"):
            ann.remove_member(space, "zed")
        bob.rdb_set(space, "t", "r", {"v": 1})  # a participant writes
        cy.leave_space(space)  # a guest may leave
        assert roles(cy, space) == {"ann": "manager", "bob": "participant"}


async def test_a_manager_removes_and_promotes_and_the_removed_endpoint_is_read_only(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with team(tmp_path) as t:
        ann, bob, cy, space = t.ann, t.bob, t.cy, t.space
        with ann.subscribe() as ann_events, cy.subscribe() as cy_events:
            ann.set_role(space, "bob", "manager")
            ann.remove_member(space, "cy")
            assert roles(ann, space) == {"ann": "manager", "bob": "manager"}
            with pytest.raises(ConflictError, match="cy is no longer a member"):
                ann.remove_member(space, "cy")
            seen = await collect(ann_events, 2)
            assert seen == [
                RoleChanged(
                    space=space, member=bob.endpoint_id, role="manager", by=ann.endpoint_id
                ),
                MemberRemoved(space=space, member=cy.endpoint_id, by=ann.endpoint_id),
            ]
            # The removed endpoint learns of its removal and keeps the space, read-only.
            removed = await collect(cy_events, 1, kinds=(RemovedFromSpace,))
            assert removed == [RemovedFromSpace(space=space, by=ann.endpoint_id)]
        info = cy.space_info(space)
        assert (info.member, info.role) == (False, None)
        assert (info.removed_by, info.removed_by_name) == (ann.endpoint_id, "ann")
        with pytest.raises(PermissionDeniedError, match="read-only here: you were removed by ann"):
            cy.rdb_set(space, "t", "late", {"v": 1})
        with pytest.raises(ConflictError, match="you were removed by ann"):
            cy.leave_space(space)
        gone = next(m for m in ann.members(space) if m.id == cy.endpoint_id)
        assert (gone.current, gone.removed_by_name, gone.left) == (False, "ann", False)
        assert cy.rdb_get(space, "t") == bob.rdb_get(space, "t")  # still readable

        # Now bob is a manager too: ann may step down, and leave.
        ann.set_role(space, "ann", "participant")
        with pytest.raises(PermissionDeniedError, match="only a manager"):
            ann.invite(space)
        ann.leave_space(space)
        me = next(m for m in ann.members(space) if m.me)
        assert (me.current, me.left, me.removed_by_name) == (False, True, "ann")
        with pytest.raises(PermissionDeniedError, match="read-only here: you left it"):
            ann.rdb_set(space, "t", "x", {"v": 1})


async def test_an_inviter_demoted_before_the_code_is_redeemed_refuses_the_join(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with team(tmp_path) as t:
        ann, bob, space = t.ann, t.bob, t.space
        ann.set_role(space, "bob", "manager")
        await synced([ann, bob], space)
        code = bob.invite(space)
        ann.set_role(space, "bob", "participant")
        await synced([ann, bob], space)
        dee = await t.node("dee")
        with pytest.raises(InvitationError, match="only a manager can invite"):
            await dee.join(code, timeout=VIRTUAL_TIMEOUT)
        # The code stays unused: once bob is a manager again, it admits dee.
        ann.set_role(space, "bob", "manager")
        await synced([ann, bob], space)
        await dee.join(code, timeout=VIRTUAL_TIMEOUT)
        await ann.wait_until(
            lambda: roles(ann, space).get("dee") == "participant", timeout=VIRTUAL_TIMEOUT
        )


async def test_a_removed_member_comes_back_only_with_a_new_invitation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with team(tmp_path) as t:
        ann, cy, space = t.ann, t.cy, t.space
        ann.remove_member(space, "cy")
        await cy.wait_until(
            lambda: cy.space_info(space).removed_by is not None, timeout=VIRTUAL_TIMEOUT
        )
        with ann.subscribe() as events:
            await cy.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
            added = await collect(events, 1, kinds=(MemberAdded,))
        assert added == [
            MemberAdded(space=space, member=cy.endpoint_id, role="participant", by=ann.endpoint_id)
        ]
        assert roles(cy, space)["cy"] == "participant"
        cy.rdb_set(space, "t", "back", {"v": 1})

        # The code that admitted a member does not bring it back once removed.
        dee = await t.node("dee")
        code = ann.invite(space)
        await dee.join(code, timeout=VIRTUAL_TIMEOUT)
        ann.remove_member(space, "dee")
        await dee.wait_until(
            lambda: dee.space_info(space).removed_by is not None, timeout=VIRTUAL_TIMEOUT
        )
        with pytest.raises(InvitationError, match="was used already"):
            await dee.join(code, timeout=VIRTUAL_TIMEOUT)


# -- helpers --------------------------------------------------------------------------------------


async def collect(
    channel: trio.MemoryReceiveChannel[NodeEvent],
    count: int,
    *,
    kinds: tuple[type, ...] = (MemberAdded, MemberRemoved, RoleChanged, RemovedFromSpace),
) -> list[NodeEvent]:
    """The next ``count`` events of ``kinds`` on ``channel`` (others are skipped)."""
    out: list[NodeEvent] = []
    with trio.fail_after(VIRTUAL_TIMEOUT):
        async for event in channel:
            if isinstance(event, kinds):
                out.append(event)
                if len(out) == count:
                    break
    return out
