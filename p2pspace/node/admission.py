"""Where an incoming connection is admitted: the accept loop, the inbound cap, strangers.

Theory of operation. Anyone who can reach the listening address can open a connection, and a
TLS handshake plus a key proof costs the peer one signature -- so what arrives is bounded, not
trusted. At most ``max_inbound`` *inbound slots* are held at once: a slot is taken for every
handshake under way and kept by an accepted connection until its peer proves a member (its
session syncs a space, or it is a member of one of ours); members' connections stop counting.
When every slot is taken, the oldest *stranger* -- an accepted connection sharing no space --
is closed to make room (the arrival may be a member); if every slot is a handshake under way,
the arrival is refused. A stranger that merely sits there is closed after ``stranger_grace``
seconds anyway (:meth:`Admission.close_idle_strangers`, run by the node's housekeeping).

Every refusal -- the cap, a failed handshake -- is counted in the node's ``refused`` and
announced as :class:`~p2pspace.node.events.ConnectionRefused` (handshake failures) so an
operator can see an attack; none of them disturbs an existing connection. They are logged once
per kind and address a minute (then counted), so a peer that keeps knocking cannot flood the log;
a handshake in a protocol version this release does not speak says so, naming both versions.
"""

from __future__ import annotations

import logging
import ssl

import trio

from p2pspace.errors import ErrorCode, P2PSpaceError, RemoteProtocolError
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.config import NodeConfig
from p2pspace.node.connections import Connections, PeerConnection
from p2pspace.node.events import ConnectionRefused
from p2pspace.node.network import Address, Network, StreamListener
from p2pspace.node.spaces import SpaceBook
from p2pspace.node.transport import JoinHandler, accept
from p2pspace.sync.endpoint import Endpoint

log = logging.getLogger("p2pspace.node")
ACCEPT_BACKOFF = 0.1  # after a failed accept (out of file descriptors): wait, do not spin


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
        self._handshaking = 0

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

    # -- the inbound cap ------------------------------------------------------------------------

    @property
    def inbound_slots_taken(self) -> int:
        """Handshakes under way plus accepted connections not yet proven a member's."""
        return self._handshaking + sum(1 for c in self._connections if c.inbound_slot)

    def _strangers(self) -> list[PeerConnection]:
        return [
            c
            for c in self._connections
            if c.inbound_slot and not c.session.linked_spaces() and not c.scope.cancel_called
        ]

    def evict_stranger(self) -> bool:
        """Close the oldest accepted connection that shares no space, to make room for an
        arrival. False if there is none (every slot is a handshake under way)."""
        strangers = self._strangers()
        if not strangers:
            return False
        oldest = min(strangers, key=lambda c: c.opened)
        oldest.error = "closed to make room: shares no space with this endpoint"
        oldest.scope.cancel()
        return True

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
        cap = self._config.max_inbound
        if self.inbound_slots_taken >= cap and not self.evict_stranger():
            # Past this many handshakes and strangers, arrivals are closed (members' connections
            # stop counting once they sync a space).
            self._connections.count_refusal()
            self._connections.log_limits.log(
                logging.WARNING,
                ("inbound cap",),
                "refused a connection: %d inbound strangers already",
                cap,
            )
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            return
        self._handshaking += 1
        try:
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
                ("handshake", address[0], kind),
                "refused a connection from %s: %s: %s%s",
                address[0],
                type(exc).__name__,
                exc,
                advice,
            )
            self._changes.announce(ConnectionRefused(error=f"{type(exc).__name__}: {exc}"))
            return
        finally:
            self._handshaking -= 1
        holder = self._connections.register(conn)
        if holder is None:
            await conn.aclose()
            return
        holder.inbound_slot = True  # the handshake's slot passes to the connection
        await self._connections.serve(holder)


__all__ = ["Admission"]
