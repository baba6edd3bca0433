"""The change events a node emits: one frozen record per kind.

Theory of operation. Whatever changes in a running node -- deltas executed, a peer connected, a
sync state moved, a join made progress -- is announced as one of the records below to every
subscriber of :meth:`Node.subscribe <p2pspace.node.Node.subscribe>`. An event says *that*
something changed; a program reads what it looks like now from the node's views. Each record's
``to_json()`` is the wire form the local API streams and the web UI and the command line read:
a dict with a ``type`` string and the fields of that type, ids as hex. The vocabulary -- type,
fields, when -- is documented in ``docs/events.md``; a new kind of event is a new record here
and a new row there.

Members events (:class:`MemberAdded`, :class:`MemberRemoved`, :class:`RoleChanged`,
:class:`RemovedFromSpace`) say what a batch of executed deltas changed in a space's members
state, found by comparing the state before and after (:func:`member_events`): a members command
that turned out a no-op in the total order (its creator was no longer a manager there) changes
nothing and announces nothing, and an undo/redo that moves a change is announced by what it
leaves.

The records hold typed values (ids as bytes, states as enums); nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from p2pspace.core.delta import Delta
from p2pspace.core.membership import INSTANCE as MEMBERS_INSTANCE
from p2pspace.core.membership import Member, MembersView
from p2pspace.sync.syncstate import PeerState, ProcessorState
from p2pspace.tools.discussion import ChangeEvent


def fields_json(event: Any) -> dict[str, Any]:
    """The wire form of a record that is just its fields: ``type``, then each field in order,
    ids (bytes) as hex and states (enums) as their values."""
    out: dict[str, Any] = {"type": event.TYPE}
    for field in fields(event):
        value = getattr(event, field.name)
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, enum.Enum):
            value = value.value
        out[field.name] = value
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltasExecuted:
    """Deltas were executed in a space (made here or received)."""

    TYPE: ClassVar[str] = "deltas"
    space: bytes
    count: int
    creators: frozenset[bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "space": self.space.hex(),
            "count": self.count,
            "creators": sorted(c.hex() for c in self.creators),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolChanged:
    """A tool reported a change in what it shows (the discussion: a post was added, edited or
    deleted). ``change`` is the tool's own record of it; its JSON fields follow ``tool``."""

    TYPE: ClassVar[str] = "tool"
    space: bytes
    tool: str
    change: ChangeEvent | Any

    def to_json(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.change.to_json().items() if k != "type"}
        return {"type": self.TYPE, "tool": self.tool, **fields, "space": self.space.hex()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceAdded:
    """A space was created here or joined."""

    TYPE: ClassVar[str] = "space"
    space: bytes
    name: str

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcksAdvanced:
    """A peer acknowledged more of a space than before."""

    TYPE: ClassVar[str] = "acks"
    space: bytes
    peer: bytes

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostStatusesChanged:
    """Posts' sync statuses ("delivered to k of n") may have moved: a peer acknowledged more of a
    space that holds the discussion tool."""

    TYPE: ClassVar[str] = "status"
    space: bytes
    peer: bytes

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStateChanged:
    """A (space, peer) sync state moved."""

    TYPE: ClassVar[str] = "sync"
    space: bytes
    peer: bytes
    state: PeerState
    error: str

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinProgress:
    """Catch-up progress of a join: ``have`` of the ``total`` deltas the inviter has."""

    TYPE: ClassVar[str] = "progress"
    space: bytes
    have: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorChanged:
    """A space's processor changed state (today: it failed, its store could not be written)."""

    TYPE: ClassVar[str] = "processor"
    space: bytes
    state: ProcessorState

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnected:
    """An authenticated connection to a peer opened."""

    TYPE: ClassVar[str] = "peer"
    peer: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "peer": self.peer.hex(), "connected": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected:
    """A peer's connection closed; ``error`` says why ("" for an orderly close)."""

    TYPE: ClassVar[str] = "peer"
    peer: bytes
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "peer": self.peer.hex(), "connected": False, "error": self.error}


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSighted:
    """Discovery saw a peer appear (``present``) or go."""

    TYPE: ClassVar[str] = "discovery"
    peer: bytes
    present: bool

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionRefused:
    """An incoming connection was refused at its handshake; ``error`` is ``"Type: message"``."""

    TYPE: ClassVar[str] = "refused"
    error: str

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAdded:
    """An endpoint was admitted to a space (a new member, or one removed earlier)."""

    TYPE: ClassVar[str] = "member_added"
    space: bytes
    member: bytes
    role: str
    by: bytes

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRemoved:
    """A member was removed from a space, or left it (``by`` is then the member itself)."""

    TYPE: ClassVar[str] = "member_removed"
    space: bytes
    member: bytes
    by: bytes

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleChanged:
    """A current member's role changed; ``by`` is the manager whose delta changed it, None
    when the change came from re-executing older deltas (a merge moved it)."""

    TYPE: ClassVar[str] = "role"
    space: bytes
    member: bytes
    role: str
    by: bytes | None

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RemovedFromSpace:
    """This endpoint itself was removed from a space (or left it: ``by`` is then this
    endpoint). The space stays here, read-only; it is also announced as :class:`MemberRemoved`."""

    TYPE: ClassVar[str] = "removed"
    space: bytes
    by: bytes

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


MembersEvent = MemberAdded | MemberRemoved | RoleChanged | RemovedFromSpace


def touches_members(deltas: Iterable[Delta]) -> bool:
    """Whether any of ``deltas`` carries a members command (only those change the members
    state, so only then can there be a members event)."""
    return any(c.engine == MEMBERS_INSTANCE for d in deltas for c in d.commands)


def member_events(
    space: bytes,
    *,
    me: bytes,
    before: Mapping[bytes, Member],
    after: Mapping[bytes, Member],
    deltas: Iterable[Delta],
) -> list[MembersEvent]:
    """The members events of one executed batch: what changed between the members state
    ``before`` and ``after`` it (every record, removed ones included, by id), in id order.

    A role change names as ``by`` the creator of the batch's last delta that set that member's
    role (None if none did: a merge re-executed an older one). ``me`` is this endpoint, whose
    own removal is announced once more, as :class:`RemovedFromSpace`.
    """
    setter: dict[bytes, bytes] = {}
    for delta in deltas:
        for command in delta.commands:
            if command.engine == MEMBERS_INSTANCE and command.name == "role":
                setter[command.args["id"]] = delta.creator
    out: list[MembersEvent] = []
    for member_id in sorted(after):
        new, old = after[member_id], before.get(member_id)
        was_current = old is not None and old.current
        if new.current and not was_current:
            out.append(
                MemberAdded(space=space, member=member_id, role=new.role, by=new.added_by[0])
            )
        elif new.current and old is not None and old.role != new.role:
            by = setter.get(member_id)
            out.append(RoleChanged(space=space, member=member_id, role=new.role, by=by))
        elif not new.current and was_current and new.removed_by is not None:
            by = new.removed_by[0]
            out.append(MemberRemoved(space=space, member=member_id, by=by))
            if member_id == me:
                out.append(RemovedFromSpace(space=space, by=by))
    return out


class MembersWatch:
    """The members state of each watched space as last announced: turns each executed batch
    into its members events (:func:`member_events`). Driven from the replicas' executed-deltas
    listeners, on the node's one thread."""

    def __init__(self, me: bytes) -> None:
        self._me = me
        self._seen: dict[bytes, dict[bytes, Member]] = {}

    def start(self, space: bytes, members: MembersView) -> bool:
        """Start watching ``space`` from its state now; False if it is watched already."""
        if space in self._seen:
            return False
        self._seen[space] = {m.id: m for m in members.everyone()}
        return True

    def executed(
        self, space: bytes, deltas: Sequence[Delta], members: MembersView
    ) -> list[MembersEvent]:
        """The members events of ``deltas`` just executed in ``space`` (``members``: its state
        now)."""
        if space not in self._seen or not touches_members(deltas):
            return []
        before = self._seen[space]
        after = {m.id: m for m in members.everyone()}
        self._seen[space] = after
        return member_events(space, me=self._me, before=before, after=after, deltas=deltas)


NodeEvent = (
    DeltasExecuted
    | ToolChanged
    | SpaceAdded
    | AcksAdvanced
    | PostStatusesChanged
    | SyncStateChanged
    | JoinProgress
    | ProcessorChanged
    | PeerConnected
    | PeerDisconnected
    | PeerSighted
    | ConnectionRefused
    | MemberAdded
    | MemberRemoved
    | RoleChanged
    | RemovedFromSpace
)
"""Any event a node emits."""

EVENT_TYPES: tuple[type[NodeEvent], ...] = (
    DeltasExecuted,
    ToolChanged,
    SpaceAdded,
    AcksAdvanced,
    PostStatusesChanged,
    SyncStateChanged,
    JoinProgress,
    ProcessorChanged,
    PeerConnected,
    PeerDisconnected,
    PeerSighted,
    ConnectionRefused,
    MemberAdded,
    MemberRemoved,
    RoleChanged,
    RemovedFromSpace,
)

__all__ = [
    "EVENT_TYPES",
    "AcksAdvanced",
    "ConnectionRefused",
    "DeltasExecuted",
    "ToolChanged",
    "JoinProgress",
    "MemberAdded",
    "MemberRemoved",
    "MembersEvent",
    "MembersWatch",
    "NodeEvent",
    "PeerConnected",
    "PeerDisconnected",
    "PeerSighted",
    "PostStatusesChanged",
    "ProcessorChanged",
    "RemovedFromSpace",
    "RoleChanged",
    "SpaceAdded",
    "SyncStateChanged",
    "member_events",
    "touches_members",
]
