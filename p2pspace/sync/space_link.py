"""The sync state of one space with one peer: what we send it, what we receive from it.

Theory of operation. A :class:`~p2pspace.sync.session.Session` keeps one :class:`SpaceLink` per
space it syncs with its peer. A link runs two small machines, each a table:

* **send** (what we send the peer): ``idle`` until the peer's ``Revision`` arrives, then
  ``catching up`` while we stream exactly the deltas its vector lacks, then ``live`` (each
  delta we execute is pushed). A fresh ``Revision`` restarts the stream; a live push that
  would overrun the outgoing queue falls back to a lazy stream (``overflow``).
* **recv** (what we receive): ``requested`` from the moment our ``Revision`` is out until the
  peer's ``Synced``; ``stalled`` when the peer stays silent past the session's patience, or
  its frames bring nothing we accept for as long (merges stop being held back for it);
  ``synced`` afterwards. A new request (gap repair, a lossy link's retransmission) goes back to
  ``requested``; a gap repair never holds merges back.

Besides the machines a link remembers what keeps a refusal from turning into a loop: the first
seq of each creator we refused from this peer (gap repair and fetches do not ask for it again:
its verdict would not change), the creators seen equivocating on it, and which divergences it
already answered (:mod:`p2pspace.sync.divergence`).

What the peer says it holds (its ``Revision``, ``Ack`` and ``Synced`` vectors) is a *claim*. A
link keeps two views of it: :attr:`SpaceLink.claims`, as said (members' entries only), which
only asks for work -- fetches of what it announces and we lack (:meth:`SpaceLink.ahead`), then,
while our vector makes no progress towards it, a gap repair, tried at most
:data:`MAX_LAG_TRIES` times with growing waits, each asking without holding our merges back --
and :attr:`SpaceLink.acked`, each entry cut, when heard, to what we can tell existed then: our
accepted vector, and for the peer's own deltas the highest seq we saw offered
(:func:`plausible`). Only the second says what the peer holds -- "delivered to", fetch
planning -- so a peer claiming everything is believed for nothing that does not exist, and a
delta created later is not counted as delivered on an old claim.

An input a table does not allow is our bug (:class:`~p2pspace.errors.LocalProtocolError`): the
session only feeds inputs its handlers have already checked against the peer's messages.

:class:`LinkView` is the read-only snapshot other layers get (the node's sync states and
"delivered to" counts, the endpoint's fetch planning) -- nobody outside the session reads or
writes a link directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from p2pspace.core.delta import Delta, OrderKey
from p2pspace.core.replica import Replica
from p2pspace.errors import LocalProtocolError

MAX_REMEMBERED = 1024  # refused creators and answered divergences a link keeps, each
RETRANSMIT_TICKS = 3  # a lossy link repeats its Revision this often; gap repair waits as long
CATCH_UP_PATIENCE = 40  # ticks without stream activity, or progress, before merges stop waiting
# However it trickles, one request holds merges back at most this long (a catch-up of a
# million deltas streams in well under it; staging is an optimisation, never needed for order).
MAX_HOLD_TICKS = 600
MAX_LAG_TRIES = 4  # gap repairs for claims that stay ahead of us (each waits twice as long)
MAX_PROOF_ASKS = 4  # requests for a peer's proofs after refusing what it relayed (see below)
# An unchanged vector is acknowledged again this often (a lost Ack on a lossy link, a peer that
# missed our announcement); a changed one at the next tick an ack is due.
ACK_IDLE_TICKS = 20


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
    acked: Mapping[bytes, int]  # what the peer said it executed, cut to what existed then
    received: int  # deltas received on this link
    # What the peer says it holds, as said (members' entries only) while gap repair still
    # believes it; once the repairs it asked for came back empty, no more than ``acked``.
    claims: Mapping[bytes, int] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Both directions caught up."""
        return self.recv is RecvState.SYNCED and self.send is SendState.LIVE

    @property
    def peer_total(self) -> int:
        """How many deltas the peer says it has (the sum of its claims; for progress shown to
        a user, never for a decision)."""
        return sum(self.claims.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Duties:
    """What a link's tick asks its session to send."""

    revision: bool = False  # our Revision again (a lossy link may have lost it)
    request: bool = False  # a fresh request: the peer has deltas we lack (gap repair)
    ack: bool = False


@dataclass(slots=True, kw_only=True)
class SpaceLink:
    """Sync state of one space with one peer (owned by its session)."""

    replica: Replica
    send: SendState = SendState.IDLE
    recv: RecvState = RecvState.REQUESTED
    known: dict[bytes, int] = field(default_factory=dict)  # what we believe the peer has
    acked: dict[bytes, int] = field(default_factory=dict)  # claims cut to what existed then
    claims: dict[bytes, int] = field(default_factory=dict)  # what the peer says, as said
    stream_filter: dict[bytes, int] = field(default_factory=dict)
    cursor: OrderKey | None = None
    stream_closures: int = 0  # blocks the replica had closed when the stream's cursor was set
    buffered: list[tuple[Delta, bytes]] = field(default_factory=list)
    buffer_overflow: bool = False
    ticks_requested: int = 0
    lag_ticks: int = 0
    lag_tries: int = 0  # gap repairs asked since the claims last stopped running ahead
    fresh: int = 0  # deltas from this peer new to us since the last tick
    idle_ticks: int = 0  # ticks of a requested stream in which this peer brought nothing new
    hold_ticks: int = 0  # ticks since the request that is awaited
    repairing: bool = False  # the request under way is a repair: merges do not wait for it
    received_since_ack: bool = False
    received: int = 0
    refused: dict[bytes, int] = field(default_factory=dict)  # creator -> first refused seq
    equivocators: set[bytes] = field(default_factory=set)
    answered: set[tuple[bytes, int, bytes]] = field(default_factory=set)  # (creator, seq, hash)
    # (vector, the evidence digest, the heads digest of both)
    digest: tuple[tuple[tuple[bytes, int], ...], bytes, bytes] = ((), b"", b"")
    mismatch: tuple[tuple[tuple[bytes, int], ...], bytes] = ((), b"")  # last one acted on
    until: OrderKey | None = None  # a removed peer's streams end at the delta removing it
    farewell_sent: bool = False  # ... and once one has, the link closes
    # Creators whose claimed seq ran ahead of our accepted one when heard (pruned as we catch
    # up): what :meth:`ahead` looks at, instead of every claim on every tick.
    claimed_ahead: dict[bytes, int] = field(default_factory=dict)
    last_ack: dict[bytes, int] = field(default_factory=dict)  # the vector of our last Ack
    snapshot_offer: bytes | None = None  # the manifest of the snapshot we are fetching
    declined: set[bytes] = field(default_factory=set)  # manifest hashes the peer refused
    ack_idle: int = 0  # ticks since our last Ack
    # Asking the peer for its proofs of equivocation (:meth:`refused_relay`).
    proofs_wanted: bool = False
    proof_asks: int = 0
    proof_wait: int = 0
    progress: int = 0  # our accepted seqs of the claimed-ahead creators, summed, last tick

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
        if event is RecvInput.REQUEST:
            self.idle_ticks = 0
            self.hold_ticks = 0
        elif event is RecvInput.SYNCED:
            self.repairing = False

    def hear(self, vector: Mapping[bytes, int], peer: bytes | None) -> None:
        """The peer (``peer``, if known) claims to hold ``vector`` (members' entries only)."""
        merge_vector(self.claims, vector)
        merge_vector(self.acked, plausible(self.replica, vector, peer))
        buffer = self.replica.buffer
        for creator, seq in vector.items():
            if seq > buffer.accepted_seq(creator):
                self.claimed_ahead[creator] = max(seq, self.claimed_ahead.get(creator, 0))

    def ahead(self, me: bytes, span: int) -> list[tuple[bytes, int, int]]:
        """``(creator, first, last)`` ranges the peer claims and we have not accepted (not
        ``me``'s, at most ``span`` deltas each, short of what it sent that we refused)."""
        buffer = self.replica.buffer
        ranges: list[tuple[bytes, int, int]] = []
        for creator, seq in list(self.claimed_ahead.items()):
            have = buffer.accepted_seq(creator)
            if seq <= have:
                del self.claimed_ahead[creator]
            elif creator != me and self.expects(creator, have, seq):
                ranges.append((creator, have + 1, min(seq, have + span)))
        return ranges

    def acked_sent(self, vector: Sequence[tuple[bytes, int]]) -> None:
        """Our Ack of ``vector`` went out."""
        self.last_ack = dict(vector)
        self.ack_idle = 0

    def repair(self) -> None:
        """The next request is a repair (a claim ran ahead, a digest differs): the stream it
        asks for is not waited for before merging."""
        self.repairing = True

    @property
    def gave_up(self) -> bool:
        """True once every gap repair the claims may ask for was tried."""
        return self.lag_tries >= MAX_LAG_TRIES

    def tick(self, *, lossy: bool, ack_due: bool, idle_acks: int = ACK_IDLE_TICKS) -> Duties:
        """One tick of the link: stop holding merges back for a peer whose stream is silent
        or brings nothing new, and say what to send (an Ack after received deltas; when an ack
        is due and we executed deltas the peer is not known to hold -- that Ack is how it hears
        of the deltas we relay; or after ``idle_acks`` ticks without one)."""
        # Progress is what *this* peer brought that was new to us: another peer's deltas, or
        # duplicates trickled by this one, say nothing about its stream.
        grew, self.fresh = self.fresh > 0, 0
        retransmit = False
        if self.recv is not RecvState.SYNCED:
            self.ticks_requested += 1
            self.hold_ticks += 1
            self.idle_ticks = 0 if grew else self.idle_ticks + 1
            silent = max(self.ticks_requested, self.idle_ticks)
            if self.recv is RecvState.REQUESTED and (
                silent >= CATCH_UP_PATIENCE or self.hold_ticks >= MAX_HOLD_TICKS
            ):
                # Stop holding back merges for a peer that does not answer, whose frames
                # (duplicates, say) bring nothing new, or whose stream never ends.
                self.feed_recv(RecvInput.SILENT)
            retransmit = lossy and self.ticks_requested % RETRANSMIT_TICKS == 0
        request = False
        # Deltas the peer claims arriving from anyone (the fetches its announcement asked
        # for, a stream) are the answer so far: no repair while they keep coming.
        accepted = self.replica.buffer.accepted_seq
        progress = sum(accepted(c) for c in self.claimed_ahead)
        advanced, self.progress = progress > self.progress, progress
        if not self.claimed_ahead or not any(
            self.expects(c, accepted(c), s) for c, s in self.claims.items()
        ):
            self.lag_ticks = 0
            self.lag_tries = 0
        elif (self.recv is not RecvState.SYNCED and grew) or advanced:
            self.lag_ticks = 0  # a stream is bringing what the peer claims: the answer so far
        elif not self.gave_up:
            # The peer says it holds deltas we lack: ask again, waiting twice as long after
            # each try that did not bring them -- one still unanswered counts too -- and give
            # up after MAX_LAG_TRIES (a claim nobody backs with deltas is not worth more).
            self.lag_ticks += 1
            if self.lag_ticks >= RETRANSMIT_TICKS << self.lag_tries:
                self.lag_ticks = 0
                self.lag_tries += 1
                if self.recv is RecvState.SYNCED:
                    self.repair()
                    request = True
        if self.proof_wait:
            self.proof_wait -= 1
        if self.proofs_wanted:
            self.proofs_wanted = False
            self.proof_asks += 1
            self.proof_wait = RETRANSMIT_TICKS << self.proof_asks
            self.repair()
            request = True
        self.ack_idle += 1
        # An announcement the peer needs: we executed something it is not known to hold.
        executed = self.replica.vector
        if self.replica.limits.announce_relays:
            changed = ack_due and executed != self.last_ack and self._tells_news(executed)
        else:  # deltas are relayed in full: acks keep their pace (the digests compare copies)
            changed = ack_due
        ack = self.received_since_ack or changed or self.ack_idle >= idle_acks
        self.received_since_ack = False
        return Duties(revision=retransmit, request=request, ack=ack)

    def _tells_news(self, executed: Mapping[bytes, int]) -> bool:
        known = self.known
        return any(seq > known.get(creator, 0) for creator, seq in executed.items())

    def refuse(self, creator: bytes, seq: int) -> None:
        """The peer sent ``creator:seq`` and we refused it for good (its creator broke a rule):
        do not ask this peer for it again."""
        known = self.refused.get(creator)
        if known is None and len(self.refused) >= MAX_REMEMBERED:
            return
        if known is None or seq < known:
            self.refused[creator] = seq

    def refused_relay(self) -> None:
        """We refused for good a delta the peer relayed, which it therefore accepted: it may
        hold a proof of equivocation we lack (a forked creator's later deltas are void there
        and judged on membership alone, but refused here by role). A Revision is answered
        with the peer's proofs, so ask for one at the next tick -- at most
        :data:`MAX_PROOF_ASKS` times a link, waiting twice as long after each (a proof lost
        on the way is asked for again; a peer relaying forbidden deltas gets a few requests,
        not one each)."""
        if self.proof_wait == 0 and self.proof_asks < MAX_PROOF_ASKS:
            self.proofs_wanted = True

    def refused_from(self, creator: bytes) -> int | None:
        """The first seq of ``creator`` this peer sent that we refused for good, or None. A
        refusal is forgotten once the creator is known to have equivocated at or before it:
        its deltas from the fork on are judged on membership alone (void), so the verdict may
        have changed."""
        seq = self.refused.get(creator)
        if seq is not None and self.replica.forked(creator, seq):
            del self.refused[creator]
            return None
        return seq

    def expects(self, creator: bytes, have: int, offered: int) -> bool:
        """True if the peer, which has ``creator`` up to ``offered``, can bring us deltas of it
        beyond ``have`` that we would accept (not only ones we refused)."""
        stop = self.refused_from(creator) if self.refused else None
        return min(offered, offered + 1 if stop is None else stop - 1) > have

    def fetchable(self, ranges: Sequence[tuple[bytes, int, int]]) -> list[tuple[bytes, int, int]]:
        """``(creator, first, last)`` ranges cut short of any delta this peer sent that we
        refused for good (asking for it again would only bring the same refusal)."""
        wanted: list[tuple[bytes, int, int]] = []
        for creator, first, last in ranges:
            stop = self.refused_from(creator) if self.refused else None
            if stop is not None and stop <= last:
                last = stop - 1
            if first <= last:
                wanted.append((creator, first, last))
        return wanted

    def remember_answer(self, creator: bytes, seq: int, digest: bytes) -> bool:
        """True the first time this divergence is answered on this link."""
        key = (creator, seq, digest)
        if key in self.answered or len(self.answered) >= MAX_REMEMBERED:
            return False
        self.answered.add(key)
        return True

    @property
    def holds_merges(self) -> bool:
        """True while our request is answered by a stream we still wait for: received deltas
        that would reorder executed ones are staged until it ends. A repair -- asked for on
        the peer's word, which we cannot check -- holds nothing back."""
        return self.recv is RecvState.REQUESTED and not self.repairing

    def view(self, space: bytes) -> LinkView:
        return LinkView(
            space=space,
            send=self.send,
            recv=self.recv,
            acked=dict(self.acked),
            received=self.received,
            claims=dict(self.acked if self.gave_up else self.claims),
        )


def sendable(
    replica: Replica, peer: bytes, executed: Sequence[tuple[Delta, bytes]]
) -> Sequence[tuple[Delta, bytes]]:
    """What of ``executed`` ``peer`` may get: all of it unless the peer is a removed member;
    once removed, only up to the delta that removed it (so that it learns of its removal)."""
    member = replica.members().get(peer)
    if member is None or member.current:
        return executed
    for index, (delta, _wire) in enumerate(executed):
        if (delta.creator, delta.seq) == member.removed_by:
            return executed[: index + 1]
    return ()


def farewell_at(replica: Replica, peer: bytes) -> OrderKey | None:
    """The order key of the delta that removed ``peer`` (a removed member), or None: what a
    removed peer that has not learnt of it yet is streamed, and where the stream stops."""
    member = replica.members().get(peer)
    if member is None or member.removed_by is None:
        return None
    creator, seq = member.removed_by
    # The key it holds now: in a closed block, its block is not 0.
    return replica.store.key_of(replica.space_id, creator, seq)


def plausible(
    replica: Replica, vector: Mapping[bytes, int], peer: bytes | None
) -> dict[bytes, int]:
    """``vector`` (a peer's claim) cut to what we can tell exists: per creator our accepted
    seq; for ``peer``'s own deltas, the highest seq of them we saw offered (it may have made
    more, but nothing shows it)."""
    buffer = replica.buffer
    out: dict[bytes, int] = {}
    for creator, seq in vector.items():
        limit = buffer.seen_seq(creator) if creator == peer else buffer.accepted_seq(creator)
        if min(seq, limit) > 0:
            out[creator] = min(seq, limit)
    return out


def members_only(replica: Replica, vector: Mapping[bytes, int]) -> dict[bytes, int]:
    """What a peer says it has, for creators we know (members, or members once): made-up ids
    in a vector must not grow what a session keeps."""
    return {c: s for c, s in vector.items() if replica.knows_creator(c)}


def merge_vector(into: dict[bytes, int], other: Mapping[bytes, int]) -> None:
    """Grow ``into`` to cover ``other``."""
    for key, value in other.items():
        if value > into.get(key, 0):
            into[key] = value


__all__ = [
    "CATCH_UP_PATIENCE",
    "farewell_at",
    "RECV_TRANSITIONS",
    "RETRANSMIT_TICKS",
    "SEND_TRANSITIONS",
    "Duties",
    "LinkView",
    "RecvInput",
    "RecvState",
    "SendInput",
    "SendState",
    "SpaceLink",
    "ACK_IDLE_TICKS",
    "MAX_LAG_TRIES",
    "members_only",
    "merge_vector",
    "plausible",
    "sendable",
]


def under_attack(replica: Replica) -> bool:
    """True once this replica of the space has refused a delta or holds a proof that a member
    equivocated. Such a space goes back to relaying every delta in full (protocol v2's flood):
    a peer that refused a copy before it met the proof fetches nothing it refused, and only
    copies offered again let it accept what the proof now allows (DESIGN §8)."""
    return replica.stats.rejected > 0 or bool(replica.equivocators())
