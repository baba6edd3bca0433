"""The change events a node emits: one frozen record per kind.

Theory of operation. Whatever changes in a running node -- deltas executed, a peer connected, a
sync state moved, a join made progress -- is announced as one of the records below to every
subscriber of :meth:`Node.subscribe <p2pspace.node.Node.subscribe>`. An event says *that*
something changed; a program reads what it looks like now from the node's views. Each record's
``to_json()`` is the wire form the local API streams and the web UI and the command line read:
a dict with a ``type`` string and the fields of that type, ids as hex. The vocabulary -- type,
fields, when -- is documented in ``docs/events.md``; a new kind of event is a new record here
and a new row there.

The records hold typed values (ids as bytes, states as enums); nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from p2pspace.sync.syncstate import PeerState, ProcessorState
from p2pspace.tools.discussion import ChangeEvent


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
class DiscussionChanged:
    """A post of the space's discussion was added, edited or deleted."""

    TYPE: ClassVar[str] = "discussion"
    space: bytes
    change: ChangeEvent

    def to_json(self) -> dict[str, Any]:
        return {**self.change.to_json(), "space": self.space.hex()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceAdded:
    """A space was created here or joined."""

    TYPE: ClassVar[str] = "space"
    space: bytes
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "space": self.space.hex(), "name": self.name}


@dataclass(frozen=True, slots=True, kw_only=True)
class AcksAdvanced:
    """A peer acknowledged more of a space than before."""

    TYPE: ClassVar[str] = "acks"
    space: bytes
    peer: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "space": self.space.hex(), "peer": self.peer.hex()}


@dataclass(frozen=True, slots=True, kw_only=True)
class PostStatusesChanged:
    """Posts' sync statuses ("delivered to k of n") may have moved: a peer acknowledged more of a
    space that holds the discussion tool."""

    TYPE: ClassVar[str] = "status"
    space: bytes
    peer: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "space": self.space.hex(), "peer": self.peer.hex()}


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStateChanged:
    """A (space, peer) sync state moved."""

    TYPE: ClassVar[str] = "sync"
    space: bytes
    peer: bytes
    state: PeerState
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "space": self.space.hex(),
            "peer": self.peer.hex(),
            "state": self.state.value,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinProgress:
    """Catch-up progress of a join: ``have`` of the ``total`` deltas the inviter has."""

    TYPE: ClassVar[str] = "progress"
    space: bytes
    have: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "space": self.space.hex(),
            "have": self.have,
            "total": self.total,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorChanged:
    """A space's processor changed state (today: it failed, its store could not be written)."""

    TYPE: ClassVar[str] = "processor"
    space: bytes
    state: ProcessorState

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "space": self.space.hex(), "state": self.state.value}


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
        return {"type": self.TYPE, "peer": self.peer.hex(), "present": self.present}


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionRefused:
    """An incoming connection was refused at its handshake; ``error`` is ``"Type: message"``."""

    TYPE: ClassVar[str] = "refused"
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "error": self.error}


NodeEvent = (
    DeltasExecuted
    | DiscussionChanged
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
)
"""Any event a node emits."""

EVENT_TYPES: tuple[type[NodeEvent], ...] = (
    DeltasExecuted,
    DiscussionChanged,
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
)

__all__ = [
    "EVENT_TYPES",
    "AcksAdvanced",
    "ConnectionRefused",
    "DeltasExecuted",
    "DiscussionChanged",
    "JoinProgress",
    "NodeEvent",
    "PeerConnected",
    "PeerDisconnected",
    "PeerSighted",
    "PostStatusesChanged",
    "ProcessorChanged",
    "SpaceAdded",
    "SyncStateChanged",
]
