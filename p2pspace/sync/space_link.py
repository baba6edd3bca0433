"""The sync state of one space with one peer: what we send it, what we receive from it.

Theory of operation. A :class:`~p2pspace.sync.session.Session` keeps one :class:`SpaceLink` per
space it syncs with its peer. A link runs two small machines, each a table:

* **send** (what we send the peer): ``idle`` until the peer's ``Revision`` arrives, then
  ``catching up`` while we stream exactly the deltas its vector lacks, then ``live`` (each
  delta we execute is pushed). A fresh ``Revision`` restarts the stream; a live push that
  would overrun the outgoing queue falls back to a lazy stream (``overflow``).
* **recv** (what we receive): ``requested`` from the moment our ``Revision`` is out until the
  peer's ``Synced``; ``stalled`` when the peer stays silent past the session's patience (merges
  stop being held back for it); ``synced`` afterwards. A new request (gap repair, a lossy
  link's retransmission) goes back to ``requested``.

An input a table does not allow is our bug (:class:`~p2pspace.errors.LocalProtocolError`): the
session only feeds inputs its handlers have already checked against the peer's messages.

:class:`LinkView` is the read-only snapshot other layers get (the node's sync states and
"delivered to" counts, the endpoint's fetch planning) -- nobody outside the session reads or
writes a link directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pspace.core.delta import Delta, OrderKey
from p2pspace.core.replica import Replica
from p2pspace.errors import LocalProtocolError


class SendState(enum.Enum):
    """What we send the peer for one space."""

    IDLE = "idle"  # no Revision from the peer yet
    STREAMING = "catching up"  # streaming the deltas its Revision lacks
    LIVE = "live"  # pushing each executed delta


class SendInput(enum.Enum):
    REVISION = "revision"  # the peer sent its vector: stream what it lacks
    STREAM_DONE = "stream done"  # the last chunk and Synced are out
    OVERFLOW = "overflow"  # a live push would overrun the queue: stream lazily instead


SEND_TRANSITIONS: dict[tuple[SendState, SendInput], SendState] = {
    (SendState.IDLE, SendInput.REVISION): SendState.STREAMING,
    (SendState.STREAMING, SendInput.REVISION): SendState.STREAMING,
    (SendState.LIVE, SendInput.REVISION): SendState.STREAMING,
    (SendState.STREAMING, SendInput.STREAM_DONE): SendState.LIVE,
    (SendState.STREAMING, SendInput.OVERFLOW): SendState.STREAMING,
    (SendState.LIVE, SendInput.OVERFLOW): SendState.STREAMING,
}


class RecvState(enum.Enum):
    """What we receive from the peer for one space."""

    REQUESTED = "requested"  # our Revision is out; Synced not yet seen
    STALLED = "stalled"  # requested, but the peer went silent: merges are not held back
    SYNCED = "synced"


class RecvInput(enum.Enum):
    REQUEST = "request"  # our Revision went out
    SILENT = "silent"  # no stream activity for the session's patience
    SYNCED = "synced"  # the peer's Synced arrived


RECV_TRANSITIONS: dict[tuple[RecvState, RecvInput], RecvState] = {
    (RecvState.REQUESTED, RecvInput.REQUEST): RecvState.REQUESTED,
    (RecvState.STALLED, RecvInput.REQUEST): RecvState.REQUESTED,
    (RecvState.SYNCED, RecvInput.REQUEST): RecvState.REQUESTED,
    (RecvState.REQUESTED, RecvInput.SILENT): RecvState.STALLED,
    (RecvState.REQUESTED, RecvInput.SYNCED): RecvState.SYNCED,
    (RecvState.STALLED, RecvInput.SYNCED): RecvState.SYNCED,
    (RecvState.SYNCED, RecvInput.SYNCED): RecvState.SYNCED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkView:
    """A snapshot of one space link, for readers outside the session."""

    space: bytes
    send: SendState
    recv: RecvState
    acked: Mapping[bytes, int]  # what the peer said it executed (members' entries only)
    received: int  # deltas received on this link

    @property
    def live(self) -> bool:
        """Both directions caught up."""
        return self.recv is RecvState.SYNCED and self.send is SendState.LIVE

    @property
    def peer_total(self) -> int:
        """How many deltas the peer said it has (the sum of its acknowledged vector)."""
        return sum(self.acked.values())


@dataclass(slots=True, kw_only=True)
class SpaceLink:
    """Sync state of one space with one peer (owned by its session)."""

    replica: Replica
    send: SendState = SendState.IDLE
    recv: RecvState = RecvState.REQUESTED
    known: dict[bytes, int] = field(default_factory=dict)  # what we believe the peer has
    acked: dict[bytes, int] = field(default_factory=dict)  # what the peer said it executed
    stream_filter: dict[bytes, int] = field(default_factory=dict)
    cursor: OrderKey | None = None
    buffered: list[tuple[Delta, bytes]] = field(default_factory=list)
    buffer_overflow: bool = False
    ticks_requested: int = 0
    lag_ticks: int = 0
    received_since_ack: bool = False
    received: int = 0

    def feed_send(self, event: SendInput) -> None:
        new = SEND_TRANSITIONS.get((self.send, event))
        if new is None:
            raise LocalProtocolError(f"space link: {event.value} not allowed in {self.send.value}")
        self.send = new

    def feed_recv(self, event: RecvInput) -> None:
        new = RECV_TRANSITIONS.get((self.recv, event))
        if new is None:
            raise LocalProtocolError(f"space link: {event.value} not allowed in {self.recv.value}")
        self.recv = new

    @property
    def holds_merges(self) -> bool:
        """True while our request is answered by a stream we still wait for: received deltas
        that would reorder executed ones are staged until it ends."""
        return self.recv is RecvState.REQUESTED

    def view(self, space: bytes) -> LinkView:
        return LinkView(
            space=space,
            send=self.send,
            recv=self.recv,
            acked=dict(self.acked),
            received=self.received,
        )


__all__ = [
    "RECV_TRANSITIONS",
    "SEND_TRANSITIONS",
    "LinkView",
    "RecvInput",
    "RecvState",
    "SendInput",
    "SendState",
    "SpaceLink",
]
