"""What a node shows: frozen status records, each with the JSON form the API serves.

Theory of operation. :meth:`Node.status <p2pspace.node.Node.status>`, ``peers()``,
``spaces()``/``space_info()``, ``presence()`` and ``statistics()`` return the records below: a
snapshot taken synchronously on the trio thread, so it is consistent, and immutable afterwards,
so a caller may keep it. Fields hold typed values (ids as bytes, states as enums); ``to_json()``
gives the dict the local API answers and the command line prints -- the same keys, ids as hex,
addresses as ``host:port`` texts. The builders at the end read the node's collaborators and
change nothing.

Members are shown by name. Display names are unique within a space: where two current members
share a name (compared case-insensitively), both are shown as ``name (SHORT-ID)``
(:func:`display_names`). People name a member the same ways back (:func:`find_member`): by its
endpoint id in any form the node prints -- hex, the grouped base32 form, or a prefix of it such
as the short id -- or by a display name that is unique in the space.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from p2pspace.core.identity import format_endpoint_id, short_id
from p2pspace.core.membership import Member, MembersView, display_names
from p2pspace.core.replica import Replica
from p2pspace.errors import ConflictError, NotFoundError
from p2pspace.node.connections import PeerConnection
from p2pspace.node.dialer import DialTarget
from p2pspace.node.discovery import Sighting
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import space_name
from p2pspace.sync.invitations import join_address
from p2pspace.sync.syncstate import PeerState

Address = tuple[str, int]
MIN_ID_PREFIX = 4  # characters of the base32 form a member id prefix needs (short id: 8)
MIN_HEX_PREFIX = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberView:
    """A current member of a space, as status shows it; ``sync`` and ``connected`` are None for
    this endpoint itself. ``display_name`` is unique in the space (see :func:`display_names`)."""

    id: bytes
    name: str
    role: str
    me: bool
    sync: PeerState | None = None
    connected: bool | None = None
    display_name: str = ""

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id.hex(),
            "display_id": format_endpoint_id(self.id),
            "name": self.name,
            "display_name": self.display_name or self.name or short_id(self.id),
            "role": self.role,
            "me": self.me,
        }
        if not self.me:
            entry["sync"] = (self.sync or PeerState.DISCONNECTED).value
            entry["connected"] = bool(self.connected)
        return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceMemberView:
    """Someone ever admitted to a space: a current member, or a removed one (``current`` False;
    ``removed_by`` is who removed it -- itself, if it left -- and ``removed_by_name`` that
    member's display name). Presence (``online``, ``connected``, ``sync``) is what this node
    knows now; for this endpoint itself ``online`` is True and ``sync`` None."""

    id: bytes
    name: str
    display_name: str
    role: str
    current: bool
    me: bool
    removed_by: bytes | None = None
    removed_by_name: str = ""
    online: bool = False
    connected: bool = False
    sync: PeerState | None = None
    equivocated: bool = False  # caught signing two histories: its deltas from then on are void
    last_seen: int = 0  # ms this endpoint was last connected to it (0: never, or itself)

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def left(self) -> bool:
        """Removed by itself: it left the space."""
        return self.removed_by is not None and self.removed_by == self.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "display_id": format_endpoint_id(self.id),
            "short_id": self.short_id,
            "name": self.name,
            "display_name": self.display_name,
            "role": self.role,
            "current": self.current,
            "me": self.me,
            "removed_by": None if self.removed_by is None else self.removed_by.hex(),
            "removed_by_name": self.removed_by_name,
            "left": self.left,
            "equivocated": self.equivocated,
            "online": self.online,
            "connected": self.connected,
            "sync": None if self.sync is None else self.sync.value,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceView:
    """One space: its processor, its members and how far its replica is.

    ``member`` is True while this endpoint is a current member whose admission has executed
    here (False while joining, and once removed); ``role`` is its role then (None otherwise).
    ``removed_by`` is set once this endpoint was removed (or left: it is then this endpoint):
    the space stays readable here and refuses writes.
    """

    id: bytes
    name: str
    processor: str  # a ProcessorState value
    member: bool
    members: tuple[MemberView, ...]
    executed: int
    pending: int
    staged: int
    vector: Mapping[bytes, int]
    role: str | None = None
    removed_by: bytes | None = None
    removed_by_name: str = ""
    equivocators: tuple[str, ...] = ()  # display names of members caught signing two histories
    # The horizon (DESIGN §12): blocks closed, the last checkpoint's time (ms; 0: none yet),
    # and the open window (deltas no checkpoint closed: what a late delta can still reorder).
    checkpoints: int = 0
    last_checkpoint: int = 0
    window: int = 0
    window_bytes: int = 0
    bad_checkpoints: int = 0  # checkpoints refused for a state digest that does not match
    tools: tuple[str, ...] = ()  # the installed tools the space holds, by name

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "tools": list(self.tools),
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "window": self.window,
            "window_bytes": self.window_bytes,
            "bad_checkpoints": self.bad_checkpoints,
            "name": self.name,
            "processor": self.processor,
            "equivocators": list(self.equivocators),
            "member": self.member,
            "role": self.role,
            "removed_by": None if self.removed_by is None else self.removed_by.hex(),
            "removed_by_name": self.removed_by_name,
            "members": [m.to_json() for m in self.members],
            "executed": self.executed,
            "pending": self.pending,
            "staged": self.staged,
            "vector": {c.hex(): s for c, s in sorted(self.vector.items())},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceView:
    """A member of a space and whether it is online now (connected, or seen by discovery)."""

    id: bytes
    name: str
    role: str
    me: bool
    online: bool
    connected: bool
    sync: PeerState | None  # None for this endpoint itself
    display_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "name": self.name,
            "display_name": self.display_name or self.name or short_id(self.id),
            "role": self.role,
            "me": self.me,
            "online": self.online,
            "connected": self.connected,
            "sync": None if self.sync is None else self.sync.value,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionView:
    """A peer's live connection and what crossed it."""

    address: Address
    dialed: bool
    bytes_sent: int
    bytes_received: int
    deltas_sent: int
    deltas_received: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerView:
    """A peer this node knows of: connected, a member of a shared space, or discovered."""

    id: bytes
    connected: bool
    discovered: bool
    addresses: tuple[Address, ...]  # where discovery sees it
    spaces: Mapping[bytes, PeerState]  # shared spaces and the sync state of each
    connection: ConnectionView | None = None  # None while not connected

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id.hex(),
            "display_id": format_endpoint_id(self.id),
            "connected": self.connected,
            "discovered": self.discovered,
            "addresses": [join_address(h, p) for h, p in self.addresses],
            "spaces": {s.hex(): state.value for s, state in sorted(self.spaces.items())},
        }
        if self.connection is not None:
            c = self.connection
            entry["address"] = join_address(*c.address)
            entry["dialed"] = c.dialed
            entry["bytes_sent"] = c.bytes_sent
            entry["bytes_received"] = c.bytes_received
            entry["deltas_sent"] = c.deltas_sent
            entry["deltas_received"] = c.deltas_received
        return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class DialTargetView:
    """Somewhere the node keeps dialling."""

    key: str
    addresses: tuple[Address, ...]
    peer: bytes | None
    attempts: int
    last_error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "addresses": [join_address(h, p) for h, p in self.addresses],
            "peer": self.peer.hex() if self.peer else None,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """Everything the ``status`` command and the API's ``/api/status`` show."""

    endpoint: bytes
    name: str
    listen: tuple[Address, ...]
    interfaces: tuple[str, ...]
    api: str | None
    uptime_s: float
    spaces: tuple[SpaceView, ...]
    peers: tuple[PeerView, ...]
    targets: tuple[DialTargetView, ...]
    refused: int
    # How the home is kept on disk (p2pspace.node.home.at_rest_state): "plain",
    # "encrypted (keyring)" or "encrypted (passphrase)".
    at_rest: str = "plain"
    # The tools the node loaded: name -> {"title", "page" (it has a page at /tools/NAME/)}.
    tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tools": {name: dict(info) for name, info in sorted(self.tools.items())},
            "endpoint": self.endpoint.hex(),
            "display_id": format_endpoint_id(self.endpoint),
            "name": self.name,
            "listen": [join_address(h, p) for h, p in self.listen],
            "interfaces": list(self.interfaces),
            "api": self.api,
            "uptime_s": self.uptime_s,
            "spaces": [s.to_json() for s in self.spaces],
            "peers": [p.to_json() for p in self.peers],
            "targets": [t.to_json() for t in self.targets],
            "refused": self.refused,
            "at_rest": self.at_rest,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatistics:
    """Counts of what the node holds (trio's ``statistics()`` convention)."""

    connections: int
    targets: int
    subscribers: int
    refused: int

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "targets": self.targets,
            "subscribers": self.subscribers,
            "refused": self.refused,
        }


# -- members: how they are named ------------------------------------------------------------------


def find_member(everyone: Sequence[Member], text: str | bytes, *, space: str) -> Member:
    """The member ``text`` names among ``everyone`` (current and removed members of the space
    called ``space``, for messages).

    ``text`` is an endpoint id (as bytes; or as text: hex, or the grouped base32 form in any
    case, dashes optional), a prefix of one (at least :data:`MIN_ID_PREFIX` base32 or
    :data:`MIN_HEX_PREFIX` hex characters: the short id is one), a display name (``name
    (SHORT-ID)`` included) or a name.
    A name is looked for among current members first, then among removed ones; names win over
    id prefixes. Raises :class:`NotFoundError` if nothing matches and :class:`ConflictError`
    (listing the candidates) if several members do.
    """
    if isinstance(text, bytes):
        for member in everyone:
            if member.id == text:
                return member
        raise NotFoundError(f"no member {text.hex()} in space {space!r}")
    wanted = text.strip()
    if not wanted:
        raise NotFoundError("name a member: a display name or an endpoint id")
    names = display_names(everyone)
    exact = [m for m in everyone if _is_full_id(wanted, m.id)]
    if exact:
        return exact[0]
    for group in (
        [m for m in everyone if m.current],
        [m for m in everyone if not m.current],
    ):
        for matches in (
            [m for m in group if names[m.id] == wanted or m.name == wanted],
            [m for m in group if wanted.casefold() in (names[m.id].casefold(), m.name.casefold())],
        ):
            if matches:
                return _one(matches, wanted)
    prefixed = [m for m in everyone if _is_id_prefix(wanted, m.id)]
    if prefixed:
        return _one(prefixed, wanted)
    raise NotFoundError(
        f"no member {wanted!r} in space {space!r} (see: p2pspace member list {space})"
    )


def _one(matches: list[Member], text: str) -> Member:
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(f"{m.name or '-'} ({short_id(m.id)})" for m in matches)
    raise ConflictError(f"{text!r} names several members ({shown}); use the member's id")


def _compact(text: str) -> str:
    return text.replace("-", "").replace(" ", "").upper()


def _is_full_id(text: str, member_id: bytes) -> bool:
    return text.lower() == member_id.hex() or _compact(text) == _compact(
        format_endpoint_id(member_id)
    )


def _is_id_prefix(text: str, member_id: bytes) -> bool:
    compact = _compact(text)
    if len(compact) >= MIN_ID_PREFIX and _compact(format_endpoint_id(member_id)).startswith(
        compact
    ):
        return True
    return len(text) >= MIN_HEX_PREFIX and member_id.hex().startswith(text.lower())


# -- builders -------------------------------------------------------------------------------------


def member_views(
    replica: Replica,
    *,
    me: bytes,
    peer_states: PeerStates,
    connected: Container[bytes],
    seen: Container[bytes],
    last_seen: Callable[[bytes], int] = lambda _peer: 0,
) -> list[SpaceMemberView]:
    """Everyone ever admitted to the space: current members first, then removed ones, each
    group by display name. ``last_seen``: when this endpoint was last connected to a peer
    (ms, 0: never)."""
    everyone = list(replica.members().everyone())
    names = display_names(everyone)
    forked = replica.equivocators()
    out = []
    for m in everyone:
        mine = m.id == me
        remover = m.removed_by[0] if m.removed_by is not None else None
        out.append(
            SpaceMemberView(
                id=m.id,
                name=m.name,
                display_name=names[m.id],
                role=m.role,
                current=m.current,
                me=mine,
                removed_by=remover,
                removed_by_name="" if remover is None else _name_of(remover, names),
                online=mine or (m.current and (m.id in connected or m.id in seen)),
                connected=not mine and m.id in connected,
                sync=None if mine or not m.current else peer_states.state(replica.space_id, m.id),
                equivocated=m.id in forked,
                last_seen=0 if mine else last_seen(m.id),
            )
        )
    out.sort(key=lambda v: (not v.current, v.display_name.casefold(), v.id))
    return out


def _name_of(member_id: bytes, names: Mapping[bytes, str]) -> str:
    return names.get(member_id) or short_id(member_id)


def removal_of(members: MembersView, me: bytes) -> tuple[bytes, str] | None:
    """``(remover id, remover's display name)`` if ``me`` was removed from the space (or left
    it: the remover is then ``me``), else None."""
    record = members.get(me)
    if record is None or record.removed_by is None:
        return None
    remover = record.removed_by[0]
    names = display_names(members.everyone())
    return remover, _name_of(remover, names)


def space_view(
    replica: Replica,
    *,
    me: bytes,
    processor: str,
    peer_states: PeerStates,
    connected: Container[bytes],
) -> SpaceView:
    space = replica.space_id
    view = replica.members()
    everyone = list(view.everyone())
    names = display_names(everyone)
    members = tuple(
        MemberView(
            id=m.id,
            name=m.name,
            display_name=names[m.id],
            role=m.role,
            me=m.id == me,
            sync=None if m.id == me else peer_states.state(space, m.id),
            connected=None if m.id == me else m.id in connected,
        )
        for m in everyone
        if m.current
    )
    role = view.role_of(me) if replica.can_create() else None
    removal = removal_of(view, me)
    horizon = replica.horizon()
    window, window_bytes = replica.window()
    return SpaceView(
        checkpoints=horizon.number,
        last_checkpoint=horizon.time if horizon.number else 0,
        window=window,
        window_bytes=window_bytes,
        bad_checkpoints=len(replica.checkpoint_faults()),
        id=space,
        name=space_name(replica),
        processor=processor,
        member=role is not None,
        role=role,
        removed_by=None if removal is None else removal[0],
        removed_by_name="" if removal is None else removal[1],
        equivocators=tuple(sorted(names.get(c, short_id(c)) for c in replica.equivocators())),
        members=members,
        executed=replica.executed_count(),
        pending=replica.pending_count,
        staged=replica.staged_count,
        vector=MappingProxyType(dict(replica.vector)),
    )


def presence_views(
    replica: Replica,
    *,
    me: bytes,
    peer_states: PeerStates,
    connected: Container[bytes],
    seen: Container[bytes],
) -> list[PresenceView]:
    everyone = list(replica.members().everyone())
    names = display_names(everyone)
    out = []
    for member in everyone:
        if not member.current:
            continue
        mine = member.id == me
        out.append(
            PresenceView(
                id=member.id,
                name=member.name,
                display_name=names[member.id],
                role=member.role,
                me=mine,
                online=mine or member.id in connected or member.id in seen,
                connected=member.id in connected,
                sync=None if mine else peer_states.state(replica.space_id, member.id),
            )
        )
    return out


def peer_views(
    *,
    me: bytes,
    replicas: Iterable[Replica],
    connections: Mapping[bytes, PeerConnection],
    seen: Mapping[bytes, Sighting],
    peer_states: PeerStates,
) -> list[PeerView]:
    replicas = list(replicas)
    ids: set[bytes] = set(connections) | set(seen)
    for replica in replicas:
        ids.update(m for m in replica.member_ids() if m != me)
    out = []
    for peer in sorted(ids):
        connection = connections.get(peer)
        sighting = seen.get(peer)
        shared = sorted(r.space_id for r in replicas if r.is_member(peer))
        link: ConnectionView | None = None
        if connection is not None:
            stats = connection.session.stats
            link = ConnectionView(
                address=connection.conn.address,
                dialed=connection.conn.dialed,
                bytes_sent=stats.bytes_sent,
                bytes_received=stats.bytes_received,
                deltas_sent=stats.deltas_sent,
                deltas_received=stats.deltas_received,
            )
        out.append(
            PeerView(
                id=peer,
                connected=connection is not None,
                discovered=sighting is not None,
                addresses=tuple(sighting.addresses) if sighting is not None else (),
                spaces=MappingProxyType({s: peer_states.state(s, peer) for s in shared}),
                connection=link,
            )
        )
    return out


def target_view(target: DialTarget) -> DialTargetView:
    return DialTargetView(
        key=target.key,
        addresses=tuple(target.addresses),
        peer=target.peer,
        attempts=target.attempts,
        last_error=target.last_error,
    )


__all__ = [
    "ConnectionView",
    "DialTargetView",
    "MemberView",
    "NodeStatistics",
    "NodeStatus",
    "PeerView",
    "PresenceView",
    "SpaceMemberView",
    "SpaceView",
    "display_names",
    "find_member",
    "member_views",
    "peer_views",
    "presence_views",
    "removal_of",
    "space_view",
    "target_view",
]
