"""What a session sends its peer: queued frames, catch-up streams, live pushes, fetch answers.

Theory of operation. Control frames and answers are queued whole, counted in bytes, so the
session can refuse a peer that keeps asking without reading (``MAX_OUTBOX``). Catch-up streams
are *not* queued: :meth:`Outbox.fill_streams` cuts the next chunk from the replica's log only
when the queue has room, so a slow reader makes us produce less instead of buffering more. A live
push that would overrun half the queue falls back to such a lazy stream from what the peer is
known to have. Every ``Deltas`` frame is cut by count and by bytes, so deltas of up to 64 KiB
each never add up to a frame over the maximum.

Fan-out (:func:`fan_out`): to a peer speaking protocol v3, only the deltas this endpoint created
are pushed -- nobody else can hold them yet -- and those that change the members; a delta
received from someone else most likely reached the peer from its creator too, so our next Ack
announces it and the peer fetches it only if it still lacks it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from p2pspace.core import membership
from p2pspace.core.delta import Delta
from p2pspace.sync.framing import MAX_FRAME, frame
from p2pspace.sync.messages import Deltas, Message, Synced, encode_message, vector_of
from p2pspace.sync.space_link import SendInput, SendState, SpaceLink

CHUNK_DELTAS = 1024
CHUNK_BYTES = 512 * 1024
MAX_LIVE_BUFFER = 20_000
FETCH_ANSWER_MAX = 2048
FETCH_ANSWER_BYTES = 2 * 1024 * 1024
MAX_OUTBOX = 2 * MAX_FRAME  # queued control and answer frames; catch-up is produced lazily


@dataclass(slots=True, kw_only=True)
class SessionStats:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    deltas_sent: int = 0
    deltas_received: int = 0


def fan_out(me: bytes, executed: Sequence[tuple[Delta, bytes]]) -> Sequence[tuple[Delta, bytes]]:
    """What of ``executed`` is pushed in full to a peer that fetches what our acks announce:
    the deltas ``me`` created; or all of them when one changes the members (a removed peer
    gets its removal before its link closes, a new member learns at once that it was added --
    and an unsigned one travels with the rest of its chain, as relays must send it)."""
    own = [(delta, wire) for delta, wire in executed if delta.creator == me]
    if len(own) == len(executed):
        return executed
    if any(c.engine == membership.INSTANCE for delta, _w in executed for c in delta.commands):
        return executed
    return own


class Outbox:
    """The frames queued for one peer and the deltas streamed or pushed to it."""

    def __init__(self, stats: SessionStats, *, max_frame: int = MAX_FRAME) -> None:
        self._stats = stats
        self._max_frame = max_frame
        self._frames: deque[bytes] = deque()
        self.bytes = 0  # queued, not yet taken

    def __bool__(self) -> bool:
        return bool(self._frames)

    def enqueue(self, message: Message) -> None:
        data = frame(encode_message(message), max_frame=self._max_frame)
        self._frames.append(data)
        self.bytes += len(data)
        self._stats.frames_sent += 1
        if isinstance(message, Deltas):
            self._stats.deltas_sent += len(message.wires)

    def clear(self) -> None:
        self._frames.clear()
        self.bytes = 0

    def take(self, max_bytes: int) -> bytes:
        """Whole queued frames, at most about ``max_bytes`` (at least one if any)."""
        out = bytearray()
        frames = self._frames
        while frames and (not out or len(out) + len(frames[0]) <= max_bytes):
            data = frames.popleft()
            self.bytes -= len(data)
            out += data
        self._stats.bytes_sent += len(out)
        return bytes(out)

    # -- deltas -------------------------------------------------------------------------------

    def deltas(self, space: bytes, wires: Sequence[bytes]) -> None:
        """Queue ``wires`` as Deltas frames cut by count and bytes."""
        batch: list[bytes] = []
        size = 0
        for wire in wires:
            if batch and (len(batch) >= CHUNK_DELTAS or size + len(wire) > CHUNK_BYTES):
                self.enqueue(Deltas(space=space, wires=tuple(batch)))
                batch, size = [], 0
            batch.append(wire)
            size += len(wire)
        if batch:
            self.enqueue(Deltas(space=space, wires=tuple(batch)))

    def start_stream(self, link: SpaceLink, vector: dict[bytes, int], why: SendInput) -> None:
        """Stream to the peer what ``vector`` lacks, lazily, from the replica's log (up to
        ``link.until`` for a removed peer)."""
        link.stream_filter = vector
        link.known = dict(vector)
        link.cursor = link.replica.catch_up_start(vector)
        link.stream_closures = link.replica.stats.closed
        link.buffered = []
        link.buffer_overflow = False
        link.feed_send(why)

    def fill_streams(self, links: dict[bytes, SpaceLink], budget: int) -> list[bytes]:
        """Cut catch-up chunks while the queue holds less than ``budget`` bytes. Returns the
        spaces whose farewell stream (to a removed peer) is complete: their links close."""
        budget = min(budget, MAX_OUTBOX // 2)
        done: list[bytes] = []
        for space, link in list(links.items()):
            while link.send is SendState.STREAMING and self.bytes < budget:
                self._stream_chunk(space, link)
            if link.farewell_sent:
                done.append(space)
        return done

    def _stream_chunk(self, space: bytes, link: SpaceLink) -> None:
        replica = link.replica
        wires: list[tuple[bytes, int, bytes]] = []
        if link.cursor is not None and link.stream_closures != replica.stats.closed:
            # A checkpoint closed a block meanwhile: deltas not sent yet may have moved into
            # it, before the cursor. Go on from what the peer has now.
            link.stream_filter = dict(link.known)
            link.cursor = replica.catch_up_start(link.stream_filter)
            link.stream_closures = replica.stats.closed
        if link.cursor is not None:
            wires, link.cursor = replica.catch_up_chunk(
                link.stream_filter,
                link.cursor,
                max_count=CHUNK_DELTAS,
                max_bytes=CHUNK_BYTES,
                until=link.until,
            )
        if wires:
            for creator, seq, _wire in wires:
                # Deltas in a stream are sent in log order, so per creator seqs only grow.
                if seq > link.known.get(creator, 0):
                    link.known[creator] = seq
            self.enqueue(Deltas(space=space, wires=tuple(w for _c, _s, w in wires)))
        if link.cursor is None:
            self.enqueue(Synced(space=space, vector=vector_of(replica.vector)))
            link.feed_send(SendInput.STREAM_DONE)
            if link.until is not None:
                link.farewell_sent = True  # the removed peer has its removal: the link closes
                return
            buffered, link.buffered = link.buffered, []
            if link.buffer_overflow:
                link.buffer_overflow = False
                self.start_stream(link, dict(link.known), SendInput.OVERFLOW)
            else:
                self.push(space, link, buffered)

    def push(self, space: bytes, link: SpaceLink, executed: Sequence[tuple[Delta, bytes]]) -> None:
        """Send the executed deltas the peer lacks (the link is live)."""
        batch: list[bytes] = []
        size = 0
        for delta, wire in executed:
            if delta.seq <= link.known.get(delta.creator, 0):
                continue  # the peer has it (it may be the one that sent it to us)
            if self.bytes > MAX_OUTBOX // 2:
                # A slow reader (or a huge batch): stop queueing and stream the rest lazily
                # from the store, from what the peer is known to have, as it reads.
                if batch:
                    self.enqueue(Deltas(space=space, wires=tuple(batch)))
                self.start_stream(link, dict(link.known), SendInput.OVERFLOW)
                return
            link.known[delta.creator] = delta.seq
            batch.append(wire)
            size += len(wire)
            if len(batch) >= CHUNK_DELTAS or size >= CHUNK_BYTES:
                self.enqueue(Deltas(space=space, wires=tuple(batch)))
                batch, size = [], 0
        if batch:
            self.enqueue(Deltas(space=space, wires=tuple(batch)))

    def buffer_or_push(
        self, space: bytes, link: SpaceLink, executed: Sequence[tuple[Delta, bytes]]
    ) -> None:
        """Push now if the link is live; hold for after the stream while it catches up (too
        many held: stream again from what the peer is known to have, after this stream)."""
        if link.send is SendState.LIVE:
            self.push(space, link, executed)
        elif link.send is SendState.STREAMING:
            if len(link.buffered) + len(executed) > MAX_LIVE_BUFFER:
                link.buffered = []
                link.buffer_overflow = True
            elif not link.buffer_overflow:
                link.buffered.extend(executed)

    def answer_fetch(
        self, space: bytes, link: SpaceLink, ranges: Sequence[tuple[bytes, int, int]]
    ) -> None:
        self.deltas(
            space,
            link.replica.fetch(ranges, max_count=FETCH_ANSWER_MAX, max_bytes=FETCH_ANSWER_BYTES),
        )


__all__ = ["MAX_OUTBOX", "Outbox", "SessionStats", "fan_out"]
