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
3. Live: each delta the endpoint *created* is pushed to every peer whose known vector lacks it
   (nobody else can have it yet). A delta it received from someone else is pushed on only to a
   peer that speaks protocol v1-v2; a v3 peer is told of it by our next ``Ack`` instead (the
   announcement), and fetches what it still lacks (:meth:`Session.claimed_ahead`), so that in a
   mesh each delta reaches each peer once while relaying still covers peers that are not
   directly connected. Deltas that change the members are pushed on in full to every peer (a
   removed peer must get its removal before its link closes).
4. ``Ack`` carries the executed vector after received batches and, on ticks, whenever it grew
   since the last one (and every :data:`ACK_IDLE_TICKS` regardless); a peer whose acks show
   deltas we lack is fetched from, and, when that brings nothing for a while, gets a fresh
   ``Revision`` (repairing anything lost in transit).
5. ``Fetch`` asks for deltas that pending deltas wait for, or that a peer announced; the answer
   is ``Deltas``.

Connection states and the inputs each accepts are one table (:data:`TRANSITIONS`); an input the
table does not allow is a :class:`~p2pspace.errors.RemoteProtocolError`, answered by an
``Error`` frame, and the session moves to ``ERROR``. A session created with ``lossy=True`` (the
simulator's datagram links, which drop, duplicate and reorder frames) ignores such out-of-order
inputs instead, and retransmits ``Hello`` and ``Revision`` on ticks until answered. Each space's
link runs its own send and receive tables (:mod:`p2pspace.sync.space_link`).

A session fails only on what proves the *peer* misbehaved; an authentic delta that breaks a rule
of the space is refused without closing anything (:mod:`p2pspace.sync.refusals`). The Hellos say
which versions each side speaks: releases with none in common close with ``UNSUPPORTED_VERSION``
(:attr:`Session.version_gap`); on protocol v2 the revision exchange compares content, not only
counts (:mod:`p2pspace.sync.divergence`). A peer removed from a space gets the delta that
removed it and nothing after it, and the link closes; the space is linked again only if the peer
becomes a member again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from p2pspace.core.delta import Delta
from p2pspace.core.replica import ReceiveResult
from p2pspace.errors import (
    AuthenticationError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
)
from p2pspace.sync import divergence, snapshot_link
from p2pspace.sync.framing import MAX_FRAME, FrameDecoder
from p2pspace.sync.messages import (
    MAX_RANGES,
    OURS,
    Ack,
    Deltas,
    Error,
    Fetch,
    Hello,
    Message,
    MessageType,
    Revision,
    Snapshot,
    Synced,
    VersionGap,
    Versions,
    common_protocol,
    decode_message,
    payload_version_gap,
    vector_of,
    version_gap,
)
from p2pspace.sync.offers import Offers
from p2pspace.sync.outbox import (
    CHUNK_BYTES,
    FETCH_ANSWER_MAX,
    MAX_OUTBOX,
    Outbox,
    SessionStats,
    fan_out,
)
from p2pspace.sync.refusals import Refusal, RefusalLog
from p2pspace.sync.session_events import (
    CatchUpEnded,
    DeltasReceived,
    Event,
    SessionHost,
    SnapshotReceived,
)
from p2pspace.sync.space_link import (
    ACK_IDLE_TICKS,
    RETRANSMIT_TICKS,
    LinkView,
    RecvInput,
    RecvState,
    SendInput,
    SendState,
    SpaceLink,
    farewell_at,
    members_only,
    merge_vector,
    sendable,
    under_attack,
)

ACK_EVERY_TICKS = 2
ANNOUNCING = 3  # the protocol version from which relayed deltas are announced, not pushed
FETCH_SPAN = FETCH_ANSWER_MAX  # deltas of one creator asked for at once on a peer's claim


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
    SNAPSHOT = MessageType.SNAPSHOT
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
    (State.OPEN, Input.SNAPSHOT): State.OPEN,
    (State.OPEN, Input.ERROR): State.CLOSED,
    (State.OPEN, Input.CLOSE): State.CLOSED,
    (State.OPEN, Input.PROTOCOL_ERROR): State.ERROR,
    (State.ERROR, Input.FLUSHED): State.CLOSED,
}


class Session:
    """The sync protocol with one peer. See the module docstring."""

    def __init__(
        self,
        host: SessionHost,
        *,
        expected_peer: bytes | None = None,
        lossy: bool = False,
        max_frame: int = MAX_FRAME,
        versions: Versions = OURS,
    ) -> None:
        """``versions``: what this side announces and speaks (another release's, in tests)."""
        self.host = host
        self.expected_peer = expected_peer
        # With an authenticated transport the peer is known before its Hello arrives.
        self.peer: bytes | None = expected_peer
        self.lossy = lossy
        self.state = State.AWAIT_HELLO
        self.error: RemoteProtocolError | None = None
        # What the peer's Hello announced, the protocol version both use, and -- when the
        # session failed because the two releases cannot sync -- which versions do not meet.
        self.versions = versions
        self.peer_versions: Versions | None = None
        self.protocol = versions.protocol_low
        self.version_gap: VersionGap | None = None
        self.stats = SessionStats()
        self._links: dict[bytes, SpaceLink] = {}
        self._unlinked: set[bytes] = set()  # spaces whose link closed: late messages are ignored
        self._farewells: set[bytes] = set()  # spaces a removed peer got its removal of
        self.refusals = RefusalLog()
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._outbox = Outbox(self.stats, max_frame=max_frame)
        self._offers = Offers()
        self._waiting: Event | None = None  # returned, not yet answered
        self._ack_every = ACK_EVERY_TICKS
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

    def limit_frames(self, max_frame: int | None) -> None:
        """Refuse frames from the peer longer than ``max_frame`` bytes (a stranger's cap: a
        longer length prefix fails the session before any of the frame is buffered) until the
        peer syncs a space here, which lifts it before the next frame; None lifts it now."""
        limit = self._max_frame if max_frame is None else min(max_frame, self._max_frame)
        self._decoder.max_frame = limit

    # -- queries ------------------------------------------------------------------------------

    def linked_spaces(self) -> tuple[bytes, ...]:
        """The spaces this connection syncs (both sides offered them)."""
        return tuple(self._links)

    @property
    def has_output(self) -> bool:
        """True if :meth:`data_to_send` may return bytes now (frames queued, a catch-up
        stream to cut, a failed session's Error frame); cheap, for drivers polling many."""
        if self.state is State.CLOSED:
            return False
        if self._outbox or self.state is State.ERROR:
            return True
        return any(link.send is SendState.STREAMING for link in self._links.values())

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
        """True if the peer held ``creator:seq`` when it last said what it holds (the verified
        claims: what we knew existed then)."""
        link = self._links.get(space)
        return link is not None and link.acked.get(creator, 0) >= seq

    def stream_brings(self, space: bytes, creator: bytes, seq: int) -> bool:
        """True if a catch-up stream from the peer is under way for ``space`` and, by what the
        peer said it holds, will bring ``creator:seq``: fetching it too would get it twice. Only
        defers a fetch while the stream is awaited (the catch-up patience ends that), so an
        untrue claim holds nothing back for long."""
        link = self._links.get(space)
        return link is not None and link.holds_merges and link.claims.get(creator, 0) >= seq

    def holds_merges(self, space: bytes) -> bool:
        """True while a catch-up stream we requested for ``space`` is still expected."""
        link = self._links.get(space)
        return link is not None and link.holds_merges

    def claims_hold(self, space: bytes, creator: bytes, seq: int) -> bool:
        """True if the peer says it holds ``creator:seq`` and gap repair still believes it
        (what fetches for announced deltas go to)."""
        link = self._links.get(space)
        return link is not None and not link.gave_up and link.claims.get(creator, 0) >= seq

    def claimed_ahead(self, space: bytes) -> list[tuple[bytes, int, int]]:
        """``(creator, first, last)``: deltas the peer says it holds (announced by its acks)
        that we have not accepted, at most :data:`FETCH_SPAN` per creator -- what the endpoint
        fetches, from one peer each. Empty once the peer's claims went unbacked for every gap
        repair (a hostile peer claiming everything is asked a bounded number of times), and
        for this endpoint's own deltas (recovering those is the replica's business)."""
        link = self._links.get(space)
        if link is None or self.state is not State.OPEN or link.gave_up:
            return []
        return link.ahead(self.host.endpoint_id, FETCH_SPAN)

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
        hello = Hello(
            endpoint=self.host.endpoint_id, spaces=offers.ours, reply=reply, versions=self.versions
        )
        self._send(hello)

    def data_to_send(self, max_bytes: int = CHUNK_BYTES * 2) -> bytes:
        """Bytes for the peer, at most about ``max_bytes`` (whole frames). Empty when idle."""
        if self.state is State.CLOSED:
            return b""
        if self.state is State.OPEN:
            for space in self._outbox.fill_streams(self._links, max_bytes):
                # A removed peer got everything up to its removal: nothing more of the space.
                del self._links[space]
                self._unlinked.add(space)
                self._farewells.add(space)
                self.refresh_spaces()
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

    def push(self, space: bytes, executed: Sequence[tuple[Delta, bytes]]) -> bool:
        """Deltas the endpoint executed in ``space`` (created here or received from anyone):
        send those the peer lacks, now or after its catch-up stream -- on protocol v3 only
        those created here or changing the members (the rest are announced by our acks). A
        peer removed from the space gets the delta that removed it, and nothing executed after
        it. True if that may have queued frames."""
        link = self._links.get(space)
        if link is None or self.state is not State.OPEN:
            return False
        if (
            self.protocol >= ANNOUNCING
            and link.replica.limits.announce_relays
            and not under_attack(link.replica)
        ):
            executed = fan_out(self.host.endpoint_id, executed)
        if self.peer is not None and executed:
            executed = sendable(link.replica, self.peer, executed)
        if not executed:
            return False
        self._outbox.buffer_or_push(space, link, executed)
        return True

    def send_evidence(self, space: bytes, wires: Sequence[bytes]) -> None:
        """Both copies of an equivocation (or a delta proving one): sent even if the peer
        holds that id, so that every member meets the other copy and records the evidence."""
        if space in self._links and wires and self.state is State.OPEN:
            self._send(Deltas(space=space, wires=tuple(wires)))

    def ask_offers(self) -> None:
        """Ask the peer to name again the spaces it syncs with us (after we started holding
        a space it may have offered before we had it: a join it sponsors)."""
        if self.state is State.OPEN and self.peer is not None:
            self._send_hello(reply=False)

    def forget_offers(self, spaces: Iterable[bytes]) -> None:
        """Forget that the peer offered ``spaces`` (this endpoint was removed from them: what
        was offered before is stale; a sponsor offers them again on a re-admission)."""
        self._offers.forget(spaces)

    def refresh_spaces(self) -> None:
        """Follow the spaces we would sync with this peer: offer again if they grew; close the
        links of those it lost (the peer, or this endpoint, is no longer a member there),
        sending nothing more of them."""
        if self.peer is None or self.closed:
            return
        peer = self.peer
        wanted = self.host.spaces_for(peer, self._offers.theirs)
        # A removed peer that got its removal on this connection -- pushed while linked, or
        # by a farewell stream -- is offered the space no more (unless it is re-admitted).
        told = {s for s, link in self._links.items() if link.until is None}
        told |= self._farewells
        told = {s for s in told if s in self.host.replicas and self._removed_peer(s)}
        lost, grew = self._offers.follow([s for s in wanted if s not in told])
        for space in sorted(lost):
            if self._links.pop(space, None) is not None:
                self._unlinked.add(space)
                if space in told:
                    self._farewells.add(space)
        if grew:
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
        self._send_ack(event.space, link)
        link.received_since_ack = False

    def deltas_applied(self, event: DeltasReceived, result: ReceiveResult) -> None:
        """The endpoint applied ``event``'s deltas with ``result``. Raises the first rejection
        that proves the peer sent something invalid (``blames_sender``; the session has then
        failed, with an Error frame queued); other rejections are kept for
        :meth:`take_refusals`. Asks for older copies when the batch showed a divergence that may
        start before it (:func:`~p2pspace.sync.divergence.walk_back`)."""
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
        fresh = len(result.seen) - result.duplicates - len(result.rejected)
        if fresh > 0:
            # Patience measures silence, not the length of a catch-up still bringing deltas:
            # only deltas new to us count (a trickle of duplicates is silence).
            link.fresh += fresh
            link.ticks_requested = 0
        blamed = self.refusals.judge(event.space, link, result)
        if blamed is not None:
            self._fail(blamed)
            raise blamed
        earlier = divergence.walk_back(result.seen, result.rejected)
        if earlier:
            self.send_fetch(event.space, earlier)

    def take_refusals(self) -> list[Refusal]:
        """Refusals since the last call, one per (space, kind), for the driver to report."""
        return self.refusals.take()

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
        except RemoteProtocolError as exc:
            if exc.code is ErrorCode.UNSUPPORTED_VERSION:
                self.version_gap = payload_version_gap(payload)
            raise
        try:
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
        gap = version_gap(message.versions, self.versions)
        if gap is not None:
            self.version_gap = gap
            raise gap.error()
        self.peer_versions = message.versions
        self.protocol = common_protocol(message.versions, self.versions)
        self.peer = message.endpoint
        self._offers.hear(message.spaces, self.host.replicas)
        if not message.reply:
            self._send_hello(reply=True)
            self._update_links()
        else:
            # The peer's offer may let us offer more (a joiner offers what members offered it).
            self.refresh_spaces()
            self._update_links()

    def _update_links(self) -> None:
        for space in sorted(self._offers.common() - set(self._links)):
            replica = self.host.replicas.get(space)
            if replica is None:
                continue
            if space in self._farewells:
                if self._removed_peer(space):
                    continue  # it was sent its removal on this connection already
                self._farewells.discard(space)  # re-admitted since
            link = SpaceLink(replica=replica)
            if self.peer is not None:
                link.until = farewell_at(replica, self.peer)
            self._links[space] = link
            self._decoder.max_frame = self._max_frame  # a member's frames: see limit_frames
            self._unlinked.discard(space)
            self._request(space, link)

    def _removed_peer(self, space: bytes) -> bool:
        """True if the peer is a removed member of ``space`` (it may not know yet)."""
        replica = self.host.replicas.get(space)
        return (
            self.peer is not None
            and replica is not None
            and (farewell_at(replica, self.peer) is not None)
        )

    def _request(self, space: bytes, link: SpaceLink) -> None:
        link.ticks_requested = 0
        link.feed_recv(RecvInput.REQUEST)
        self._send_revision(space, link)

    def _send_revision(self, space: bytes, link: SpaceLink) -> None:
        accepted = link.replica.accepted_vector()
        heads = divergence.revision_heads(link.replica, accepted) if self.protocol >= 2 else ()
        self._send(Revision(space=space, vector=vector_of(accepted), heads=heads))
        if self.protocol >= 2:
            # The proofs of equivocation we hold: the peer must hold the same ones.
            self.send_evidence(space, link.replica.evidence_wires())

    def _send_ack(self, space: bytes, link: SpaceLink) -> None:
        vector = vector_of(link.replica.vector)
        digest = self.host.ack_digests.digest(space, link, vector) if self.protocol >= 2 else b""
        self._send(Ack(space=space, vector=vector, digest=digest))
        link.acked_sent(vector)

    def _link_for(self, space: bytes) -> SpaceLink | None:
        link = self._links.get(space)
        if link is None and space in self._unlinked:
            return None  # sent before the peer learnt that the link closed
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
        link.hear(members_only(link.replica, vector), self.peer)
        if self.peer is not None:
            link.until = farewell_at(link.replica, self.peer)
        offer = snapshot_link.offer(link, vector, self.protocol)
        if offer is not None:
            # The snapshot instead of the closed history; the stream is then empty, and the
            # peer asks again (for the open window) once the snapshot is in.
            self._send(offer)
            self._outbox.start_stream(link, dict(link.replica.vector), SendInput.REVISION)
        else:
            stream_from = snapshot_link.held_part(link, vector)
            self._outbox.start_stream(link, stream_from, SendInput.REVISION)
        if self.protocol >= 2:
            # Our proofs of equivocation go to whoever asks too, not only to those we ask:
            # deltas are no longer relayed (v3), so the proofs must not wait for our request.
            self.send_evidence(message.space, link.replica.evidence_wires())
        if message.heads:
            # Our copies go out before the stream: what it brings may chain to them.
            ranges = divergence.answer(link, vector, message.heads, again=self.lossy)
            if ranges:
                self._outbox.answer_fetch(message.space, link, ranges)

    def _on_deltas(self, message: Deltas) -> DeltasReceived | None:
        link = self._link_for(message.space)
        if link is None:
            return None
        self.stats.deltas_received += len(message.wires)
        link.received += len(message.wires)
        return DeltasReceived(space=message.space, replica=link.replica, wires=message.wires)

    def _on_synced(self, message: Synced) -> CatchUpEnded | None:
        link = self._link_for(message.space)
        if link is None:
            return None
        link.hear(members_only(link.replica, dict(message.vector)), self.peer)
        link.feed_recv(RecvInput.SYNCED)
        return CatchUpEnded(space=message.space, vector=message.vector)

    def _on_ack(self, message: Ack) -> None:
        link = self._link_for(message.space)
        if link is None:
            return
        # Only creators that are members count: made-up ids must not grow what we keep. What
        # it claims beyond what exists asks for a repair at most, never counts as held.
        vector = members_only(link.replica, dict(message.vector))
        link.hear(vector, self.peer)
        merge_vector(link.known, vector)
        if self.protocol >= 2:
            self.host.ack_digests.prime(message.space, link, vector_of(link.replica.vector))
        if self.protocol >= 2 and divergence.asks_revision(link, message):
            link.repair()
            self._request(message.space, link)

    def _on_fetch(self, message: Fetch) -> None:
        link = self._link_for(message.space)
        if link is None:
            return
        if self._outbox.bytes > MAX_OUTBOX // 2:
            raise ResourceLimitError("peer keeps asking while not reading the answers")
        self._outbox.answer_fetch(message.space, link, message.ranges)
        compacted = link.replica.compacted()
        if any(first <= compacted.get(c, 0) for c, first, _last in message.ranges):
            # Asked for deltas compacted here: the snapshot instead, if it can take one.
            offer = snapshot_link.offer(link, dict(link.claims), self.protocol)
            if offer is not None:
                self._send(offer)

    def _on_snapshot(self, message: Snapshot) -> SnapshotReceived | None:
        link = self._link_for(message.space)
        if link is None:
            return None
        answer = snapshot_link.on_message(link, message)
        if isinstance(answer, Snapshot):
            self._send(answer)
            return None
        return answer

    def snapshot_done(self, event: SnapshotReceived, error: Exception | None = None) -> None:
        """The endpoint installed the snapshot of ``event`` (or it failed with ``error``: the
        peer is told, and streams the deltas instead); either way we ask again."""
        if self._waiting is not event:
            raise LocalProtocolError("snapshot_done answers the SnapshotReceived event")
        self._waiting = None
        link = self._links.get(event.space)
        if link is None or self.state is not State.OPEN:
            return
        if error is not None:
            self._send(snapshot_link.decline(link, event.manifest))
        self._request(event.space, link)

    def _on_error(self, message: Error) -> None:
        self.error = RemoteProtocolError(
            f"peer closed with error {message.code}: {message.message}",
            code=message.error_code(),
        )
        self._links.clear()

    # -- periodic work ------------------------------------------------------------------------

    def tick(self, *, ack_every: int = ACK_EVERY_TICKS) -> None:
        """Periodic duties: acks, retransmission (lossy links) and gap repair. A grown vector
        is acknowledged (announced) every ``ack_every`` ticks."""
        if self.closed:
            return
        self._ack_every = max(1, ack_every)
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
        ack_due = self._offers.ticks % self._ack_every == 0
        # Idle acks thin out as announcements do (a big mesh): a tenth as often.
        idle = max(ACK_IDLE_TICKS, 10 * self._ack_every)
        duties = link.tick(lossy=self.lossy, ack_due=ack_due, idle_acks=idle)
        if duties.revision:
            self._send_revision(space, link)
        if duties.request:
            self._request(space, link)
        if duties.ack:
            self._send_ack(space, link)

    def send_fetch(self, space: bytes, ranges: Sequence[tuple[bytes, int, int]]) -> None:
        """Ask the peer for ``(creator, first, last)`` ranges, short of any delta it sent that
        we refused (it would only be refused again)."""
        link = self._links.get(space)
        if link is None or self.state is not State.OPEN:
            return
        wanted = link.fetchable(ranges)
        if wanted:
            self._send(Fetch(space=space, ranges=tuple(wanted[:MAX_RANGES])))


class _Ignore(Exception):
    """Internal: an out-of-order input on a lossy link, dropped."""


_HANDLERS: dict[type, Callable[[Session, Any], Event | None]] = {
    Hello: Session._on_hello,
    Revision: Session._on_revision,
    Deltas: Session._on_deltas,
    Synced: Session._on_synced,
    Ack: Session._on_ack,
    Fetch: Session._on_fetch,
    Snapshot: Session._on_snapshot,
    Error: Session._on_error,
}

__all__ = [
    "CatchUpEnded",
    "DeltasReceived",
    "Event",
    "LinkView",
    "RecvState",
    "Refusal",
    "SendState",
    "Session",
    "SessionHost",
    "SessionStats",
    "State",
]
