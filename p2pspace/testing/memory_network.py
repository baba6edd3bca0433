"""An in-process network for nodes: listeners, streams with backpressure, refusals, partitions.

Theory of operation. A :class:`MemoryNetwork` is a fabric of named hosts (``"10.0.0.1"``...).
Each node gets the :class:`MemoryHost` of its address, which implements the node's
:class:`~p2pspace.node.network.Network` interface: listeners at ``host:port`` and streams to
``host:port``. A stream is a pair of bounded one-way pipes, so a writer that outpaces its reader
blocks as it would on TCP; TLS and the node's handshake run over it unchanged
(:class:`trio.SSLStream` works on any stream). Nothing here reads a clock or sleeps: under trio's
``MockClock(autojump_threshold=0)`` a whole network of nodes runs in virtual time, and a test of
a 10-second backoff takes milliseconds.

A test shapes the network:

* :meth:`MemoryNetwork.refuse` an address: connecting to it fails at once ("connection
  refused"), as if nothing listened there; :meth:`MemoryNetwork.allow` undoes it.
* :meth:`MemoryNetwork.cut` two hosts apart: bytes between them stop moving (they wait in the
  pipes, as TCP retransmits during a partition) and a new connection between them hangs until
  the caller's timeout; :meth:`MemoryNetwork.heal` lets everything through again.

Every connection attempt is recorded (:attr:`MemoryNetwork.attempts`: when, from where, to
where, and what happened), so a test can count dials over virtual time.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from p2pspace.errors import LocalProtocolError, TransportError

Address = tuple[str, int]
PIPE_CAPACITY = 64 * 1024  # bytes a pipe holds before its writer blocks
BACKLOG = 64  # connections waiting to be accepted before new ones are refused
FIRST_PORT = 49152  # ports handed out for "port 0" and to dialling ends
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectAttempt:
    """One connection attempt: at trio time ``at``, from host ``source`` to ``address``.

    ``outcome``: ``"connected"``, ``"refused"`` (nothing listens, the address refuses, or the
    backlog is full) or ``"cut"`` (the hosts are partitioned: the attempt waits for a heal).
    """

    at: float
    source: str
    address: Address
    outcome: str


@dataclass(slots=True, eq=False, weakref_slot=True)
class _Pipe:
    """One direction of a stream: a bounded buffer from ``source`` to ``target``."""

    network: MemoryNetwork
    source: str
    target: str
    capacity: int
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False  # the writer closed or sent EOF
    reader_gone: bool = False  # the reader closed: writes fail
    lot: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    def flowing(self) -> bool:
        return not self.network.is_cut(self.source, self.target)

    def changed(self) -> None:
        self.lot.unpark_all()


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._out = outgoing
        self._in = incoming
        self._closed = False
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            view = memoryview(bytes(data))
            pipe = self._out
            while view:
                self._check_can_send()
                room = pipe.capacity - len(pipe.buffer)
                if room <= 0:
                    await pipe.lot.park()
                    continue
                pipe.buffer += view[:room]
                view = view[room:]
                pipe.changed()
        finally:
            self._sending = False

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        if self._out.eof:
            raise trio.ClosedResourceError("send_eof was called on this stream")
        if self._out.reader_gone:
            raise trio.BrokenResourceError("the other end closed the connection")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()
        while len(self._out.buffer) >= self._out.capacity:
            self._check_can_send()
            await self._out.lot.park()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            pipe = self._in
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed")
                if pipe.flowing():
                    if pipe.buffer:
                        size = len(pipe.buffer) if max_bytes is None else max_bytes
                        data = bytes(pipe.buffer[:size])
                        del pipe.buffer[:size]
                        pipe.changed()
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return data
                    if pipe.eof:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                        return b""
                await pipe.lot.park()
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was closed")
        self._out.eof = True
        self._out.changed()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._out.changed()
            self._in.reader_gone = True
            self._in.buffer.clear()
            self._in.changed()
        await trio.lowlevel.checkpoint()


class MemoryListener:
    """Incoming connections at one address of a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, address: Address, backlog: int) -> None:
        self.network = network
        self._address = address
        self._send, self._receive = trio.open_memory_channel[tuple[MemoryStream, Address]](backlog)
        self.closed = False

    @property
    def address(self) -> Address:
        return self._address

    def _offer(self, stream: MemoryStream, source: Address) -> bool:
        try:
            self._send.send_nowait((stream, source))
        except trio.WouldBlock:
            return False
        return True

    async def accept(self) -> tuple[trio.abc.Stream, Address]:
        """The next incoming stream and where it came from. ClosedResourceError once closed."""
        if self.closed:
            raise trio.ClosedResourceError("listener closed")
        return await self._receive.receive()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.network._unlisten(self._address, self)
            self._send.close()
            while True:
                try:
                    stream, _source = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                await stream.aclose()
            self._receive.close()
        await trio.lowlevel.checkpoint()


@dataclass(frozen=True, slots=True, eq=False)
class MemoryHost:
    """One host of a :class:`MemoryNetwork`: the :class:`~p2pspace.node.network.Network` a node
    on that host uses."""

    network: MemoryNetwork
    name: str

    async def open_listeners(self, host: str, port: int) -> Sequence[MemoryListener]:
        """A listener at ``host:port`` (a wildcard host means this host; port 0: a free one).

        Raises :class:`TransportError` if the address is taken or is another host's.
        """
        await trio.lowlevel.checkpoint()
        if host in WILDCARDS:
            host = self.name
        if host != self.name:
            raise TransportError(f"cannot listen on {host}:{port}: not an address of {self.name}")
        return [self.network._listen(host, port)]

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to ``host:port``. Raises :class:`TransportError` if refused; waits while the
        hosts are cut apart (the caller's timeout ends the wait)."""
        return await self.network._connect(self.name, (host, port))


class MemoryNetwork:
    """An in-process network of hosts. See the module docstring."""

    def __init__(self, *, capacity: int = PIPE_CAPACITY, backlog: int = BACKLOG) -> None:
        if capacity < 1 or backlog < 1:
            raise LocalProtocolError("capacity and backlog must be positive")
        self.capacity = capacity
        self.backlog = backlog
        self.attempts: list[ConnectAttempt] = []
        self._listeners: dict[Address, MemoryListener] = {}
        self._refused: set[Address] = set()
        self._cuts: set[frozenset[str]] = set()
        self._pipes: weakref.WeakSet[_Pipe] = weakref.WeakSet()
        self._healed = trio.lowlevel.ParkingLot()
        self._next_port = FIRST_PORT
        self._hosts = 0

    # -- hosts and addresses --------------------------------------------------------------------

    def host(self, name: str | None = None) -> MemoryHost:
        """The host called ``name`` (default: a new one, ``10.0.0.N``)."""
        if name is None:
            n = self._hosts
            self._hosts += 1
            name = f"10.0.{n // 250}.{n % 250 + 1}"
        return MemoryHost(self, name)

    def listening(self, address: Address) -> bool:
        return address in self._listeners

    def _free_port(self, host: str) -> int:
        while (host, self._next_port) in self._listeners:
            self._next_port += 1
        port = self._next_port
        self._next_port += 1
        return port

    def _listen(self, host: str, port: int) -> MemoryListener:
        address = (host, port or self._free_port(host))
        if address in self._listeners:
            raise TransportError(f"cannot listen on {host}:{port}: address already in use")
        listener = MemoryListener(self, address, self.backlog)
        self._listeners[address] = listener
        return listener

    def _unlisten(self, address: Address, listener: MemoryListener) -> None:
        if self._listeners.get(address) is listener:
            del self._listeners[address]

    # -- shaping the network --------------------------------------------------------------------

    def refuse(self, host: str, port: int) -> None:
        """Connections to ``host:port`` are refused from now on."""
        self._refused.add((host, port))

    def allow(self, host: str, port: int) -> None:
        """Undo :meth:`refuse`."""
        self._refused.discard((host, port))

    def cut(self, a: str, b: str) -> None:
        """Partition hosts ``a`` and ``b``: nothing moves between them until :meth:`heal`."""
        if a == b:
            raise LocalProtocolError("a host cannot be cut from itself")
        self._cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        """Undo :meth:`cut`: bytes waiting in the pipes move on, waiting connects go ahead."""
        self._cuts.discard(frozenset((a, b)))
        self._healed.unpark_all()
        for pipe in list(self._pipes):
            pipe.changed()

    def is_cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self._cuts

    # -- connecting -----------------------------------------------------------------------------

    def attempts_to(self, address: Address) -> list[ConnectAttempt]:
        """The attempts to connect to ``address``, oldest first."""
        return [a for a in self.attempts if a.address == address]

    def _record(self, source: str, address: Address, outcome: str) -> None:
        self.attempts.append(
            ConnectAttempt(at=trio.current_time(), source=source, address=address, outcome=outcome)
        )

    async def _connect(self, source: str, address: Address) -> MemoryStream:
        await trio.lowlevel.checkpoint()
        host, port = address
        if self.is_cut(source, host):
            self._record(source, address, "cut")
            while self.is_cut(source, host):
                await self._healed.park()
        listener = self._listeners.get(address)
        if listener is None or address in self._refused:
            self._record(source, address, "refused")
            raise TransportError(f"{host}:{port}: Connection refused")
        outgoing = _Pipe(self, source, host, self.capacity)
        incoming = _Pipe(self, host, source, self.capacity)
        self._pipes.add(outgoing)
        self._pipes.add(incoming)
        ours = MemoryStream(outgoing, incoming)
        theirs = MemoryStream(incoming, outgoing)
        if not listener._offer(theirs, (source, self._free_port(source))):
            self._record(source, address, "refused")
            raise TransportError(f"{host}:{port}: Connection refused (backlog full)")
        self._record(source, address, "connected")
        return ours


__all__ = [
    "ConnectAttempt",
    "MemoryHost",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryStream",
]
