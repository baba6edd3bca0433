"""How a node reaches the network: listeners and outgoing streams, TCP unless told otherwise.

Theory of operation. The listener and the dialler never open sockets themselves; they ask a
:class:`Network` for listeners on ``host:port`` and for a stream to ``host:port``. TLS and the
handshake (:mod:`p2pspace.node.transport`) then run over whatever byte stream comes back, so
another network -- :class:`p2pspace.testing.MemoryNetwork`, in-process and driven by trio's
virtual clock -- runs the node's own logic unchanged. :class:`TcpNetwork` is the real one: trio
TCP with keepalives tuned so a dead peer is noticed within seconds rather than hours.

Errors are typed at this boundary: opening listeners or connecting raises
:class:`~p2pspace.errors.TransportError`; :meth:`StreamListener.accept` raises :class:`OSError`
for a transient failure (out of file descriptors) that the accept loop backs off from.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from p2pspace.errors import TransportError

Address = tuple[str, int]


class StreamListener(Protocol):
    """Accepts incoming streams at one address."""

    @property
    def address(self) -> Address:
        """Where it listens (a port asked as 0 is the one chosen)."""
        ...

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        """The next incoming stream and the address it came from. OSError: try again later."""
        ...

    async def aclose(self) -> None: ...


class Network(Protocol):
    """Where streams come from."""

    async def open_listeners(self, host: str, port: int) -> Sequence[StreamListener]:
        """Listeners on ``host:port`` (port 0: any free one). TransportError if it is taken."""
        ...

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to ``host:port``. TransportError if it cannot be opened."""
        ...


def tune(stream: trio.SocketStream) -> None:
    """Notice dead peers within seconds rather than hours."""
    sock = stream.socket
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            stream.setsockopt(socket.IPPROTO_TCP, option, value)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        stream.setsockopt(socket.IPPROTO_TCP, user_timeout, 20_000)


@dataclass(slots=True, eq=False)
class TcpListener:
    """A trio TCP listener handing out tuned streams."""

    listener: trio.SocketListener

    @property
    def address(self) -> Address:
        sockname = self.listener.socket.getsockname()
        return str(sockname[0]), int(sockname[1])

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        tcp = await self.listener.accept()
        try:
            peername = tcp.socket.getpeername()
            address = (str(peername[0]), int(peername[1]))
        except OSError:
            address = ("?", 0)
        # A peer that reset at once fails its TLS handshake next, which reports it.
        with contextlib.suppress(OSError):
            tune(tcp)
        return tcp, address

    async def aclose(self) -> None:
        await self.listener.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpNetwork:
    """The real network (the default)."""

    async def open_listeners(self, host: str, port: int) -> Sequence[StreamListener]:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return [TcpListener(listener) for listener in listeners]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        tcp: trio.SocketStream | None = None
        try:
            tcp = await trio.open_tcp_stream(host, port)
            tune(tcp)
        except OSError as exc:
            if tcp is not None:
                await trio.aclose_forcefully(tcp)
            raise TransportError(f"{host}:{port}: {exc.strerror or exc}") from None
        return tcp


TCP = TcpNetwork()

__all__ = ["TCP", "Address", "Network", "StreamListener", "TcpListener", "TcpNetwork", "tune"]
