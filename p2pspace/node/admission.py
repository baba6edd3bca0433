"""Where an incoming connection is admitted: the accept loop, the caps on strangers.

Theory of operation. Anyone who can reach the listening address can open a connection, and a
TLS handshake plus a key proof costs the peer one signature -- so what arrives is bounded, not
trusted. Every arrival is booked in a :class:`~p2pspace.node.strangers.StrangerBook` and stays
there, *unproven*, through its handshake and for as long as its accepted connection has not
proven a member (its session syncs a space, or it is a member of one of ours): per address at
most ``handshake_rate`` handshakes begin a second (``handshake_burst`` at once; beyond, the
socket is closed before TLS starts), and at most ``max_inbound`` unproven connections are held,
``max_inbound_per_address`` of them from one address. An arrival over a cap takes the place of
the unproven connection idle the longest (OpenSSH's ``MaxStartups`` idea, dropping the idlest
rather than the newest): idle sockets go first, a handshake that moves goes last, so members and
joiners get in while strangers knock by the thousand. Activity is what the stream delivers: the
raw stream is watched (:class:`WatchedStream`), which also reads it in small pieces until the
peer is proven. A stranger that merely sits there is closed after ``stranger_grace`` seconds
anyway (:meth:`Admission.close_idle_strangers`, run by the node's housekeeping).

Every refusal -- the handshake rate, a failed handshake -- is counted in the node's ``refused``;
handshake failures are also announced as :class:`~p2pspace.node.events.ConnectionRefused` so an
operator can see an attack; none of them disturbs an existing connection, and dropping an idle
stranger to make room is housekeeping, not a refusal. Lines are logged once per reason and
address a minute (then counted), so a peer that keeps knocking cannot flood the log; a handshake
in a protocol version this release does not speak says so, naming both versions.
"""

from __future__ import annotations

import logging
import ssl

import trio

from p2pspace.core.identity import short_id
from p2pspace.errors import ErrorCode, P2PSpaceError, RemoteProtocolError
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.config import NodeConfig
from p2pspace.node.connections import STRANGER_READ, Connections, PeerConnection
from p2pspace.node.events import ConnectionRefused
from p2pspace.node.network import Address, Network, StreamListener
from p2pspace.node.spaces import SpaceBook
from p2pspace.node.strangers import StrangerBook, Unproven, address_of
from p2pspace.node.transport import Connection, JoinHandler, accept
from p2pspace.sync.endpoint import Endpoint

log = logging.getLogger("p2pspace.node")
ACCEPT_BACKOFF = 0.1  # after a failed accept (out of file descriptors): wait, do not spin
MAKE_ROOM = "closed to make room: shares no space with this endpoint"


class WatchedStream(trio.abc.Stream):
    """An accepted stream that tells its :class:`~p2pspace.node.strangers.Unproven` entry when
    bytes arrive, and hands them out :data:`~p2pspace.node.connections.STRANGER_READ` at a time
    until its connection is proven (TLS reads below the session; the session's reads are bounded
    by :class:`~p2pspace.node.connections.Connections`)."""

    def __init__(self, stream: trio.abc.Stream, entry: Unproven) -> None:
        self.stream = stream
        self.entry = entry
        self.holder: PeerConnection | None = None  # set once the handshake is done

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.holder is None or not self.holder.proven:
            max_bytes = STRANGER_READ if max_bytes is None else min(max_bytes, STRANGER_READ)
        data = await self.stream.receive_some(max_bytes)
        if data:
            self.entry.active = trio.current_time()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class Admission:
    """The node's listeners and the rules for what they let in."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        config: NodeConfig,
        network: Network,
        context: ssl.SSLContext,
        connections: Connections,
        spaces: SpaceBook,
        changes: ChangeFeed,
        on_join: JoinHandler,
    ) -> None:
        self.addresses: list[Address] = []  # where the node listens, ports resolved
        self._endpoint = endpoint
        self._config = config
        self._network = network
        self._context = context
        self._connections = connections
        self._spaces = spaces
        self._changes = changes
        self._on_join = on_join
        self.strangers = StrangerBook(
            max_total=config.max_inbound,
            max_per_address=min(config.max_inbound_per_address, config.max_inbound),
            rate=config.handshake_rate,
            burst=config.handshake_burst,
        )
        self._handshakes: dict[Unproven, trio.CancelScope] = {}
        self._accepted: dict[Unproven, PeerConnection] = {}  # unproven, past the handshake

    async def listen(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` and admit connections until cancelled. Raises
        :class:`~p2pspace.errors.TransportError` (before ``started``) if it cannot listen."""
        listeners = await self._network.open_listeners(host, port)
        self.addresses += [listener.address for listener in listeners]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: StreamListener, nursery: trio.Nursery) -> None:
        try:
            while True:
                try:
                    stream, address = await listener.accept()
                except OSError as exc:
                    log.error("accept failed: %s", exc)
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                nursery.start_soon(self._admit, stream, address)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    # -- the caps on strangers ------------------------------------------------------------------

    @property
    def unproven(self) -> int:
        """Handshakes under way plus accepted connections not yet proven a member's."""
        self._settle()
        return len(self.strangers)

    def _settle(self) -> None:
        """Strike off the book the accepted connections proven since (their peers are members)."""
        for entry, holder in list(self._accepted.items()):
            if holder.proven:
                del self._accepted[entry]
                self.strangers.leave(entry)

    def _make_room(self, entry: Unproven, cap: str) -> None:
        """Close ``entry``'s connection: an arrival over ``cap`` takes its place."""
        holder = self._accepted.pop(entry, None)
        scope = self._handshakes.get(entry)
        if holder is not None:
            holder.error = MAKE_ROOM
            holder.scope.cancel()
            what = f"stranger {short_id(holder.peer)}"
        elif scope is not None:
            scope.cancel()
            what = "a handshake"
        else:
            return  # closing already
        book = self.strangers
        held, where = (
            (book.max_per_address, "from that address")
            if cap == "address"
            else (book.max_total, "in all")
        )
        self._connections.log_limits.log(
            logging.WARNING,
            (entry.address, "make room"),
            "made room: closed %s from %s, the idlest of %d unauthenticated connections %s",
            what,
            entry.address,
            held,
            where,
            kind=("make room", cap),
        )

    def close_idle_strangers(self) -> None:
        """Close accepted connections that shared no space for ``stranger_grace`` seconds."""
        now = trio.current_time()
        for connection in self._connections:
            if connection.conn.dialed or now - connection.opened <= self._config.stranger_grace:
                continue
            if not connection.session.linked_spaces() and not self._spaces.wants(connection.peer):
                connection.error = "shares no space with this endpoint"
                connection.scope.cancel()

    # -- one arrival ----------------------------------------------------------------------------

    async def _admit(self, stream: trio.abc.Stream, address: Address) -> None:
        self._settle()
        arrival = self.strangers.arrive(address[0], trio.current_time())
        entry = arrival.admitted
        if entry is None:
            self._connections.count_refusal()
            where = address_of(address[0])
            self._connections.log_limits.log(
                logging.WARNING,
                (where, "rate"),
                "refused connections from %s: more than %g handshakes a second (%d at once)",
                where,
                self._config.handshake_rate,
                self._config.handshake_burst,
                kind="rate",
            )
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            return
        if arrival.dropped is not None:
            self._make_room(arrival.dropped, arrival.cap)
        watched = WatchedStream(stream, entry)
        try:
            conn = await self._handshake(watched, entry, address)
            if conn is None:
                return
            holder = self._connections.register(conn)
            if holder is None:
                await conn.aclose()
                return
            watched.holder = holder
            if not holder.proven:
                self._accepted[entry] = holder
            else:
                self.strangers.leave(entry)
            await self._connections.serve(holder)
        finally:
            self._accepted.pop(entry, None)
            self.strangers.leave(entry)

    async def _handshake(
        self, stream: WatchedStream, entry: Unproven, address: Address
    ) -> Connection | None:
        """The handshake on an arrival, or None if it failed (logged, counted) or its place was
        given to a later arrival."""
        scope = self._handshakes[entry] = trio.CancelScope()
        conn: Connection | None = None
        try:
            with scope:
                conn = await accept(
                    stream,
                    address=address,
                    identity=self._endpoint.identity,
                    context=self._context,
                    on_join=self._on_join,
                )
        except P2PSpaceError as exc:
            self._connections.count_refusal()
            kind = type(exc).__name__
            if isinstance(exc, RemoteProtocolError) and exc.code is ErrorCode.UNSUPPORTED_VERSION:
                kind, advice = "version", ": one of you must upgrade p2pspace"
            else:
                advice = ""
            self._connections.log_limits.log(
                logging.WARNING,
                (entry.address, "handshake", kind),
                "refused a connection from %s: %s: %s%s",
                address[0],
                type(exc).__name__,
                exc,
                advice,
                kind=("handshake", kind),
            )
            self._changes.announce(ConnectionRefused(error=f"{type(exc).__name__}: {exc}"))
        finally:
            del self._handshakes[entry]
        return conn


__all__ = ["MAKE_ROOM", "Admission", "WatchedStream"]
