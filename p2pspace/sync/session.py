"""The per-peer sync state machine (sans-IO): bytes in, bytes out, no clock, no sockets.

Theory of operation. One :class:`Session` runs the sync protocol with one peer over one ordered
stream of frames. It is driven by four calls: :meth:`Session.receive_data` (bytes from the peer),
:meth:`Session.data_to_send` (bytes for the peer; catch-up chunks are produced lazily here, so a
slow peer exerts backpressure instead of growing a queue), :meth:`Session.tick` (called
periodically by the driver: acks, retransmission, gap repair) and executed-delta notifications
from the :class:`~p2pspace.sync.endpoint.Endpoint`.

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
inputs instead, and retransmits ``Hello`` and ``Revision`` on ticks until answered.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2pspace.core.delta import Delta, OrderKey
from p2pspace.errors import (
    AuthenticationError,
    EquivocationError,
    ErrorCode,
    RemoteProtocolError,
    ResourceLimitError,
    TooFarAheadError,
)
from p2pspace.sync.framing import MAX_FRAME, FrameDecoder, frame
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
    encode_message,
    vector_of,
)

if TYPE_CHECKING:
    from p2pspace.core.replica import Replica
    from p2pspace.sync.endpoint import Endpoint

CHUNK_DELTAS = 1024
CHUNK_BYTES = 512 * 1024
MAX_LIVE_BUFFER = 20_000
FETCH_ANSWER_MAX = 2048
FETCH_ANSWER_BYTES = 2 * 1024 * 1024
MAX_OUTBOX = 2 * MAX_FRAME  # queued control and answer frames; catch-up is produced lazily
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
}


class SendState(enum.Enum):
    """What we send the peer for one space."""

    IDLE = "idle"  # no Revision from the peer yet
    STREAMING = "catching up"  # streaming the deltas its Revision lacks
    LIVE = "live"  # pushing each executed delta


class RecvState(enum.Enum):
    """What we receive from the peer for one space."""

    REQUESTED = "requested"  # our Revision is out; Synced not yet seen
    SYNCED = "synced"


# Rejections that prove the peer sent something invalid (as opposed to stale or conflicting).
_TOLERATED = (EquivocationError, TooFarAheadError)


@dataclass(slots=True, kw_only=True)
class SpaceLink:
    """Sync state of one space with one peer."""

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
    counted: bool = False  # counted in the endpoint's catching-up total
    lag_ticks: int = 0
    received_since_ack: bool = False
    delivered: int = 0
    received: int = 0
    incoming: frozenset[bytes] = frozenset()  # wires of the Deltas frame being received


@dataclass(slots=True, kw_only=True)
class SessionStats:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    deltas_sent: int = 0
    deltas_received: int = 0


class Session:
    """The sync protocol with one peer. See the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        expected_peer: bytes | None = None,
        lossy: bool = False,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.endpoint = endpoint
        self.expected_peer = expected_peer
        # With an authenticated transport the peer is known before its Hello arrives.
        self.peer: bytes | None = expected_peer
        self.lossy = lossy
        self.state = State.AWAIT_HELLO
        self.error: RemoteProtocolError | None = None
        self.links: dict[bytes, SpaceLink] = {}
        self.stats = SessionStats()
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._max_frame = max_frame
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._offered: tuple[bytes, ...] = ()
        self._peer_spaces: tuple[bytes, ...] = ()  # set before the first Hello is sent
        self._ticks_awaiting = 0
        self._ticks = 0
        self._send_hello(reply=False)

    # -- state machine ------------------------------------------------------------------------

    def _transition(self, event: Input) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            if self.lossy and self.state is not State.CLOSED and self.state is not State.ERROR:
                raise _Ignore
            old, self.state = self.state, State.ERROR
            raise RemoteProtocolError(
                f"{event.name} is not allowed in state {old.value}",
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

    # -- output -------------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        if self.state is State.ERROR or self.state is State.CLOSED:
            return
        self._enqueue(message)

    def _enqueue(self, message: Message) -> None:
        data = frame(encode_message(message), max_frame=self._max_frame)
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        self.stats.frames_sent += 1
        if isinstance(message, Deltas):
            self.stats.deltas_sent += len(message.wires)

    def _send_hello(self, *, reply: bool) -> None:
        self._offered = (
            tuple(self.endpoint.spaces_for(self.peer, self._peer_spaces)) if self.peer else ()
        )
        self._send(Hello(endpoint=self.endpoint.endpoint_id, spaces=self._offered, reply=reply))

    def data_to_send(self, max_bytes: int = CHUNK_BYTES * 2) -> bytes:
        """Bytes for the peer, at most about ``max_bytes`` (whole frames). Empty when idle."""
        if self.state is State.CLOSED:
            return b""
        if self.state is State.OPEN:
            self._fill_streams(max_bytes)
        out = bytearray()
        while self._outbox and (not out or len(out) + len(self._outbox[0]) <= max_bytes):
            data = self._outbox.popleft()
            self._outbox_bytes -= len(data)
            out += data
        self.stats.bytes_sent += len(out)
        if self.state is State.ERROR and not self._outbox:
            self.state = State.CLOSED
        return bytes(out)

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

    def _fill_streams(self, budget: int) -> None:
        budget = min(budget, MAX_OUTBOX // 2)
        for space, link in list(self.links.items()):
            while link.send is SendState.STREAMING and self._outbox_bytes < budget:
                self._stream_chunk(space, link)
                if self.state is not State.OPEN:
                    return

    def _stream_chunk(self, space: bytes, link: SpaceLink) -> None:
        replica = link.replica
        wires: list[tuple[bytes, int, bytes]] = []
        if link.cursor is not None:
            wires, link.cursor = replica.catch_up_chunk(
                link.stream_filter, link.cursor, max_count=CHUNK_DELTAS, max_bytes=CHUNK_BYTES
            )
        if wires:
            for creator, seq, _wire in wires:
                # Deltas in a stream are sent in log order, so per creator seqs only grow.
                if seq > link.known.get(creator, 0):
                    link.known[creator] = seq
            self._send(Deltas(space=space, wires=tuple(w for _c, _s, w in wires)))
        if link.cursor is None:
            self._send(Synced(space=space, vector=vector_of(replica.vector)))
            link.send = SendState.LIVE
            buffered, link.buffered = link.buffered, []
            if link.buffer_overflow:
                link.buffer_overflow = False
                self._start_stream(space, link, dict(link.known))
            else:
                self._push(space, link, buffered)

    def _start_stream(self, space: bytes, link: SpaceLink, vector: dict[bytes, int]) -> None:
        link.stream_filter = vector
        link.known = dict(vector)
        link.cursor = link.replica.catch_up_start(vector)
        link.buffered = []
        link.buffer_overflow = False
        link.send = SendState.STREAMING

    def _push(self, space: bytes, link: SpaceLink, executed: Sequence[tuple[Delta, bytes]]) -> None:
        batch: list[bytes] = []
        size = 0
        incoming = link.incoming
        for delta, wire in executed:
            if incoming and wire in incoming:
                # The peer just sent us this delta: it has it.
                if delta.seq > link.known.get(delta.creator, 0):
                    link.known[delta.creator] = delta.seq
                continue
            if self._outbox_bytes > MAX_OUTBOX // 2:
                # A slow reader (or a huge batch): stop queueing and stream the rest lazily
                # from the store, from what the peer is known to have, as it reads.
                if batch:
                    self._send(Deltas(space=space, wires=tuple(batch)))
                self._start_stream(space, link, dict(link.known))
                return
            if delta.seq <= link.known.get(delta.creator, 0):
                continue
            link.known[delta.creator] = delta.seq
            batch.append(wire)
            size += len(wire)
            if len(batch) >= CHUNK_DELTAS or size >= CHUNK_BYTES:
                self._send(Deltas(space=space, wires=tuple(batch)))
                batch, size = [], 0
        if batch:
            self._send(Deltas(space=space, wires=tuple(batch)))

    # -- notifications from the endpoint --------------------------------------------------------

    def on_executed(self, replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
        link = self.links.get(replica.space_id)
        if link is None or self.state is not State.OPEN:
            return
        if link.send is SendState.LIVE:
            self._push(replica.space_id, link, executed)
        elif link.send is SendState.STREAMING:
            if len(link.buffered) + len(executed) > MAX_LIVE_BUFFER:
                link.buffered = []
                link.buffer_overflow = True
            elif not link.buffer_overflow:
                link.buffered.extend(executed)

    def ask_offers(self) -> None:
        """Ask the peer to name again the spaces it syncs with us (after we started holding
        a space it may have offered before we had it: a join it sponsors)."""
        if self.state is State.OPEN and self.peer is not None:
            self._send_hello(reply=False)

    def refresh_spaces(self) -> None:
        """Offer spaces again if the set we would sync with this peer grew."""
        if self.peer is None or self.closed:
            return
        offered = tuple(self.endpoint.spaces_for(self.peer, self._peer_spaces))
        if set(offered) - set(self._offered):
            self._send_hello(reply=False)
            self._update_links()

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer. Protocol violations queue an Error frame and set ERROR;
        the error is kept in :attr:`error` and also raised to the driver."""
        if self.closed:
            return
        self.stats.bytes_received += len(data)
        try:
            for payload in self._decoder.feed(data):
                self._receive_payload(payload)
                if self.closed:
                    return
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: RemoteProtocolError) -> None:
        if self.state is State.ERROR and self.error is not None:
            return
        self.error = exc
        self._outbox.clear()
        self._outbox_bytes = 0
        self._enqueue(Error.of(exc))
        self.state = State.ERROR
        self._drop_links()

    def _receive_payload(self, payload: bytes) -> None:
        self.stats.frames_received += 1
        if self._outbox_bytes > MAX_OUTBOX:
            # Every frame may ask for an answer; a peer that keeps asking without reading the
            # answers is refused rather than buffered for.
            raise ResourceLimitError("peer is not reading; outgoing queue over its limit")
        try:
            message = decode_message(payload)
            self._transition(Input(message.TYPE))
        except _Ignore:
            return
        handler = _HANDLERS[type(message)]
        handler(self, message)

    def close(self) -> None:
        """Close locally (connection gone). Idempotent."""
        if self.state in (State.AWAIT_HELLO, State.OPEN):
            self._transition(Input.CLOSE)
        self._drop_links()

    def _drop_links(self) -> None:
        for space, link in self.links.items():
            self._uncount(space, link)
        self.links.clear()

    # -- handlers -----------------------------------------------------------------------------

    def _on_hello(self, message: Hello) -> None:
        if self.expected_peer is not None and message.endpoint != self.expected_peer:
            raise AuthenticationError("Hello names an endpoint other than the authenticated peer")
        if message.endpoint == self.endpoint.endpoint_id:
            raise AuthenticationError("peer claims this endpoint's own id")
        if self.peer is not None and message.endpoint != self.peer:
            raise AuthenticationError("peer changed its endpoint id")
        self.peer = message.endpoint
        # Offers only grow while a connection lives; a late, stale Hello must not shrink them.
        # Only spaces this endpoint has matter (bounded by its own spaces, not by the peer).
        mine = self.endpoint.replicas
        offered = {sid for sid in message.spaces if sid in mine}
        if not offered <= set(self._peer_spaces):
            self._peer_spaces = tuple(sorted(set(self._peer_spaces) | offered))
        if not message.reply:
            self._send_hello(reply=True)
            self._update_links()
        else:
            # The peer's offer may let us offer more (a joiner offers what members offered it).
            self.refresh_spaces()
            self._update_links()

    def _update_links(self) -> None:
        common = set(self._offered) & set(self._peer_spaces)
        for space in sorted(common - set(self.links)):
            replica = self.endpoint.replicas.get(space)
            if replica is None:
                continue
            link = SpaceLink(replica=replica)
            self.links[space] = link
            self._request(space, link)

    def _request(self, space: bytes, link: SpaceLink) -> None:
        link.ticks_requested = 0
        link.recv = RecvState.REQUESTED
        if not link.counted:
            link.counted = True
            self.endpoint.catch_up_started(space)
        self._send(Revision(space=space, vector=vector_of(link.replica.accepted_vector())))

    def _uncount(self, space: bytes, link: SpaceLink) -> None:
        if link.counted:
            link.counted = False
            self.endpoint.catch_up_finished(space)

    def _link(self, space: bytes) -> SpaceLink | None:
        link = self.links.get(space)
        if link is None and not self.lossy:
            raise RemoteProtocolError(
                "message for a space this connection does not sync",
                code=ErrorCode.UNEXPECTED_MESSAGE,
            )
        return link

    def _on_revision(self, message: Revision) -> None:
        link = self._link(message.space)
        if link is None:
            return
        vector = dict(message.vector)
        _merge(link.acked, _members_only(link.replica, vector))
        self._start_stream(message.space, link, vector)

    def _on_deltas(self, message: Deltas) -> None:
        link = self._link(message.space)
        if link is None:
            return
        self.stats.deltas_received += len(message.wires)
        link.received += len(message.wires)
        # Patience measures silence, not the length of a catch-up that is still flowing.
        link.ticks_requested = 0
        link.incoming = frozenset(message.wires)
        try:
            result = self.endpoint.receive(link.replica, message.wires)
        finally:
            link.incoming = frozenset()
        for creator, seq in result.seen:
            if seq > link.known.get(creator, 0):
                link.known[creator] = seq
        link.received_since_ack = True
        for rejection in result.rejected:
            if not isinstance(rejection.error, _TOLERATED):
                raise rejection.error

    def _on_synced(self, message: Synced) -> None:
        link = self._link(message.space)
        if link is None:
            return
        _merge(link.acked, _members_only(link.replica, dict(message.vector)))
        link.recv = RecvState.SYNCED
        self._uncount(message.space, link)
        accepted = link.replica.accepted_vector()
        if self.lossy and any(accepted.get(c, 0) < s for c, s in message.vector):
            # Part of the stream was lost in transit: ask again from where we are.
            self._request(message.space, link)
        self._send(Ack(space=message.space, vector=vector_of(link.replica.vector)))
        link.received_since_ack = False

    def _on_ack(self, message: Ack) -> None:
        link = self._link(message.space)
        if link is None:
            return
        # Only creators that are members count: made-up ids must not grow what we keep.
        vector = _members_only(link.replica, dict(message.vector))
        _merge(link.acked, vector)
        _merge(link.known, vector)
        link.delivered = sum(link.acked.values())

    def _on_fetch(self, message: Fetch) -> None:
        link = self._link(message.space)
        if link is None:
            return
        if self._outbox_bytes > MAX_OUTBOX // 2:
            raise ResourceLimitError("peer keeps asking while not reading the answers")
        wires = link.replica.fetch(
            message.ranges, max_count=FETCH_ANSWER_MAX, max_bytes=FETCH_ANSWER_BYTES
        )
        # Frames are cut by count and by bytes, like live pushes: deltas of up to 64 KiB each
        # must never add up to a frame over the maximum.
        batch: list[bytes] = []
        size = 0
        for wire in wires:
            if batch and (len(batch) >= CHUNK_DELTAS or size + len(wire) > CHUNK_BYTES):
                self._send(Deltas(space=message.space, wires=tuple(batch)))
                batch, size = [], 0
            batch.append(wire)
            size += len(wire)
        if batch:
            self._send(Deltas(space=message.space, wires=tuple(batch)))

    def _on_error(self, message: Error) -> None:
        self.error = RemoteProtocolError(
            f"peer closed with error {message.code}: {message.message}"
        )
        self._drop_links()

    # -- periodic work ------------------------------------------------------------------------

    def tick(self) -> None:
        """Periodic duties: acks, retransmission (lossy links) and gap repair."""
        if self.closed:
            return
        self._ticks += 1
        if self.state is State.AWAIT_HELLO:
            self._ticks_awaiting += 1
            if self.lossy and self._ticks_awaiting % RETRANSMIT_TICKS == 0:
                self._send_hello(reply=False)
            return
        if (
            self.lossy
            and self._ticks % RETRANSMIT_TICKS == 0
            and set(self._offered) - set(self.links)
        ):
            self._send_hello(reply=False)
        for space, link in list(self.links.items()):
            if self.state is not State.OPEN:
                return
            replica = link.replica
            if link.recv is RecvState.REQUESTED:
                link.ticks_requested += 1
                if link.ticks_requested >= CATCH_UP_PATIENCE:
                    # Stop holding back merges for a peer that does not answer.
                    self._uncount(space, link)
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
            if link.received_since_ack or self._ticks % ACK_EVERY_TICKS == 0:
                link.received_since_ack = False
                self._send(Ack(space=space, vector=vector_of(replica.vector)))

    def send_fetch(self, space: bytes, ranges: Sequence[tuple[bytes, int, int]]) -> None:
        if space in self.links and ranges and self.state is State.OPEN:
            self._send(Fetch(space=space, ranges=tuple(ranges)))

    def peer_has(self, space: bytes, creator: bytes, seq: int) -> bool:
        link = self.links.get(space)
        return link is not None and link.acked.get(creator, 0) >= seq


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


_HANDLERS: dict[type, Callable[[Session, Any], None]] = {
    Hello: Session._on_hello,
    Revision: Session._on_revision,
    Deltas: Session._on_deltas,
    Synced: Session._on_synced,
    Ack: Session._on_ack,
    Fetch: Session._on_fetch,
    Error: Session._on_error,
}

__all__ = ["RecvState", "SendState", "Session", "SessionStats", "SpaceLink", "State"]
