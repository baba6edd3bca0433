"""What a node shows: frozen status records, each with the JSON form the API serves.

Theory of operation. :meth:`Node.status <p2pspace.node.Node.status>`, ``peers()``,
``spaces()``/``space_info()``, ``presence()`` and ``statistics()`` return the records below: a
snapshot taken synchronously on the trio thread, so it is consistent, and immutable afterwards,
so a caller may keep it. Fields hold typed values (ids as bytes, states as enums); ``to_json()``
gives the dict the local API answers and the command line prints -- the same keys, ids as hex,
addresses as ``host:port`` texts. The builders at the end read the node's collaborators and
change nothing.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from p2pspace.core.identity import format_endpoint_id
from p2pspace.core.replica import Replica
from p2pspace.node.connections import PeerConnection
from p2pspace.node.dialer import DialTarget
from p2pspace.node.discovery import Sighting
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import space_name
from p2pspace.sync.invitations import join_address
from p2pspace.sync.syncstate import PeerState

Address = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberView:
    """A member of a space; ``sync`` and ``connected`` are None for this endpoint itself."""

    id: bytes
    name: str
    role: str
    me: bool
    sync: PeerState | None = None
    connected: bool | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.id.hex(),
            "display_id": format_endpoint_id(self.id),
            "name": self.name,
            "role": self.role,
            "me": self.me,
        }
        if not self.me:
            entry["sync"] = (self.sync or PeerState.DISCONNECTED).value
            entry["connected"] = bool(self.connected)
        return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceView:
    """One space: its processor, its members and how far its replica is."""

    id: bytes
    name: str
    processor: str  # a ProcessorState value
    member: bool  # this endpoint may write (it is a member, not still joining)
    members: tuple[MemberView, ...]
    executed: int
    pending: int
    staged: int
    vector: Mapping[bytes, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "name": self.name,
            "processor": self.processor,
            "member": self.member,
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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "name": self.name,
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

    def to_json(self) -> dict[str, Any]:
        return {
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


# -- builders -------------------------------------------------------------------------------------


def space_view(
    replica: Replica,
    *,
    me: bytes,
    processor: str,
    peer_states: PeerStates,
    connected: Container[bytes],
) -> SpaceView:
    space = replica.space_id
    members = tuple(
        MemberView(
            id=m.id,
            name=m.name,
            role=m.role,
            me=m.id == me,
            sync=None if m.id == me else peer_states.state(space, m.id),
            connected=None if m.id == me else m.id in connected,
        )
        for m in replica.members().members()
    )
    return SpaceView(
        id=space,
        name=space_name(replica),
        processor=processor,
        member=replica.can_create(),
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
    out = []
    for member in replica.members().members():
        mine = member.id == me
        out.append(
            PresenceView(
                id=member.id,
                name=member.name,
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
    "SpaceView",
    "peer_views",
    "presence_views",
    "space_view",
    "target_view",
]
