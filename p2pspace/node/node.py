"""The trio node: one endpoint on a real network (listener, discovery, dialler, local API).

Theory of operation. ``async with open_node(home, ...) as node`` opens the endpoint's store,
loads every space and starts, in one nursery: a TLS listener, mDNS discovery, a dialler task per
dial target (static ``--peer`` addresses, discovered peers, invitations), a ticker and the local
HTTP API. Everything runs on trio's one thread; the sans-IO
:class:`~p2pspace.sync.endpoint.Endpoint` and its :class:`~p2pspace.sync.session.Session`
objects are driven synchronously from it.

Per connection there is one reader task (bytes into the session) and one writer task (bytes the
session produces, written with TCP backpressure: the session makes catch-up chunks lazily, so a
slow reader makes it produce less instead of queueing more). Any change -- a local delta, received
deltas, a tick -- *kicks* every writer. A reader that sees part of a frame and then nothing for
``stall_timeout`` seconds drops the connection.

One connection per peer pair: when a second authenticated connection to the same peer appears,
both sides keep the one dialled by the endpoint with the smaller id (or, if both were dialled by
the same side, the newer one), so simultaneous dials resolve the same way on both ends. Dial
targets retry with jittered exponential backoff. Leaving the ``async with`` cancels everything:
connections close, zeroconf unregisters, the store closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2pspace.core import codec
from p2pspace.core.causal import Limits
from p2pspace.core.delta import Delta, decode_delta
from p2pspace.core.identity import format_endpoint_id, short_id
from p2pspace.core.replica import Replica, validate_genesis
from p2pspace.engines import members as members_engine
from p2pspace.engines import rdb
from p2pspace.errors import (
    InvitationError,
    LocalProtocolError,
    NotFoundError,
    P2PSpaceError,
    RemoteProtocolError,
    StorageError,
    TransportError,
)
from p2pspace.node.discovery import Discovery, Sighting, local_addresses
from p2pspace.node.tls import client_context, server_context
from p2pspace.node.transport import Connection, accept, dial
from p2pspace.sync import invitations
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.handshake import JoinRequest
from p2pspace.sync.session import RecvState, SendState, Session
from p2pspace.sync.syncstate import (
    PeerInput,
    PeerMachine,
    PeerState,
    ProcessorInput,
    ProcessorMachine,
    ProcessorState,
)
from p2pspace.tools.discussion import Discussion, has_discussion

DEFAULT_PORT = 7455
TICK_SECONDS = 0.1
STALL_TIMEOUT = 20.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0
DIAL_GRACE = 0.5  # the larger id waits this long before dialling a discovered peer itself
EVENT_QUEUE = 1024
READ_SIZE = 256 * 1024
CONFIG_FILE = "config.json"
PEERS_FILE = "peers.json"
MAX_BOOK = 256
LOCK_FILE = "node.lock"
JOIN_TIMEOUT = 60.0
PROGRESS_EVERY = 0.5  # seconds between catch-up progress events during a join
MAX_INBOUND = 256
STRANGER_GRACE = 10.0  # an inbound connection sharing no space is closed after this long
HOUSEKEEPING_TICKS = 10
SPACE_ENGINES = {"db": "rdb", "discussion": "rdb"}  # a new space holds the discussion tool

log = logging.getLogger("p2pspace.node")


def now_ms() -> int:
    return int(time.time() * 1000)


# -- home folder --------------------------------------------------------------------------------


def read_config(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, dict) else {}


def write_config(home: Path, **values: Any) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = read_config(home)
    config.update(values)
    path = home / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True), "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from None


def read_address_book(home: Path) -> dict[bytes, list[tuple[str, int]]]:
    """Peers this endpoint dialled successfully before: endpoint id -> addresses."""
    path = home / PEERS_FILE
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    book: dict[bytes, list[tuple[str, int]]] = {}
    if not isinstance(raw, dict):
        return book
    for key, addresses in list(raw.items())[:MAX_BOOK]:
        try:
            peer = bytes.fromhex(key)
            parsed = [invitations.split_address(a) for a in addresses][: invitations.MAX_ADDRESSES]
        except (ValueError, TypeError, P2PSpaceError):
            continue
        if len(peer) == 16 and parsed:
            book[peer] = parsed
    return book


def write_address_book(home: Path, book: dict[bytes, list[tuple[str, int]]]) -> None:
    path = home / PEERS_FILE
    data = {
        peer.hex(): [invitations.join_address(h, p) for h, p in addresses]
        for peer, addresses in list(book.items())[-MAX_BOOK:]
    }
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Exclusive use of a home folder's store by one process (a node or an offline command).

    Raises :class:`LocalProtocolError` if another process holds it.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalProtocolError(
                f"another p2pspace process is using {home} (is a node running there?)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as a tuple. LocalProtocolError if it is not one."""
    try:
        if default_port is not None and ":" not in text:
            return text, default_port
        return invitations.split_address(text)
    except P2PSpaceError:
        raise LocalProtocolError(f"not a HOST:PORT address: {text!r}") from None


# -- records ------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True, eq=False)
class PeerConnection:
    """A live, authenticated connection and the session running on it."""

    conn: Connection
    session: Session
    scope: trio.CancelScope
    opened: float
    wake: trio.Event = field(default_factory=trio.Event)
    error: str = ""
    replaced: bool = False
    writer_done: trio.Event = field(default_factory=trio.Event)
    spaces: set[bytes] = field(default_factory=set)  # spaces this connection has synced
    inbound_slot: bool = False  # counts against MAX_INBOUND until the peer proves a member


@dataclass(slots=True, kw_only=True, eq=False)
class DialTarget:
    """Somewhere to dial: a static address, a discovered peer or an inviter."""

    key: str
    addresses: list[tuple[str, int]]
    peer: bytes | None = None
    static: bool = False
    attempts: int = 0
    last_error: str = ""
    wanted: bool = True
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Node:
    """A running endpoint. Made by :func:`open_node`; every method runs on the trio thread."""

    def __init__(
        self,
        home: Path,
        endpoint: Endpoint,
        *,
        listen: tuple[str, int] | None,
        interfaces: Sequence[str],
        peers: Sequence[tuple[str, int]],
        discovery: bool,
        stall_timeout: float,
    ) -> None:
        self.home = home
        self.endpoint = endpoint
        self.listen = listen
        self.interfaces = list(interfaces)
        self.static_peers = list(peers)
        self.use_discovery = discovery
        self.stall_timeout = stall_timeout
        self.listen_addresses: list[tuple[str, int]] = []
        self.api_url: str | None = None
        self.api_token: str | None = None
        self.discovery: Discovery | None = None
        self.connections: dict[bytes, PeerConnection] = {}
        self.targets: dict[str, DialTarget] = {}
        self.peer_sync: dict[tuple[bytes, bytes], PeerMachine] = {}
        self.processors: dict[bytes, ProcessorMachine] = {}
        self.started = time.monotonic()
        self.refused = 0  # connections refused (bad handshake, hostile peers)
        self._changed = trio.lowlevel.ParkingLot()
        self._subscribers: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self._nursery: trio.Nursery | None = None
        self._server_ctx = server_context(home, endpoint.identity)
        self._client_ctx = client_context(home, endpoint.identity)
        self._rng = random.Random()
        self._accepting = 0
        self.address_book = read_address_book(home)
        self._acks: dict[bytes, dict[bytes, dict[bytes, int]]] = {}
        self._acks_dirty: set[tuple[bytes, bytes]] = set()
        self._discussions: dict[bytes, Discussion] = {}
        self._load_acks()
        for replica in list(endpoint.replicas.values()):
            self._watch(replica)

    # -- identity -----------------------------------------------------------------------------

    @property
    def endpoint_id(self) -> bytes:
        return self.endpoint.endpoint_id

    @property
    def name(self) -> str:
        return self.endpoint.name

    # -- change notification ------------------------------------------------------------------

    def _notify(self, event: dict[str, Any] | None = None) -> None:
        self._changed.unpark_all()
        if event is None:
            return
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # A subscriber that does not keep up is dropped, not buffered for.
                self._subscribers.remove(channel)
                channel.close()

    @contextlib.contextmanager
    def subscribe(
        self, max_events: int = EVENT_QUEUE
    ) -> Iterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        """A bounded stream of change events (dicts with a ``type``); a subscriber that falls
        ``max_events`` behind is closed (its channel ends) rather than buffered for."""
        send, receive = trio.open_memory_channel[dict[str, Any]](max_events)
        self._subscribers.append(send)
        try:
            yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()
            receive.close()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` is true (checked after every change).

        Raises :class:`trio.TooSlowError` after ``timeout`` seconds.
        """
        with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
            while not predicate():
                await self._changed.park()

    def _kick(self) -> None:
        for peer in self.connections.values():
            peer.wake.set()

    # -- spaces -------------------------------------------------------------------------------

    def _watch(self, replica: Replica) -> None:
        machine = self.processors.setdefault(replica.space_id, ProcessorMachine())
        if machine.state is ProcessorState.LOADING:
            machine.feed(ProcessorInput.LOADED)
        space_hex = replica.space_id.hex()

        def on_executed(_replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
            self._notify(
                {
                    "type": "deltas",
                    "space": space_hex,
                    "count": len(executed),
                    "creators": sorted({d.creator.hex() for d, _w in executed}),
                }
            )
            discussion = self.discussion(replica.space_id, required=False)
            if discussion is not None:
                for event in discussion.events(d for d, _w in executed):
                    self._notify({**event.to_json(), "space": space_hex})

        replica.listeners.append(on_executed)

    def replica(self, space: bytes) -> Replica:
        return self.endpoint.replica(space)

    def resolve_space(self, text: str) -> bytes:
        """A space named by hex id, unique id prefix (≥ 4 characters) or unique name.

        Raises :class:`LocalProtocolError` if none or several match.
        """
        text = text.strip()
        lowered = text.lower()
        by_id = [s for s in self.endpoint.replicas if s.hex() == lowered]
        if by_id:
            return by_id[0]
        matches = [s for s, r in self.endpoint.replicas.items() if _space_name(r) == text]
        if len(lowered) >= 4:
            matches += [s for s in self.endpoint.replicas if s.hex().startswith(lowered)]
        matches = sorted(set(matches))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no space named {text!r} here (see: p2pspace space list)")
        raise LocalProtocolError(f"{text!r} names several spaces; use the space id")

    def create_space(self, name: str, *, engines: dict[str, str] | None = None) -> Replica:
        engines = dict(SPACE_ENGINES if engines is None else engines)
        replica = self.endpoint.create_space(name, time=now_ms(), engines=engines)
        self._watch(replica)
        self._notify({"type": "space", "space": replica.space_id.hex(), "name": name})
        self._kick()
        return replica

    def spaces(self) -> list[dict[str, Any]]:
        return [self.space_info(space) for space in sorted(self.endpoint.replicas)]

    def space_info(self, space: bytes) -> dict[str, Any]:
        replica = self.replica(space)
        me = self.endpoint_id
        members = []
        for member in replica.members().members():
            entry: dict[str, Any] = {
                "id": member.id.hex(),
                "display_id": format_endpoint_id(member.id),
                "name": member.name,
                "role": member.role,
                "me": member.id == me,
            }
            if member.id != me:
                machine = self.peer_sync.get((space, member.id))
                entry["sync"] = (machine.state if machine else PeerState.DISCONNECTED).value
                entry["connected"] = member.id in self.connections
            members.append(entry)
        processor = self.processors.get(space)
        return {
            "id": space.hex(),
            "name": _space_name(replica),
            "processor": (processor.state.value if processor else "loading"),
            "member": replica.can_create(),
            "members": members,
            "executed": replica.executed_count(),
            "pending": replica.pending_count,
            "staged": replica.staged_count,
            "vector": {c.hex(): s for c, s in sorted(replica.vector.items())},
        }

    # -- tools --------------------------------------------------------------------------------

    def discussion(self, space: bytes, *, required: bool = True) -> Discussion | None:
        """The space's discussion tool (None, or LocalProtocolError if ``required``, when the
        space has none)."""
        tool = self._discussions.get(space)
        if tool is not None:
            return tool
        replica = self.replica(space)
        if not has_discussion(replica):
            if required:
                raise LocalProtocolError("this space has no discussion tool")
            return None
        tool = Discussion(
            replica,
            commit=lambda commands: self.commit(space, commands),
            now=now_ms,
            acks=lambda: self.acked(space),
        )
        self._discussions[space] = tool
        return tool

    # -- what peers acknowledged ----------------------------------------------------------------

    def _load_acks(self) -> None:
        for space, peer, raw in self.endpoint.store.peer_acks():
            try:
                vector = dict(codec.decode_stored(raw))
            except (P2PSpaceError, TypeError, ValueError):
                continue
            self._acks.setdefault(space, {})[peer] = vector

    def acked(self, space: bytes) -> dict[bytes, dict[bytes, int]]:
        """The latest vector each peer acknowledged for ``space`` (kept across restarts)."""
        return self._acks.get(space, {})

    def _note_acks(self, space: bytes, peer: bytes, acked: dict[bytes, int]) -> None:
        known = self._acks.setdefault(space, {}).setdefault(peer, {})
        grew = False
        for creator, seq in acked.items():
            if seq > known.get(creator, 0):
                known[creator] = seq
                grew = True
        if grew:
            self._acks_dirty.add((space, peer))
            self._notify({"type": "acks", "space": space.hex(), "peer": peer.hex()})
            if self.discussion(space, required=False) is not None:
                # Sync statuses of posts may have moved ("delivered to k of n").
                self._notify({"type": "status", "space": space.hex(), "peer": peer.hex()})

    def _flush_acks(self) -> None:
        if not self._acks_dirty:
            return
        rows = [
            (space, peer, codec.encode_local(sorted(self._acks[space][peer].items())))
            for space, peer in sorted(self._acks_dirty)
        ]
        self._acks_dirty.clear()
        try:
            with self.endpoint.store.transaction(sync=False):
                self.endpoint.store.set_peer_acks(rows)
        except StorageError as exc:
            log.warning("cannot record acknowledgements: %s", exc)

    def presence(self, space: bytes) -> list[dict[str, Any]]:
        """Members of ``space`` and whether each is online now (connected, or seen by mDNS)."""
        replica = self.replica(space)
        seen = self.discovery.peers if self.discovery is not None else {}
        out = []
        for member in replica.members().members():
            me = member.id == self.endpoint_id
            out.append(
                {
                    "id": member.id.hex(),
                    "name": member.name,
                    "role": member.role,
                    "me": me,
                    "online": me or member.id in self.connections or member.id in seen,
                    "connected": member.id in self.connections,
                    "sync": None if me else self._machine(space, member.id).state.value,
                }
            )
        return out

    # -- records (rdb) ------------------------------------------------------------------------

    def _writable(self, space: bytes) -> Replica:
        replica = self.replica(space)
        if not replica.can_create():
            raise LocalProtocolError(
                "this endpoint is not (yet) a member of the space; wait for the join to finish"
            )
        return replica

    def commit(self, space: bytes, commands: Sequence[Any]) -> Delta:
        """Create one delta of ``commands`` here and push it to peers."""
        self._writable(space)
        try:
            delta = self.endpoint.create(space, commands, time=now_ms())
        except StorageError as exc:
            self._processor_failed(space, str(exc))
            raise
        self._kick()
        return delta

    def rdb_set(
        self, space: bytes, table: str, record: str, fields: dict[str, Any], *, instance: str = "db"
    ) -> Delta:
        """Create the record or update its fields (one delta: create-if-absent, then set)."""
        if not fields:
            raise LocalProtocolError("give at least one FIELD=VALUE")
        return self.commit(
            space,
            [
                rdb.create(table, record, fields, instance=instance),
                rdb.set_fields(table, record, fields, instance=instance),
            ],
        )

    def rdb_delete(self, space: bytes, table: str, record: str, *, instance: str = "db") -> Delta:
        return self.commit(space, [rdb.delete(table, record, instance=instance)])

    def rdb_get(
        self, space: bytes, table: str, record: str | None = None, *, instance: str = "db"
    ) -> dict[str, dict[str, Any]]:
        view = self.replica(space).rdb(instance)
        if record is not None:
            fields = view.get(table, record)
            return {} if fields is None else {record: fields}
        return dict(view.records(table))

    def _processor_failed(self, space: bytes, error: str) -> None:
        machine = self.processors.setdefault(space, ProcessorMachine())
        machine.feed(ProcessorInput.FAILED, error)
        self._notify({"type": "processor", "space": space.hex(), "state": machine.state.value})

    # -- invitations --------------------------------------------------------------------------

    def advertised_addresses(self) -> list[str]:
        """``host:port`` texts peers can dial this node at."""
        out: list[str] = []
        for host, port in self.listen_addresses:
            if host in ("0.0.0.0", "::", ""):
                hosts = self.interfaces or local_addresses()
            else:
                hosts = [host]
            out += [invitations.join_address(h, port) for h in hosts]
        return list(dict.fromkeys(out))[: invitations.MAX_ADDRESSES]

    def invite(
        self, space: bytes, *, role: str = "participant", ttl_ms: int = invitations.DEFAULT_TTL_MS
    ) -> str:
        """A one-time invitation code for ``space``. Needs a listening node."""
        replica = self._writable(space)
        addresses = tuple(self.advertised_addresses())
        if not addresses:
            raise LocalProtocolError("this node does not listen; it cannot take invitations")
        invitation = invitations.issue(
            self.endpoint.store,
            space=space,
            inviter=self.endpoint_id,
            addresses=addresses,
            role=role,
            now=now_ms(),
            ttl_ms=ttl_ms,
            random=os.urandom(32),
            space_name=_space_name(replica),
        )
        return invitation.encode()

    def _on_join(self, peer: bytes, key: bytes, request: JoinRequest, nonce: bytes) -> bytes:
        """Inviter side: admit a joiner that proved an invitation's secret."""
        replica = self.endpoint.replicas.get(request.space)
        if replica is None or not replica.can_create():
            # The same answer as for any unknown invitation: a stranger must not learn from the
            # refusal whether this endpoint belongs to the space.
            raise InvitationError("unknown invitation (it was not issued by this endpoint)")
        with self.endpoint.store.transaction():
            role = self._redeem(request, peer, nonce)
        existing = replica.members().get(peer)
        if existing is None:  # a retry after a crash does not re-apply (or change) the role
            command = members_engine.add_command(
                member_id=peer, key=key, name=request.name, role=role
            )
            self.commit(request.space, [command])
            log.info("admitted %s to space %s as %s", short_id(peer), request.space.hex(), role)
        return replica.genesis.wire()

    def _redeem(self, request: JoinRequest, peer: bytes, nonce: bytes) -> str:
        return invitations.redeem(
            self.endpoint.store,
            space=request.space,
            invitation=request.invitation,
            mac=request.mac,
            nonce=nonce,
            inviter=self.endpoint_id,
            joiner=peer,
            now=now_ms(),
        )

    async def join(
        self,
        code: str,
        *,
        timeout: float = JOIN_TIMEOUT,
        progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """Redeem an invitation code: connect to the inviter, prove the secret, catch up.

        Returns the space id once this endpoint is a member and has caught up with the inviter.
        Raises :class:`InvitationError` (refused, expired, malformed) or
        :class:`TransportError` (inviter unreachable).
        """
        invitation = invitations.decode_code(code)
        if now_ms() > invitation.expires:
            raise InvitationError("invitation has expired")
        if invitation.inviter == self.endpoint_id:
            raise InvitationError("this invitation was issued by this endpoint")
        space = invitation.space
        existing = self.endpoint.replicas.get(space)
        if existing is not None and existing.can_create():
            return space
        addresses = [invitations.split_address(a) for a in invitation.addresses]
        if self.discovery is not None:
            seen = self.discovery.peers.get(invitation.inviter)
            if seen is not None:
                addresses = list(seen.addresses) + addresses
        if not addresses:
            raise InvitationError("the invitation names no address for the inviter")

        def make_request(server: bytes, nonce: bytes) -> JoinRequest:
            mac = invitations.join_mac(
                invitation.secret,
                nonce=nonce,
                space=space,
                inviter=server,
                joiner=self.endpoint_id,
                invitation=invitation.invitation,
            )
            return JoinRequest(
                space=space, invitation=invitation.invitation, mac=mac, name=self.name
            )

        errors: list[str] = []
        with trio.fail_after(timeout):
            conn: Connection | None = None
            for host, port in addresses:
                try:
                    conn = await dial(
                        host,
                        port,
                        identity=self.endpoint.identity,
                        context=self._client_ctx,
                        expected_peer=invitation.inviter,
                        join=make_request,
                    )
                    break
                except InvitationError:
                    raise
                except P2PSpaceError as exc:
                    errors.append(str(exc))
            if conn is None:
                raise TransportError(
                    "cannot reach the inviter: " + "; ".join(errors or ["no address"])
                )
            self._remember(conn.peer, conn.address)
            try:
                # Check the genesis names the invited space before storing anything.
                sent_space, _engines = validate_genesis(decode_delta(conn.genesis))
                if sent_space != space:
                    raise InvitationError("the inviter sent a different space than invited to")
                replica = self.endpoint.join_space(conn.genesis, sponsors=[invitation.inviter])
            except P2PSpaceError:
                await conn.aclose()
                raise
            self._watch(replica)
            self._notify({"type": "space", "space": space.hex(), "name": _space_name(replica)})
            assert self._nursery is not None
            registered = self._register(conn)
            if registered is None:
                await conn.aclose()
            else:
                self._nursery.start_soon(self._serve_connection, registered)
            self._ensure_target(
                f"peer:{invitation.inviter.hex()}", list(addresses), invitation.inviter
            )

            last_shown = [-1.0]

            def done() -> bool:
                have, total = self.catch_up_progress(space, invitation.inviter)
                if progress is not None:
                    progress(have, total)
                now = time.monotonic()
                if total > have and now - last_shown[0] >= PROGRESS_EVERY:
                    # For API clients (the CLI talking to a running node) to show.
                    last_shown[0] = now
                    self._notify(
                        {"type": "progress", "space": space.hex(), "have": have, "total": total}
                    )
                machine = self.peer_sync.get((space, invitation.inviter))
                return replica.can_create() and (
                    machine is not None and machine.state is PeerState.LIVE
                )

            await self.wait_until(done)
        return space

    def catch_up_progress(self, space: bytes, peer: bytes) -> tuple[int, int]:
        """``(deltas we have, deltas the peer said it has)`` for a space, from its Revision."""
        replica = self.replica(space)
        have = sum(replica.vector.values())
        connection = self.connections.get(peer)
        link = connection.session.links.get(space) if connection else None
        total = sum(link.acked.values()) if link is not None else have
        return have, max(have, total)

    # -- peers and sync states ----------------------------------------------------------------

    def _machine(self, space: bytes, peer: bytes) -> PeerMachine:
        machine = self.peer_sync.get((space, peer))
        if machine is None:
            machine = self.peer_sync[(space, peer)] = PeerMachine()
        return machine

    def _feed(self, space: bytes, peer: bytes, event: PeerInput, error: str = "") -> None:
        self._step(space, peer, lambda machine: machine.feed(event, error))

    def _step(self, space: bytes, peer: bytes, step: Callable[[PeerMachine], object]) -> None:
        """Apply ``step`` to the (space, peer) machine and announce a change of state."""
        machine = self._machine(space, peer)
        before = machine.state
        try:
            step(machine)
        except LocalProtocolError as exc:
            # A gap in the table is our bug, never a reason to stop the node: log it and
            # apply the step afresh from "disconnected" (which accepts every input it gets).
            log.error("sync state of %s: %s", short_id(peer), exc)
            machine.state = PeerState.DISCONNECTED
            step(machine)
        if machine.state is not before:
            self._sync_changed(space, peer, machine)

    def _sync_changed(self, space: bytes, peer: bytes, machine: PeerMachine) -> None:
        self._notify(
            {
                "type": "sync",
                "space": space.hex(),
                "peer": peer.hex(),
                "state": machine.state.value,
                "error": machine.error,
            }
        )

    def _shared_spaces(self, peer: bytes) -> list[bytes]:
        return [s for s, r in self.endpoint.replicas.items() if r.is_member(peer)]

    def _observe(self, peer: PeerConnection) -> None:
        """Move the (space, peer) machines to what the session's links show."""
        session = peer.session
        if session.peer is None:
            return
        for space, link in session.links.items():
            peer.spaces.add(space)
            if link.acked:
                self._note_acks(space, session.peer, link.acked)
            live = link.recv is RecvState.SYNCED and link.send is SendState.LIVE
            target = PeerState.LIVE if live else PeerState.CATCHING_UP
            if self._machine(space, session.peer).state is not target:
                self._step(space, session.peer, functools.partial(PeerMachine.reach, target=target))
        if peer.inbound_slot and (session.links or self._shared_spaces(session.peer)):
            # A member: its connection no longer counts against the strangers' cap.
            peer.inbound_slot = False
            self._accepting -= 1

    def peers(self) -> list[dict[str, Any]]:
        ids: set[bytes] = set(self.connections)
        for replica in self.endpoint.replicas.values():
            ids.update(m for m in replica.member_ids() if m != self.endpoint_id)
        if self.discovery is not None:
            ids.update(self.discovery.peers)
        out = []
        for peer in sorted(ids):
            connection = self.connections.get(peer)
            seen = self.discovery.peers.get(peer) if self.discovery is not None else None
            entry: dict[str, Any] = {
                "id": peer.hex(),
                "display_id": format_endpoint_id(peer),
                "connected": connection is not None,
                "discovered": seen is not None,
                "addresses": [invitations.join_address(h, p) for h, p in seen.addresses]
                if seen
                else [],
                "spaces": {
                    s.hex(): self._machine(s, peer).state.value
                    for s in sorted(self._shared_spaces(peer))
                },
            }
            if connection is not None:
                stats = connection.session.stats
                entry["address"] = invitations.join_address(*connection.conn.address)
                entry["dialed"] = connection.conn.dialed
                entry["bytes_sent"] = stats.bytes_sent
                entry["bytes_received"] = stats.bytes_received
                entry["deltas_sent"] = stats.deltas_sent
                entry["deltas_received"] = stats.deltas_received
            out.append(entry)
        return out

    def status(self) -> dict[str, Any]:
        """Everything the ``status`` command and the API show (JSON-ready)."""
        return {
            "endpoint": self.endpoint_id.hex(),
            "display_id": format_endpoint_id(self.endpoint_id),
            "name": self.name,
            "listen": [invitations.join_address(h, p) for h, p in self.listen_addresses],
            "interfaces": self.interfaces,
            "api": self.api_url,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "spaces": self.spaces(),
            "peers": self.peers(),
            "targets": [
                {
                    "key": t.key,
                    "addresses": [invitations.join_address(h, p) for h, p in t.addresses],
                    "peer": t.peer.hex() if t.peer else None,
                    "attempts": t.attempts,
                    "last_error": t.last_error,
                }
                for t in self.targets.values()
            ],
            "refused": self.refused,
        }

    # -- connections --------------------------------------------------------------------------

    def _prefer(self, new: Connection, old: Connection) -> bool:
        """True if ``new`` should replace ``old`` (same rule on both ends)."""
        me, peer = self.endpoint_id, new.peer
        preferred = min(me, peer)
        new_dialer = me if new.dialed else peer
        old_dialer = me if old.dialed else peer
        if new_dialer != old_dialer:
            return new_dialer == preferred
        return True  # same dialer: the newer connection replaces a stale one

    def _register(self, conn: Connection) -> PeerConnection | None:
        """Make ``conn`` the peer's connection (synchronously, so no dial can slip in between),
        or return None if an existing connection is preferred (the caller closes ``conn``)."""
        existing = self.connections.get(conn.peer)
        if existing is not None:
            if not self._prefer(conn, existing.conn):
                log.debug("dropping duplicate connection to %s", short_id(conn.peer))
                return None
            # The old connection winds down on its own; its session and ours may overlap
            # briefly, which the protocol tolerates (deltas already known are not resent).
            existing.replaced = True
            existing.scope.cancel()
        session = self.endpoint.open_session(expected_peer=conn.peer)
        peer = PeerConnection(
            conn=conn, session=session, scope=trio.CancelScope(), opened=time.monotonic()
        )
        self.connections[conn.peer] = peer
        log.info(
            "connected to %s at %s:%d (%s)",
            short_id(conn.peer),
            conn.address[0],
            conn.address[1],
            "dialled" if conn.dialed else "accepted",
        )
        self._notify({"type": "peer", "peer": conn.peer.hex(), "connected": True})
        return peer

    async def _run_connection(self, conn: Connection) -> None:
        """Run the sync protocol on ``conn`` until it ends. Never raises P2PSpaceError."""
        peer = self._register(conn)
        if peer is None:
            await conn.aclose()
            return
        await self._serve_connection(peer)

    async def _serve_connection(self, peer: PeerConnection) -> None:
        conn, session = peer.conn, peer.session
        try:
            with peer.scope:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reader, peer, nursery.cancel_scope)
                        nursery.start_soon(self._writer, peer, nursery.cancel_scope)
                except Exception as exc:
                    # Whatever goes wrong on one connection (a store failure while streaming,
                    # a bug) ends that connection, logged -- never the node.
                    log.exception("connection to %s failed", short_id(conn.peer))
                    peer.error = peer.error or f"internal error: {type(exc).__name__}: {exc}"
                    self.refused += 1
        finally:
            error = peer.error or (str(session.error) if session.error else "")
            self.endpoint.close_session(session)
            if self.connections.get(conn.peer) is peer:
                del self.connections[conn.peer]
            closing = set(self._shared_spaces(conn.peer)) | peer.spaces
            for space in sorted(closing) if not peer.replaced else ():
                machine = self.peer_sync.get((space, conn.peer))
                if machine is None:
                    continue
                if session.error is not None:
                    self._feed(space, conn.peer, PeerInput.FAILED, error)
                else:
                    self._feed(space, conn.peer, PeerInput.CLOSED)
            if peer.replaced:
                log.info("connection to %s replaced by a newer one", short_id(conn.peer))
            elif error:
                log.warning("connection to %s closed: %s", short_id(conn.peer), error)
            else:
                log.info("connection to %s closed", short_id(conn.peer))
            if peer.replaced:
                self._notify()
            else:
                self._notify(
                    {"type": "peer", "peer": conn.peer.hex(), "connected": False, "error": error}
                )
            await conn.aclose()

    async def _reader(self, peer: PeerConnection, done: trio.CancelScope) -> None:
        session, stream = peer.session, peer.conn.stream
        frame_deadline = math.inf
        try:
            while not session.closed:
                if session.mid_frame:
                    # A frame must be complete within stall_timeout of its first byte: a peer
                    # trickling a byte at a time is as stuck as one sending nothing.
                    if frame_deadline == math.inf:
                        frame_deadline = trio.current_time() + self.stall_timeout
                    with trio.move_on_at(frame_deadline) as waited:
                        data = await stream.receive_some(READ_SIZE)
                    if waited.cancelled_caught:
                        peer.error = f"peer stalled mid-frame for {self.stall_timeout:g} s"
                        self.refused += 1
                        break
                else:
                    frame_deadline = math.inf
                    data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                frames_before = session.stats.frames_received
                try:
                    session.receive_data(bytes(data))
                except RemoteProtocolError as exc:
                    peer.error = f"{type(exc).__name__}: {exc}"
                    self.refused += 1
                    # The session queued an Error frame: let the writer send it (it stops once
                    # the session has nothing left), then close -- bounded, should the peer not
                    # read.
                    peer.wake.set()
                    with trio.move_on_after(1):
                        await peer.writer_done.wait()
                    break
                except StorageError as exc:
                    peer.error = f"store failed: {exc}"
                    for space in list(session.links):
                        self._processor_failed(space, str(exc))
                    break
                if session.stats.frames_received != frames_before:
                    frame_deadline = math.inf  # progress: the next partial frame gets a fresh one
                self._observe(peer)
                self._kick()
                self._notify()
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
                    self._notify()
                    continue
                if session.closed:
                    self._notify()
                    break
                await peer.wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            peer.error = peer.error or f"connection broke: {exc}"
        finally:
            peer.writer_done.set()
            done.cancel()

    async def _ticker(self) -> None:
        ticks = 0
        while True:
            await trio.sleep(TICK_SECONDS)
            self.endpoint.tick()
            for peer in list(self.connections.values()):
                self._observe(peer)
            ticks += 1
            if ticks % HOUSEKEEPING_TICKS == 0:
                self._housekeeping()
            self._flush_acks()
            self._kick()
            self._notify()

    # -- listening ----------------------------------------------------------------------------

    async def _serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        for listener in listeners:
            sockname = listener.socket.getsockname()
            self.listen_addresses.append((str(sockname[0]), int(sockname[1])))
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    tcp = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors and the like: back off instead of spinning.
                    log.error("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._handle_accepted, tcp)

    async def _handle_accepted(self, tcp: trio.SocketStream) -> None:
        if self._accepting >= MAX_INBOUND and not self._evict_stranger():
            # Bounded: past this many handshakes and stranger connections, arrivals are closed
            # (members' connections stop counting once they sync a space).
            self.refused += 1
            log.warning("refused a connection: %d inbound strangers already", MAX_INBOUND)
            with trio.CancelScope(shield=True):
                await tcp.aclose()
            return
        self._accepting += 1
        holder: PeerConnection | None = None
        try:
            try:
                conn = await accept(
                    tcp,
                    identity=self.endpoint.identity,
                    context=self._server_ctx,
                    on_join=self._on_join,
                )
            except P2PSpaceError as exc:
                self.refused += 1
                log.warning("refused a connection: %s: %s", type(exc).__name__, exc)
                self._notify({"type": "refused", "error": f"{type(exc).__name__}: {exc}"})
                return
            holder = self._register(conn)
            if holder is None:
                await conn.aclose()
                return
            holder.inbound_slot = True  # the slot passes to the connection
            await self._serve_connection(holder)
        finally:
            if holder is None or holder.inbound_slot:
                self._accepting -= 1
            if holder is not None:
                holder.inbound_slot = False

    # -- dialling -----------------------------------------------------------------------------

    def add_peer(self, host: str, port: int) -> None:
        """Dial ``host:port`` now and whenever the connection is lost."""
        self._ensure_target(f"addr:{host}:{port}", [(host, port)], None, static=True)

    def _ensure_target(
        self,
        key: str,
        addresses: list[tuple[str, int]],
        peer: bytes | None,
        *,
        static: bool = False,
    ) -> None:
        target = self.targets.get(key)
        if target is not None:
            # Merge: addresses that worked stay first (an announcement could be spoofed; the
            # key pin stops impersonation, this stops it from costing us the real address).
            known = target.addresses[: invitations.MAX_ADDRESSES // 2]
            merged = known + [a for a in addresses if a not in known]
            target.addresses = merged[: invitations.MAX_ADDRESSES]
            target.wanted = True
            return
        target = DialTarget(key=key, addresses=addresses, peer=peer, static=static)
        self.targets[key] = target
        assert self._nursery is not None
        self._nursery.start_soon(self._dialer, target)

    def _drop_target(self, key: str) -> None:
        target = self.targets.pop(key, None)
        if target is not None:
            target.wanted = False
            target.scope.cancel()

    async def _dialer(self, target: DialTarget) -> None:
        delay = BACKOFF_MIN
        with target.scope:
            while target.wanted:
                peer = target.peer
                if peer is not None and peer in self.connections:
                    await self.wait_until(lambda p=peer: p not in self.connections)  # type: ignore[misc]
                    delay = BACKOFF_MIN
                    continue
                first = not target.static and target.attempts == 0
                if peer is not None and first and self.endpoint_id > peer:
                    # Let the smaller id dial first; dial ourselves only if it does not.
                    with trio.move_on_after(DIAL_GRACE):
                        await self.wait_until(lambda p=peer: p in self.connections)  # type: ignore[misc]
                    if peer in self.connections:
                        continue
                host, port = target.addresses[target.attempts % len(target.addresses)]
                target.attempts += 1
                if peer is not None:
                    for space in self._shared_spaces(peer):
                        self._feed(space, peer, PeerInput.DIAL)
                try:
                    conn = await dial(
                        host,
                        port,
                        identity=self.endpoint.identity,
                        context=self._client_ctx,
                        expected_peer=peer,
                    )
                except P2PSpaceError as exc:
                    target.last_error = str(exc)
                    log.debug("dial %s:%d failed: %s", host, port, exc)
                    if peer is not None:
                        for space in self._shared_spaces(peer):
                            self._feed(space, peer, PeerInput.CLOSED)
                    if "is this endpoint itself" in str(exc):
                        self.targets.pop(target.key, None)
                        return
                else:
                    target.last_error = ""
                    target.peer = conn.peer
                    if target.static or self._wants(conn.peer):
                        self._remember(conn.peer, (host, port))
                    if (host, port) in target.addresses:
                        target.addresses.remove((host, port))
                    target.addresses.insert(0, (host, port))
                    delay = BACKOFF_MIN
                    await self._run_connection(conn)
                    if not target.wanted:
                        return
                    continue
                await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)

    def _remember(self, peer: bytes, address: tuple[str, int]) -> None:
        known = self.address_book.get(peer, [])
        if known and known[0] == address:
            return
        self.address_book[peer] = [address] + [a for a in known if a != address]
        write_address_book(self.home, self.address_book)

    async def _discover(self, discovery: Discovery) -> None:
        async for sighting in discovery.events:
            self._on_sighting(sighting)

    def _on_sighting(self, sighting: Sighting) -> None:
        key = f"peer:{sighting.endpoint.hex()}"
        if sighting.gone:
            log.info("peer %s left the network", short_id(sighting.endpoint))
            # A member of a shared space stays a dial target (it may only be partitioned away
            # and mDNS may not announce it again soon); others are forgotten.
            member = bool(self._shared_spaces(sighting.endpoint))
            if key in self.targets and not member and sighting.endpoint not in self.connections:
                self._drop_target(key)
            self._notify({"type": "discovery", "peer": sighting.endpoint.hex(), "present": False})
            return
        log.info("discovered %s at %s", short_id(sighting.endpoint), sighting.addresses)
        if self._wants(sighting.endpoint):
            # Only peers we share a space with are dialled: anyone on the LAN can announce
            # anything, and strangers must not grow our dial targets.
            self._ensure_target(key, list(sighting.addresses), sighting.endpoint)
        self._notify({"type": "discovery", "peer": sighting.endpoint.hex(), "present": True})

    def _evict_stranger(self) -> bool:
        """Close the oldest inbound connection that shares no space, to make room for a new
        arrival (which may be a member). False if every slot is a handshake under way."""
        strangers = [
            c
            for c in self.connections.values()
            if c.inbound_slot and not c.session.links and not c.scope.cancel_called
        ]
        if not strangers:
            return False
        oldest = min(strangers, key=lambda c: c.opened)
        oldest.error = "closed to make room: shares no space with this endpoint"
        oldest.scope.cancel()
        return True

    def _wants(self, peer: bytes) -> bool:
        """True if ``peer`` shares a space with us or sponsors a join of ours."""
        if peer == self.endpoint_id:
            return False
        return bool(self._shared_spaces(peer)) or any(
            peer in sponsors for sponsors in self.endpoint.sponsors.values()
        )

    def _housekeeping(self) -> None:
        """Once a second: dial discovered peers that became members; drop idle strangers."""
        if self.discovery is not None:
            for peer, seen in list(self.discovery.peers.items()):
                key = f"peer:{peer.hex()}"
                if key not in self.targets and self._wants(peer):
                    self._ensure_target(key, list(seen.addresses), peer)
        now = time.monotonic()
        for peer_id, connection in list(self.connections.items()):
            stranger = not connection.session.links and not self._wants(peer_id)
            if stranger and not connection.conn.dialed and now - connection.opened > STRANGER_GRACE:
                connection.error = "shares no space with this endpoint"
                connection.scope.cancel()

    # -- lifetime -----------------------------------------------------------------------------

    async def _start(
        self, nursery: trio.Nursery, api: tuple[str, int] | None, api_token: str | None
    ) -> None:
        self._nursery = nursery
        if self.listen is not None:
            await nursery.start(self._serve, *self.listen)
        nursery.start_soon(self._ticker)
        if self.use_discovery and self.listen_addresses:
            advertise = self.interfaces or [
                h for h, _p in self.listen_addresses if h not in ("0.0.0.0", "::")
            ]
            self.discovery = Discovery(
                self.endpoint_id,
                port=self.listen_addresses[0][1],
                interfaces=self.interfaces,
                advertise=advertise or local_addresses(),
            )
            await nursery.start(self.discovery.run)
            nursery.start_soon(self._discover, self.discovery)
        for host, port in self.static_peers:
            self.add_peer(host, port)
        for peer, addresses in self.address_book.items():
            if any(r.is_member(peer) for r in self.endpoint.replicas.values()):
                self._ensure_target(f"peer:{peer.hex()}", list(addresses), peer)
        if api is not None:
            from p2pspace.app.api import serve_api

            await nursery.start(serve_api, self, api[0], api[1], api_token)

    def statistics(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "targets": len(self.targets),
            "subscribers": len(self._subscribers),
            "refused": self.refused,
        }


def _space_name(replica: Replica) -> str:
    info = replica.members().space()
    return info.name if info is not None else ""


@contextlib.asynccontextmanager
async def open_node(
    home: Path,
    *,
    listen: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT),
    interfaces: Sequence[str] = (),
    peers: Sequence[tuple[str, int]] = (),
    api: tuple[str, int] | None = ("127.0.0.1", 0),
    api_token: str | None = None,
    discovery: bool = True,
    name: str | None = None,
    durability: str = "full",
    seed: bytes | None = None,
    limits: Limits = Limits(),
    stall_timeout: float = STALL_TIMEOUT,
) -> AsyncIterator[Node]:
    """Run a node on ``home`` for the duration of the ``async with`` block.

    ``listen``: address for peers (None: do not listen). The default is every interface on
    :data:`DEFAULT_PORT`, because peers on the LAN must reach the node; tests, the demo and the
    benchmarks pass a loopback (or their own namespace's) address. ``interfaces``: addresses to
    run mDNS on (empty: every interface, for the same reason; pass addresses to confine it).
    ``peers``: static peers to keep dialling. ``api``: where to serve the local HTTP API (None:
    no API). Raises :class:`LocalProtocolError` if another process uses
    ``home``, :class:`TransportError` if the listen address is taken.
    """
    home = Path(home)
    with home_lock(home):
        config = read_config(home)
        endpoint = Endpoint(
            home,
            seed=seed,
            durability=durability,
            limits=limits,
            name=name if name is not None else str(config.get("name", "")),
        )
        try:
            node = Node(
                home,
                endpoint,
                listen=listen,
                interfaces=interfaces,
                peers=peers,
                discovery=discovery,
                stall_timeout=stall_timeout,
            )
            try:
                async with trio.open_nursery() as nursery:
                    await node._start(nursery, api, api_token)
                    try:
                        yield node
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # One failure (ours at start-up, or the caller's in the block) is raised as
                # itself rather than wrapped, so callers can catch it by type.
                sole = _sole_exception(group)
                if sole is None:
                    raise
                raise sole from None
            finally:
                node._flush_acks()
        finally:
            endpoint.close()


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


__all__ = [
    "DEFAULT_PORT",
    "Node",
    "home_lock",
    "now_ms",
    "open_node",
    "parse_hostport",
    "read_config",
    "write_config",
]
