"""One live connection per peer pair, and the two tasks that move its bytes.

Theory of operation. An authenticated :class:`~p2pspace.node.transport.Connection` is
*registered* (:meth:`Connections.register`) before anything awaits, so no second dial can slip
in between. When a second authenticated connection to the same peer appears, both ends keep the
one dialled by the endpoint with the smaller id (or, if the same side dialled both, the newer
one): simultaneous dials resolve the same way on both ends without a word exchanged
(:meth:`Connections.prefer`). The losing connection winds down on its own.

Per connection there is one reader task (bytes into the sans-IO session through
``endpoint.receive_data``) and one writer task (bytes the session produces, written with the
stream's backpressure: the session makes catch-up chunks lazily, so a slow reader makes it
produce less instead of queueing more). Any change -- a local delta, received deltas, a tick --
*kicks* every writer (:meth:`Connections.kick`). A frame must be complete within
``stall_timeout`` of its first byte, whether the peer then sends nothing or trickles a byte at a
time; a stalled connection is dropped and counted as refused, as is one whose peer broke the
protocol (after the session's Error frame went out, within a second).

Until its peer *proves* a member -- its session syncs a space, or it is a member of one of ours
or sponsors a join of ours -- a connection is a stranger's and costs little: its session refuses
frames over ``stranger_frame`` (the handshake's 64 KiB at most; a longer length prefix closes it
at once, counted as refused) and it is read :data:`STRANGER_READ` bytes at a time, so what a
stranger makes the node hold is bounded by about the two together.

Whatever goes wrong on one connection -- a protocol error, a store failure while streaming, a
bug -- ends that connection, logged, never the node. A delta refused without blaming the peer
(its creator broke a rule of the space) ends nothing: the session reports it and it is logged,
like every line a peer can make us repeat, through one :class:`~p2pspace.node.log_limits
.LogLimiter` (once per peer and kind of error a minute, then a count). Lines name a member by its
name in a space we share (:class:`PeerName`); a stranger's lines are counted by its address, so
a stranger with ever new keys makes no more lines than one. A connection that synced a
space but shares none any more -- the peer was removed, or this endpoint was -- is closed, once
what was queued for it (the delta that removed it) went out and a short grace passed. The
session is read only through its query methods (links, linked spaces, stats, closed, mid_frame,
error, version gap, refusals).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

import trio

from p2pspace.core.identity import short_id
from p2pspace.errors import ErrorCode, RemoteProtocolError, StorageError
from p2pspace.node import strangers
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.config import NodeConfig
from p2pspace.node.events import PeerConnected, PeerDisconnected
from p2pspace.node.log_limits import LogLimiter
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import SpaceBook
from p2pspace.node.transport import Connection
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.session import Session

log = logging.getLogger("p2pspace.node")
ERROR_FLUSH_SECONDS = 1.0  # how long the Error frame of a refused peer may take to go out
# How long a connection that shares no space any more stays open: the peer first hears of its
# removal (the delta that removed it is the last thing it gets) and closes on its side.
UNSHARED_GRACE = 2.0
STRANGER_READ = 4 * 1024  # bytes asked of a stranger's stream per read


class PeerName:
    """How log lines name a peer: ``name (SHORT-ID)`` with its name in a space we share, else
    ``SHORT-ID at HOST`` (``host`` None: the line gives the address itself). Worked out when a
    line is written, not when it is only counted."""

    __slots__ = ("_endpoint", "_host", "_peer")

    def __init__(self, endpoint: Endpoint, peer: bytes, host: str | None) -> None:
        self._endpoint = endpoint
        self._peer = peer
        self._host = host

    def __str__(self) -> str:
        for replica in self._endpoint.replicas.values():
            member = replica.members().get(self._peer)
            if member is not None and member.name:
                return f"{member.name} ({short_id(self._peer)})"
        where = "" if self._host is None else f" at {self._host}"
        return f"{short_id(self._peer)}{where}"


@dataclass(slots=True, kw_only=True, eq=False)
class PeerConnection:
    """A live, authenticated connection and the session running on it."""

    conn: Connection
    session: Session
    scope: trio.CancelScope
    opened: float  # trio.current_time() when registered
    wake: trio.Event = field(default_factory=trio.Event)
    error: str = ""
    replaced: bool = False
    writer_done: trio.Event = field(default_factory=trio.Event)
    spaces: set[bytes] = field(default_factory=set)  # spaces this connection has synced
    # The peer proved a member (see the module docstring): full frames, full reads.
    proven: bool = False
    dropped: bool = False  # closed by us for misbehaving (a protocol error, a stall, a bug)
    ended: float | None = None  # trio.current_time() when it ended
    unshared_since: float | None = None  # when it was first seen sharing no space any more

    @property
    def peer(self) -> bytes:
        return self.conn.peer

    @property
    def log_key(self) -> bytes | str:
        """Whom its log lines are counted under: the peer once proven, else its address."""
        return self.peer if self.proven else strangers.address_of(self.conn.address[0])

    @property
    def failed(self) -> bool:
        """True if one side refused the other: we dropped it, or the peer closed it with an
        Error frame (a protocol or version error of ours, in its eyes)."""
        return self.dropped or self.session.error is not None

    def refused_within(self, seconds: float) -> bool:
        """True if it ended failed within ``seconds`` of opening: dialling again at once would
        most likely be refused again."""
        return self.ended is not None and self.failed and self.ended - self.opened < seconds


class Connections:
    """The node's live connections, by peer."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        config: NodeConfig,
        changes: ChangeFeed,
        peer_states: PeerStates,
        spaces: SpaceBook,
    ) -> None:
        self.by_peer: dict[bytes, PeerConnection] = {}
        self.refused = 0  # connections refused or dropped for misbehaving
        # Every line a peer can make us repeat goes through here (admission and dialer too).
        self.log_limits = LogLimiter(log, now=trio.current_time)
        self._endpoint = endpoint
        self._config = config
        self._changes = changes
        self._peer_states = peer_states
        self._spaces = spaces

    def __iter__(self) -> Iterator[PeerConnection]:
        return iter(list(self.by_peer.values()))

    def count_refusal(self) -> None:
        self.refused += 1

    def kick(self) -> None:
        """Wake every writer: the sessions may have bytes to send."""
        for peer in self.by_peer.values():
            peer.wake.set()

    # -- one connection per pair ----------------------------------------------------------------

    def prefer(self, new: Connection, old: Connection) -> bool:
        """True if ``new`` should replace ``old`` (the same answer on both ends)."""
        me, peer = self._endpoint.endpoint_id, new.peer
        preferred = min(me, peer)
        new_dialer = me if new.dialed else peer
        old_dialer = me if old.dialed else peer
        if new_dialer != old_dialer:
            return new_dialer == preferred
        return True  # same dialer: the newer connection replaces a stale one

    def register(self, conn: Connection) -> PeerConnection | None:
        """Make ``conn`` the peer's connection, or return None if the existing one is preferred
        (the caller closes ``conn``). Synchronous, so no dial can slip in between."""
        existing = self.by_peer.get(conn.peer)
        if existing is not None:
            if not self.prefer(conn, existing.conn):
                log.debug("dropping duplicate connection to %s", short_id(conn.peer))
                return None
            # The old connection winds down on its own; its session and ours may overlap
            # briefly, which the protocol tolerates (deltas already known are not resent).
            existing.replaced = True
            existing.scope.cancel()
        session = self._endpoint.open_session(expected_peer=conn.peer)
        peer = PeerConnection(
            conn=conn,
            session=session,
            scope=trio.CancelScope(),
            opened=trio.current_time(),
            proven=self._spaces.wants(conn.peer),
        )
        if not peer.proven:
            session.limit_frames(self._config.stranger_frame)
        self.by_peer[conn.peer] = peer
        self.log_line(
            peer,
            logging.INFO if peer.proven else logging.DEBUG,
            "connected",
            "connected to %s at %s:%d (%s)",
            self.name(peer, with_address=False),
            conn.address[0],
            conn.address[1],
            "dialled" if conn.dialed else "accepted",
        )
        self._changes.announce(PeerConnected(peer=conn.peer))
        return peer

    def name(self, peer: PeerConnection, *, with_address: bool = True) -> PeerName:
        """How log lines name ``peer``'s end (``with_address``: a stranger's host too)."""
        return PeerName(self._endpoint, peer.peer, peer.conn.address[0] if with_address else None)

    def log_line(
        self,
        peer: PeerConnection,
        level: int,
        reason: Hashable,
        message: str,
        *args: object,
        count: int = 1,
    ) -> None:
        """Log a line about ``peer`` at most once a minute per peer (its address while it is a
        stranger) and ``reason``, then a count. Strangers' lines and members' are kinds apart,
        so strangers cannot crowd a member's line out."""
        self.log_limits.log(
            level,
            (peer.log_key, reason),
            message,
            *args,
            count=count,
            kind=(reason, peer.proven),
        )

    async def run(self, conn: Connection) -> PeerConnection | None:
        """Register ``conn`` and run the protocol on it until it ends; returns it, ended (None
        if an existing connection to the peer was preferred). Never raises P2PSpaceError (a
        failure ends the connection and is logged)."""
        peer = self.register(conn)
        if peer is None:
            await conn.aclose()
            return None
        await self.serve(peer)
        return peer

    async def serve(self, peer: PeerConnection) -> None:
        """Run the protocol on a registered connection until it ends, then tear it down."""
        conn = peer.conn
        try:
            with peer.scope:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reader, peer, nursery.cancel_scope)
                        nursery.start_soon(self._writer, peer, nursery.cancel_scope)
                except Exception as exc:
                    log.exception("connection to %s failed", self.name(peer))
                    peer.error = peer.error or f"internal error: {type(exc).__name__}: {exc}"
                    peer.dropped = True
                    self.refused += 1
        finally:
            self._ended(peer)
            await conn.aclose()

    def _ended(self, peer: PeerConnection) -> None:
        conn, session = peer.conn, peer.session
        peer.ended = trio.current_time()
        self.report_refusals(peer)
        error = peer.error or (str(session.error) if session.error else "")
        self._endpoint.close_session(session)
        if self.by_peer.get(conn.peer) is peer:
            del self.by_peer[conn.peer]
        who = self.name(peer)
        if peer.replaced:
            line = "connection to %s replaced by a newer one"
            self.log_line(peer, logging.INFO, "replaced", line, who)
            self._changes.announce()
            return
        closing = set(self._spaces.shared_with(conn.peer)) | peer.spaces
        self._peer_states.connection_ended(
            closing, conn.peer, error=error, failed=session.error is not None
        )
        gap = session.version_gap
        if gap is not None:
            self.log_line(peer, logging.WARNING, "version", "peer %s %s", who, gap.describe())
        elif session.error is not None and session.error.code is ErrorCode.UNSUPPORTED_VERSION:
            self.log_line(
                peer,
                logging.WARNING,
                "version",
                "peer %s cannot sync with this release (%s): one of you must upgrade p2pspace",
                who,
                session.error,
            )
        elif error:
            kind = type(session.error).__name__ if session.error is not None else "closed"
            # A stranger that merely went away is no news; one that broke the protocol is.
            level = logging.WARNING if peer.proven or peer.failed else logging.DEBUG
            self.log_line(peer, level, ("closed", kind), "connection to %s closed: %s", who, error)
        else:
            level = logging.INFO if peer.proven else logging.DEBUG
            self.log_line(peer, level, "closed", "connection to %s closed", who)
        self._changes.announce(PeerDisconnected(peer=conn.peer, error=error))

    def report_refusals(self, peer: PeerConnection) -> None:
        """Log what the peer's session refused without blaming it, once per kind a minute."""
        who = self.name(peer)
        for refusal in peer.session.take_refusals():
            what = (
                "a delta"
                if refusal.delta_id is None
                else (f"delta {short_id(refusal.delta_id.creator)}:{refusal.delta_id.seq}")
            )
            self.log_line(
                peer,
                logging.WARNING,
                ("refused", type(refusal.error).__name__),
                "refused %s of space %s from %s: %s: %s",
                what,
                refusal.space.hex()[:8],
                who,
                type(refusal.error).__name__,
                refusal.error,
                count=refusal.count,
            )

    # -- observing sessions ---------------------------------------------------------------------

    def observe(self, peer: PeerConnection) -> None:
        """Bring the peer's sync states up to what its session shows; close the connection if
        it synced a space but shares none any more."""
        links = peer.session.links()
        for link in links:
            peer.spaces.add(link.space)
        self._peer_states.observe(peer.peer, links)
        if not peer.proven and (links or self._spaces.wants(peer.peer)):
            # A member: full frames from now on, and no longer counted among the strangers.
            peer.proven = True
            peer.session.limit_frames(None)
        if not peer.spaces or links or self._spaces.wants(peer.peer):
            peer.unshared_since = None
            return
        now = trio.current_time()
        if peer.unshared_since is None:
            peer.unshared_since = now
            return
        flushed = not peer.session.queued_bytes and not peer.scope.cancel_called
        if flushed and now - peer.unshared_since >= UNSHARED_GRACE:
            self.log_line(
                peer,
                logging.INFO,
                "unshared",
                "closing the connection to %s: no space shared any more",
                self.name(peer),
            )
            peer.scope.cancel()

    def observe_all(self) -> None:
        for peer in self:
            self.observe(peer)
        self.log_limits.flush()

    # -- the two tasks --------------------------------------------------------------------------

    async def _reader(self, peer: PeerConnection, done: trio.CancelScope) -> None:
        session, stream = peer.session, peer.conn.stream
        stall = self._config.stall_timeout
        frame_deadline = math.inf
        try:
            while not session.closed:
                read_size = (
                    self._config.read_size
                    if peer.proven
                    else min(self._config.read_size, STRANGER_READ)
                )
                if session.mid_frame:
                    # A frame must be complete within stall_timeout of its first byte: a peer
                    # trickling a byte at a time is as stuck as one sending nothing.
                    if frame_deadline == math.inf:
                        frame_deadline = trio.current_time() + stall
                    with trio.move_on_at(frame_deadline) as waited:
                        data = await stream.receive_some(read_size)
                    if waited.cancelled_caught:
                        peer.error = f"peer stalled mid-frame for {stall:g} s"
                        peer.dropped = True
                        self.refused += 1
                        break
                else:
                    frame_deadline = math.inf
                    data = await stream.receive_some(read_size)
                if not data:
                    break
                frames_before = session.stats.frames_received
                try:
                    self._endpoint.receive_data(session, bytes(data))
                except RemoteProtocolError as exc:
                    peer.error = f"{type(exc).__name__}: {exc}"
                    peer.dropped = True
                    self.refused += 1
                    # The session queued an Error frame: let the writer send it (it stops once
                    # the session has nothing left), then close -- bounded, should the peer not
                    # read.
                    peer.wake.set()
                    with trio.move_on_after(ERROR_FLUSH_SECONDS):
                        await peer.writer_done.wait()
                    break
                except StorageError as exc:
                    peer.error = f"store failed: {exc}"
                    for space in session.linked_spaces():
                        self._spaces.failed(space, str(exc))
                    break
                if session.stats.frames_received != frames_before:
                    frame_deadline = math.inf  # progress: the next partial frame gets a fresh one
                self.report_refusals(peer)
                self.observe(peer)
                self.kick()
                self._changes.announce()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            peer.error = peer.error or f"connection broke: {exc}"
        except trio.TooSlowError:
            pass
        finally:
            done.cancel()

    async def _writer(self, peer: PeerConnection, done: trio.CancelScope) -> None:
        session, stream = peer.session, peer.conn.stream
        try:
            while True:
                peer.wake = trio.Event()
                data = session.data_to_send()
                if data:
                    await stream.send_all(data)
                    self._changes.announce()
                    continue
                if session.closed:
                    self._changes.announce()
                    break
                await peer.wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            peer.error = peer.error or f"connection broke: {exc}"
        finally:
            peer.writer_done.set()
            done.cancel()


__all__ = ["STRANGER_READ", "Connections", "PeerConnection", "PeerName"]
