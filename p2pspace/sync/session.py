"""The per-peer sync state machine (sans-IO): bytes in, events out, bytes out.

Theory of operation (shaped like h11). One :class:`Session` runs the sync protocol with one peer
over one ordered stream of frames. Its driver -- the :class:`~p2pspace.sync.endpoint.Endpoint` --
feeds it with :meth:`Session.receive_data` and then pulls :meth:`Session.next_event` until it
returns ``None``. Most frames are handled inside the session (they only change its own state and
queue answers); a ``Deltas`` frame is returned as a :class:`DeltasReceived` event, because
applying it changes a replica: the endpoint applies it and tells the session what it saw with
:meth:`Session.deltas_applied` before pulling the next event. A ``Synced`` frame is returned as a
:class:`CatchUpEnded` event: the endpoint merges what the finished stream held back, then lets
the session answer with :meth:`Session.catch_up_ended` (its Ack then covers the merge). Nothing
calls back into a session while it handles a frame, and nothing a session does applies deltas or
merges.

Bytes for the peer come from :meth:`Session.data_to_send` (catch-up chunks are produced lazily
here, so a slow peer exerts backpressure instead of growing a queue). :meth:`Session.tick` is
called periodically by the driver (acks, retransmission, gap repair); :meth:`Session.push`
gives the session deltas the endpoint executed, created or received from any peer.

1. Both sides send ``Hello`` naming the spaces they will sync with the other (those where the
   other is a member); the common spaces are the intersection.
2. Per common space each side sends ``Revision`` (its vector); the other streams every executed
   delta that vector lacks, in log order, in bounded chunks, then ``Synced``. Deltas executed
   meanwhile are buffered for that peer and released after ``Synced``, so the peer receives one
   causal stream.
3. Live: each delta the endpoint executes is pushed to every peer whose known vector lacks it
   (which relays deltas between peers that are not directly connected).
4. ``Ack`` carries the executed vector after received batches and on ticks; a peer whose acks
   show deltas we lack gets a fresh ``Revision`` (repairing anything lost in transit).
5. ``Fetch`` asks for deltas that pending deltas wait for; the answer is ``Deltas``.

Connection states and the inputs each accepts are one table (:data:`TRANSITIONS`); an input the
table does not allow is a :class:`~p2pspace.errors.RemoteProtocolError`, answered by an
``Error`` frame, and the session moves to ``ERROR``. A session created with ``lossy=True`` (the
simulator's datagram links, which drop, duplicate and reorder frames) ignores such out-of-order
inputs instead, and retransmits ``Hello`` and ``Revision`` on ticks until answered. Each space's
link runs its own send and receive tables (:mod:`p2pspace.sync.space_link`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from p2pspace.core.delta import Delta
from p2pspace.core.replica import ReceiveResult, Replica
from p2pspace.errors import (
    AuthenticationError,
    EquivocationError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
    TooFarAheadError,
)
from p2pspace.sync.framing import MAX_FRAME, FrameDecoder
from p2pspace.sync.messages import (
    Ack,
    Deltas,
    Error,
    Fetch,
    Hello,
    Message,
    MessageType,
    Revision,
    Synced,
    decode_message,
    vector_of,
)
from p2pspace.sync.outbox import CHUNK_BYTES, MAX_OUTBOX, Outbox, SessionStats
from p2pspace.sync.space_link import LinkView, RecvInput, RecvState, SendInput, SendState, SpaceLink

RETRANSMIT_TICKS = 3
CATCH_UP_PATIENCE = 40
ACK_EVERY_TICKS = 2


class State(enum.Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Input(enum.Enum):
    HELLO = MessageType.HELLO
    REVISION = MessageType.REVISION
    DELTAS = MessageType.DELTAS
    SYNCED = MessageType.SYNCED
    ACK = MessageType.ACK
    FETCH = MessageType.FETCH
    ERROR = MessageType.ERROR
    CLOSE = "close"
    PROTOCOL_ERROR = "protocol-error"
    FLUSHED = "flushed"  # the Error frame of a failed session has been sent


TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.AWAIT_HELLO, Input.HELLO): State.OPEN,
    (State.AWAIT_HELLO, Input.ERROR): State.CLOSED,
    (State.AWAIT_HELLO, Input.CLOSE): State.CLOSED,
    (State.AWAIT_HELLO, Input.PROTOCOL_ERROR): State.ERROR,
    (State.OPEN, Input.HELLO): State.OPEN,
    (State.OPEN, Input.REVISION): State.OPEN,
    (State.OPEN, Input.DELTAS): State.OPEN,
    (State.OPEN, Input.SYNCED): State.OPEN,
    (State.OPEN, Input.ACK): State.OPEN,
    (State.OPEN, Input.FETCH): State.OPEN,
    (State.OPEN, Input.ERROR): State.CLOSED,
    (State.OPEN, Input.CLOSE): State.CLOSED,
    (State.OPEN, Input.PROTOCOL_ERROR): State.ERROR,
    (State.ERROR, Input.FLUSHED): State.CLOSED,
}

# Rejections that prove the peer sent something invalid (as opposed to stale or conflicting).
_TOLERATED = (EquivocationError, TooFarAheadError)


class SessionHost(Protocol):
    """What a session may ask of the endpoint it runs for (queries only, no side effects)."""

    @property
    def endpoint_id(self) -> bytes: ...

    @property
    def replicas(self) -> Mapping[bytes, Replica]: ...

    def spaces_for(self, peer: bytes, peer_offered: Iterable[bytes] = ()) -> list[bytes]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltasReceived:
    """The peer sent deltas for ``space``: apply them, then call
    :meth:`Session.deltas_applied` with the result."""

    space: bytes
    replica: Replica
    wires: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUpEnded:
    """The peer's catch-up stream for ``space`` is complete (its Synced arrived, bringing us up
    to ``vector``): merge what waited for it, then call :meth:`Session.catch_up_ended`."""

    space: bytes
    vector: tuple[tuple[bytes, int], ...]


Event = DeltasReceived | CatchUpEnded


@dataclass(slots=True, kw_only=True)
class _Offers:
    """The spaces each side named in its Hellos, and the ticks spent waiting for them."""

    ours: tuple[bytes, ...] = ()
    theirs: tuple[bytes, ...] = ()  # only spaces this endpoint holds; grows, never shrinks
    ticks_awaiting: int = 0
    ticks: int = 0


class Session:
    """The sync protocol with one peer. See the module docstring."""

    def __init__(
        self,
        host: SessionHost,
        *,
        expected_peer: bytes | None = None,
        lossy: bool = False,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.host = host
        self.expected_peer = expected_peer
        # With an authenticated transport the peer is known before its Hello arrives.
        self.peer: bytes | None = expected_peer
        self.lossy = lossy
        self.state = State.AWAIT_HELLO
        self.error: RemoteProtocolError | None = None
        self.stats = SessionStats()
        self._links: dict[bytes, SpaceLink] = {}
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._outbox = Outbox(self.stats, max_frame=max_frame)
        self._offers = _Offers()
        self._waiting: Event | None = None  # returned, not yet answered
        self._send_hello(reply=False)

    # -- state machine ------------------------------------------------------------------------

    def _transition(self, event: Input) -> None:
        """Move by the table. Raises RemoteProtocolError (or _Ignore on lossy links) for an
        input the current state does not take; the caller fails the session."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            if self.lossy and not self.closed:
                raise _Ignore
            raise RemoteProtocolError(
                f"{event.name} is not allowed in state {self.state.value}",
                code=ErrorCode.UNEXPECTED_MESSAGE,
            )
        self.state = new

    @property
    def closed(self) -> bool:
        return self.state in (State.CLOSED, State.ERROR)

    @property
    def mid_frame(self) -> bool:
        """True while part of a frame from the peer has arrived (a stall leaves this set)."""
        return self._decoder.mid_frame

    # -- queries ------------------------------------------------------------------------------

    def linked_spaces(self) -> tuple[bytes, ...]:
        """The spaces this connection syncs (both sides offered them)."""
        return tuple(self._links)

    @property
    def queued_bytes(self) -> int:
        """Bytes of whole frames queued for the peer (catch-up streams are not queued)."""
        return self._outbox.bytes

    def syncs(self, space: bytes) -> bool:
        return space in self._links

    def link(self, space: bytes) -> LinkView | None:
        """A snapshot of the space's link, or None if this connection does not sync it."""
        link = self._links.get(space)
        return None if link is None else link.view(space)

    def links(self) -> list[LinkView]:
        return [link.view(space) for space, link in self._links.items()]

    def acked(self, space: bytes) -> Mapping[bytes, int]:
        """What the peer acknowledged executing in ``space`` (empty if not synced here)."""
        link = self._links.get(space)
        return {} if link is None else dict(link.acked)

    def peer_has(self, space: bytes, creator: bytes, seq: int) -> bool:
        link = self._links.get(space)
        return link is not None and link.acked.get(creator, 0) >= seq

    def holds_merges(self, space: bytes) -> bool:
        """True while a catch-up stream we requested for ``space`` is still expected."""
        link = self._links.get(space)
        return link is not None and link.holds_merges

    def receiving_catch_up(self, space: bytes) -> bool:
        """True until the peer's Synced for ``space`` arrives (even if it went quiet)."""
        link = self._links.get(space)
        return link is not None and link.recv is not RecvState.SYNCED

    # -- output -------------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        if not self.closed:
            self._outbox.enqueue(message)

    def _send_hello(self, *, reply: bool) -> None:
        offers = self._offers
        offers.ours = tuple(self.host.spaces_for(self.peer, offers.theirs)) if self.peer else ()
        self._send(Hello(endpoint=self.host.endpoint_id, spaces=offers.ours, reply=reply))

    def data_to_send(self, max_bytes: int = CHUNK_BYTES * 2) -> bytes:
        """Bytes for the peer, at most about ``max_bytes`` (whole frames). Empty when idle."""
        if self.state is State.CLOSED:
            return b""
        if self.state is State.OPEN:
            self._outbox.fill_streams(self._links, max_bytes)
        out = self._outbox.take(max_bytes)
        if self.state is State.ERROR and not self._outbox:
            self._transition(Input.FLUSHED)
        return out

    def frames_to_send(self) -> list[bytes]:
        """Whole frames (length prefix included) for drivers that move frames, not streams."""
        data = self.data_to_send(max_bytes=1 << 62)
        out: list[bytes] = []
        view = memoryview(data)
        while view:
            length = int.from_bytes(view[:4], "big")
            out.append(bytes(view[: 4 + length]))
            view = view[4 + length :]
        return out

    # -- what the endpoint tells the session ----------------------------------------------------

    def push(self, space: bytes, executed: Sequence[tuple[Delta, bytes]]) -> None:
        """Deltas the endpoint executed in ``space`` (created here or received from anyone):
        send those the peer lacks, now or after its catch-up stream."""
        link = self._links.get(space)
        if link is not None and self.state is State.OPEN:
            self._outbox.buffer_or_push(space, link, executed)

    def ask_offers(self) -> None:
        """Ask the peer to name again the spaces it syncs with us (after we started holding
        a space it may have offered before we had it: a join it sponsors)."""
        if self.state is State.OPEN and self.peer is not None:
            self._send_hello(reply=False)

    def refresh_spaces(self) -> None:
        """Offer spaces again if the set we would sync with this peer grew."""
        if self.peer is None or self.closed:
            return
        offered = tuple(self.host.spaces_for(self.peer, self._offers.theirs))
        if set(offered) - set(self._offers.ours):
            self._send_hello(reply=False)
            self._update_links()

    def catch_up_ended(self, event: CatchUpEnded) -> None:
        """The endpoint merged what ``event``'s stream held back (unless another catch-up still
        holds it): acknowledge, and on a lossy link ask again for what the stream lost."""
        if self._waiting is not event:
            raise LocalProtocolError("catch_up_ended() for an event that is not pending")
        self._waiting = None
        link = self._links.get(event.space)
        if link is None:
            return
        accepted = link.replica.accepted_vector()
        if self.lossy and any(accepted.get(c, 0) < s for c, s in event.vector):
            # Part of the stream was lost in transit: ask again from where we are.
            self._request(event.space, link)
        self._send(Ack(space=event.space, vector=vector_of(link.replica.vector)))
        link.received_since_ack = False

    def deltas_applied(self, event: DeltasReceived, result: ReceiveResult) -> None:
        """The endpoint applied ``event``'s deltas with ``result``. Raises the first rejection
        that proves the peer sent something invalid (the session has then failed, with an
        Error frame queued)."""
        if self._waiting is not event:
            raise LocalProtocolError("deltas_applied() for an event that is not pending")
        self._waiting = None
        link = self._links.get(event.space)
        if link is None:
            return
        for creator, seq in result.seen:
            if seq > link.known.get(creator, 0):
                link.known[creator] = seq
        link.received_since_ack = True
        for rejection in result.rejected:
            if not isinstance(rejection.error, _TOLERATED):
                self._fail(rejection.error)
                raise rejection.error

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; :meth:`next_event` parses and handles them."""
        if self.closed:
            return
        self.stats.bytes_received += len(data)
        self._decoder.append(data)

    def next_event(self) -> Event | None:
        """Handle buffered frames up to the next one the endpoint must apply; None when every
        complete frame is handled (or the session closed).

        Protocol violations queue an Error frame, move the session to ERROR, keep the error
        in :attr:`error` and raise it. Raises :class:`LocalProtocolError` if the previous
        event was not answered (:meth:`deltas_applied`, :meth:`catch_up_ended`).
        """
        if self._waiting is not None:
            raise LocalProtocolError("the previous event must be answered first")
        try:
            while not self.closed:
                payload = self._decoder.next_frame()
                if payload is None:
                    return None
                event = self._receive_payload(payload)
                if event is not None:
                    self._waiting = event
                    return event
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return None

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self.closed:
            self.error = self.error or exc
            return
        self.error = exc
        self._outbox.clear()
        self._outbox.enqueue(Error.of(exc))
        self.state = TRANSITIONS[(self.state, Input.PROTOCOL_ERROR)]
        self._links.clear()

    def _receive_payload(self, payload: bytes) -> Event | None:
        self.stats.frames_received += 1
        if self._outbox.bytes > MAX_OUTBOX:
            # Every frame may ask for an answer; a peer that keeps asking without reading the
            # answers is refused rather than buffered for.
            raise ResourceLimitError("peer is not reading; outgoing queue over its limit")
        try:
            message = decode_message(payload)
            self._transition(Input(message.TYPE))
        except _Ignore:
            return None
        handler = _HANDLERS[type(message)]
        return handler(self, message)

    def close(self) -> None:
        """Close locally (connection gone). Idempotent."""
        if self.state in (State.AWAIT_HELLO, State.OPEN):
            self._transition(Input.CLOSE)
        self._waiting = None
        self._links.clear()

    # -- handlers -----------------------------------------------------------------------------

    def _on_hello(self, message: Hello) -> None:
        if self.expected_peer is not None and message.endpoint != self.expected_peer:
            raise AuthenticationError("Hello names an endpoint other than the authenticated peer")
        if message.endpoint == self.host.endpoint_id:
            raise AuthenticationError("peer claims this endpoint's own id")
        if self.peer is not None and message.endpoint != self.peer:
            raise AuthenticationError("peer changed its endpoint id")
        self.peer = message.endpoint
        # Offers only grow while a connection lives; a late, stale Hello must not shrink them.
        # Only spaces this endpoint has matter (bounded by its own spaces, not by the peer).
        mine = self.host.replicas
        offered = {sid for sid in message.spaces if sid in mine}
        offers = self._offers
        if not offered <= set(offers.theirs):
            offers.theirs = tuple(sorted(set(offers.theirs) | offered))
        if not message.reply:
            self._send_hello(reply=True)
            self._update_links()
        else:
            # The peer's offer may let us offer more (a joiner offers what members offered it).
            self.refresh_spaces()
            self._update_links()

    def _update_links(self) -> None:
        common = set(self._offers.ours) & set(self._offers.theirs)
        for space in sorted(common - set(self._links)):
            replica = self.host.replicas.get(space)
            if replica is None:
                continue
            link = SpaceLink(replica=replica)
            self._links[space] = link
            self._request(space, link)

    def _request(self, space: bytes, link: SpaceLink) -> None:
        link.ticks_requested = 0
        link.feed_recv(RecvInput.REQUEST)
        self._send(Revision(space=space, vector=vector_of(link.replica.accepted_vector())))

    def _link_for(self, space: bytes) -> SpaceLink | None:
        link = self._links.get(space)
        if link is None and not self.lossy:
            raise RemoteProtocolError(
                "message for a space this connection does not sync",
                code=ErrorCode.UNEXPECTED_MESSAGE,
            )
        return link

    def _on_revision(self, message: Revision) -> None:
        link = self._link_for(message.space)
        if link is None:
            return
        vector = dict(message.vector)
        _merge(link.acked, _members_only(link.replica, vector))
        self._outbox.start_stream(link, vector, SendInput.REVISION)

    def _on_deltas(self, message: Deltas) -> DeltasReceived | None:
        link = self._link_for(message.space)
        if link is None:
            return None
        self.stats.deltas_received += len(message.wires)
        link.received += len(message.wires)
        # Patience measures silence, not the length of a catch-up that is still flowing.
        link.ticks_requested = 0
        return DeltasReceived(space=message.space, replica=link.replica, wires=message.wires)

    def _on_synced(self, message: Synced) -> CatchUpEnded | None:
        link = self._link_for(message.space)
        if link is None:
            return None
        _merge(link.acked, _members_only(link.replica, dict(message.vector)))
        link.feed_recv(RecvInput.SYNCED)
        return CatchUpEnded(space=message.space, vector=message.vector)

    def _on_ack(self, message: Ack) -> None:
        link = self._link_for(message.space)
        if link is None:
            return
        # Only creators that are members count: made-up ids must not grow what we keep.
        vector = _members_only(link.replica, dict(message.vector))
        _merge(link.acked, vector)
        _merge(link.known, vector)

    def _on_fetch(self, message: Fetch) -> None:
        link = self._link_for(message.space)
        if link is None:
            return
        if self._outbox.bytes > MAX_OUTBOX // 2:
            raise ResourceLimitError("peer keeps asking while not reading the answers")
        self._outbox.answer_fetch(message.space, link, message.ranges)

    def _on_error(self, message: Error) -> None:
        self.error = RemoteProtocolError(
            f"peer closed with error {message.code}: {message.message}"
        )
        self._links.clear()

    # -- periodic work ------------------------------------------------------------------------

    def tick(self) -> None:
        """Periodic duties: acks, retransmission (lossy links) and gap repair."""
        if self.closed:
            return
        offers = self._offers
        offers.ticks += 1
        if self.state is State.AWAIT_HELLO:
            offers.ticks_awaiting += 1
            if self.lossy and offers.ticks_awaiting % RETRANSMIT_TICKS == 0:
                self._send_hello(reply=False)
            return
        if (
            self.lossy
            and offers.ticks % RETRANSMIT_TICKS == 0
            and set(offers.ours) - set(self._links)
        ):
            self._send_hello(reply=False)
        for space, link in list(self._links.items()):
            if self.state is not State.OPEN:
                return
            self._tick_link(space, link)

    def _tick_link(self, space: bytes, link: SpaceLink) -> None:
        replica = link.replica
        if link.recv is not RecvState.SYNCED:
            link.ticks_requested += 1
            if link.recv is RecvState.REQUESTED and link.ticks_requested >= CATCH_UP_PATIENCE:
                # Stop holding back merges for a peer that does not answer.
                link.feed_recv(RecvInput.SILENT)
            if self.lossy and link.ticks_requested % RETRANSMIT_TICKS == 0:
                self._send(Revision(space=space, vector=vector_of(replica.accepted_vector())))
        accepted = replica.accepted_vector()
        if any(accepted.get(c, 0) < s for c, s in link.acked.items()):
            link.lag_ticks += 1
            if link.lag_ticks >= RETRANSMIT_TICKS and link.recv is RecvState.SYNCED:
                link.lag_ticks = 0
                self._request(space, link)
        else:
            link.lag_ticks = 0
        if link.received_since_ack or self._offers.ticks % ACK_EVERY_TICKS == 0:
            link.received_since_ack = False
            self._send(Ack(space=space, vector=vector_of(replica.vector)))

    def send_fetch(self, space: bytes, ranges: Sequence[tuple[bytes, int, int]]) -> None:
        if space in self._links and ranges and self.state is State.OPEN:
            self._send(Fetch(space=space, ranges=tuple(ranges)))


class _Ignore(Exception):
    """Internal: an out-of-order input on a lossy link, dropped."""


def _members_only(replica: Replica, vector: dict[bytes, int]) -> dict[bytes, int]:
    """What a peer says it has, for creators we know to be members: made-up ids in a vector
    must not grow what a session keeps."""
    return {c: s for c, s in vector.items() if replica.is_member(c)}


def _merge(into: dict[bytes, int], other: dict[bytes, int]) -> None:
    for key, value in other.items():
        if value > into.get(key, 0):
            into[key] = value


_HANDLERS: dict[type, Callable[[Session, Any], Event | None]] = {
    Hello: Session._on_hello,
    Revision: Session._on_revision,
    Deltas: Session._on_deltas,
    Synced: Session._on_synced,
    Ack: Session._on_ack,
    Fetch: Session._on_fetch,
    Error: Session._on_error,
}

__all__ = [
    "CatchUpEnded",
    "DeltasReceived",
    "Event",
    "LinkView",
    "RecvState",
    "SendState",
    "Session",
    "SessionHost",
    "SessionStats",
    "State",
]
