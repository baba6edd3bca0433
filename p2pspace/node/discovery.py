"""mDNS discovery with zeroconf, bridged into trio.

Each node advertises ``<tag>._p2pspace._tcp.local.`` with its protocol version in TXT -- never
its endpoint id, a space name or id -- on the interfaces the user chose (zeroconf binds its
sockets to exactly those addresses; nothing is sent elsewhere). The *tag* is a keyed hash of
the endpoint id and the UTC day (:func:`discovery_tag`), so a stranger on the LAN sees a value
that changes every day and cannot link an endpoint across days or networks, while a peer that
knows the id -- a member of a shared space, an address-book entry, an inviter -- computes the
same tag and recognises it (``known`` ids; yesterday's and tomorrow's tags are matched too, for
clocks near midnight). A name whose tag matches no known id is kept, bounded, and matched again
when :meth:`Discovery.find` is asked for an id learnt since (a join looking for its inviter).

zeroconf runs its own threads: its browser callbacks only hand the service name to trio
(``trio.from_thread.run_sync`` onto a bounded channel); resolving, registering and closing run
in worker threads via ``trio.to_thread``. Peers appear as :class:`Sighting` events and disappear
as ``gone`` events. The advertisement is renewed when the day, and with it the tag, changes.

The node uses any discovery through :class:`PeerDiscovery` -- what it needs of
:class:`Discovery`: ``run`` started with ``nursery.start``, the ``peers`` seen now, ``find`` and
the ``events`` stream of sightings -- so tests can hand it a
:class:`p2pspace.testing.FakeDiscovery` instead of mDNS.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from p2pspace.sync.messages import PROTOCOL_VERSION

SERVICE_TYPE = "_p2pspace._tcp.local."
RESOLVE_TIMEOUT_MS = 3000
EVENT_QUEUE = 256
SHUTDOWN_TIMEOUT = 5.0
TAG_SIZE = 16
TAG_CONTEXT = b"p2pspace-mdns-tag-v1\0"
DAY_SECONDS = 86_400
MAX_UNMATCHED = 256  # names seen whose tag matches no id we know (yet)

log = logging.getLogger("p2pspace.node.discovery")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """A peer seen on the network (``addresses`` empty and ``gone`` True when it left)."""

    endpoint: bytes
    addresses: tuple[tuple[str, int], ...]
    version: int
    gone: bool = False


class PeerDiscovery(Protocol):
    """What a node uses of a discovery service."""

    @property
    def peers(self) -> Mapping[bytes, Sighting]:
        """Peers present now, by endpoint id."""
        ...

    @property
    def events(self) -> trio.MemoryReceiveChannel[Sighting]:
        """Sightings as they happen (a peer appeared or changed, or went: ``gone``)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Advertise and watch until cancelled; ``started`` once running. Never raises for an
        unavailable network (it logs and keeps quiet instead)."""
        ...

    def find(self, endpoint: bytes) -> Sighting | None:
        """Where ``endpoint`` is seen now, if it is (also one first seen before its id was
        known here)."""
        ...

    def rematch(self) -> None:
        """Recognise announcements seen before their endpoints' ids were known here (a peer
        that became a member since); each one recognised is a new sighting."""
        ...


def discovery_tag(endpoint: bytes, day: int) -> bytes:
    """What ``endpoint`` is announced as on UTC day ``day`` (days since the epoch)."""
    message = TAG_CONTEXT + day.to_bytes(4, "big")
    return hmac.new(endpoint, message, hashlib.sha256).digest()[:TAG_SIZE]


def service_name(tag: bytes) -> str:
    return f"{tag.hex()}.{SERVICE_TYPE}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """A resolved service of ours: its tag, addresses and protocol version."""

    tag: bytes
    addresses: tuple[tuple[str, int], ...]
    version: int


def parse_info(info: ServiceInfo) -> Announcement | None:
    """An announcement from a resolved service, or None if it is not one of ours."""
    props = info.properties or {}
    raw_version = props.get(b"v")
    label = info.name.removesuffix("." + SERVICE_TYPE) if info.name else ""
    if raw_version is None or info.port is None:
        return None
    try:
        tag = bytes.fromhex(label)
        version = int(raw_version.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if len(tag) != TAG_SIZE:
        return None
    addresses = tuple((address, int(info.port)) for address in info.parsed_addresses())
    return Announcement(tag=tag, addresses=addresses, version=version)


class Discovery:
    """Advertise this endpoint and report peers. Use :meth:`run` with ``nursery.start``."""

    def __init__(
        self,
        endpoint: bytes,
        *,
        port: int,
        interfaces: Sequence[str],
        advertise: Sequence[str] = (),
        known: Callable[[], Iterable[bytes]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``interfaces``: addresses to bind mDNS to (empty: every interface).
        ``advertise``: addresses to publish for this endpoint (default: ``interfaces``).
        ``known``: the endpoint ids this node would recognise (members of its spaces, its
        address book); ``clock``: wall time, for the day of the tag."""
        self.endpoint = endpoint
        self.port = port
        self.interfaces = list(interfaces)
        self.advertise = list(advertise or interfaces)
        self.peers: dict[bytes, Sighting] = {}
        self._send, self.events = trio.open_memory_channel[Sighting](EVENT_QUEUE)
        self._zc: Zeroconf | None = None
        self._known = known
        self._clock = clock
        self._names: dict[str, bytes] = {}  # service name -> endpoint id it was matched to
        self._unmatched: dict[str, Announcement] = {}
        self._tags: tuple[int, dict[bytes, bytes]] = (-1, {})  # (day, tag -> endpoint id)

    def day(self) -> int:
        return int(self._clock() // DAY_SECONDS)

    def find(self, endpoint: bytes) -> Sighting | None:
        seen = self.peers.get(endpoint)
        if seen is not None:
            return seen
        tags = {discovery_tag(endpoint, d) for d in self._days()}
        for name, announced in list(self._unmatched.items()):
            if announced.tag in tags:
                del self._unmatched[name]
                return self._adopt(name, endpoint, announced)
        return None

    def rematch(self) -> None:
        if not self._unmatched:
            return
        self._tags = (-1, {})  # the ids known may have grown
        for name, announced in list(self._unmatched.items()):
            endpoint = self._match(announced.tag)
            if endpoint is not None:
                del self._unmatched[name]
                self._adopt(name, endpoint, announced)

    def _days(self) -> tuple[int, int, int]:
        today = self.day()
        return (today - 1, today, today + 1)

    def _match(self, tag: bytes) -> bytes | None:
        """The known endpoint id announced as ``tag`` (around today), or None."""
        day, table = self._tags
        # Rebuilt for a new day, or at most once a housekeeping round (rematch resets it):
        # a flood of strangers' announcements must not cost a hash per id each.
        if day != self.day():
            table = {
                discovery_tag(peer, d): peer
                for peer in self._known()
                if peer != self.endpoint
                for d in self._days()
            }
            self._tags = (self.day(), table)
        return table.get(tag)

    def _adopt(self, name: str, endpoint: bytes, announced: Announcement) -> Sighting:
        found = Sighting(
            endpoint=endpoint, addresses=announced.addresses, version=announced.version
        )
        self._names[name] = endpoint
        if self.peers.get(endpoint) != found:
            self.peers[endpoint] = found
            self._emit(found)
        return found

    def _make_zeroconf(self) -> Zeroconf:
        if self.interfaces:
            v6 = any(ipaddress.ip_address(a).version == 6 for a in self.interfaces)
            v4 = any(ipaddress.ip_address(a).version == 4 for a in self.interfaces)
            version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
            return Zeroconf(interfaces=list(self.interfaces), ip_version=version)
        return Zeroconf(ip_version=IPVersion.V4Only)

    def _info(self, day: int) -> ServiceInfo:
        addresses = [socket.inet_pton(_family(a), a) for a in self.advertise]
        tag = discovery_tag(self.endpoint, day)
        return ServiceInfo(
            SERVICE_TYPE,
            service_name(tag),
            port=self.port,
            properties={"v": str(PROTOCOL_VERSION)},
            server=f"p2pspace-{tag.hex()}.local.",
            addresses=addresses or None,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, browse and report until cancelled; unregisters and closes zeroconf."""
        try:
            zc = await trio.to_thread.run_sync(self._make_zeroconf)
        except (OSError, ValueError, ZeroconfError) as exc:
            log.error("mDNS discovery unavailable: %s", exc)
            task_status.started()
            await trio.sleep_forever()
            return
        self._zc = zc
        info = self._info(self.day())
        token = trio.lowlevel.current_trio_token()
        names_send, names_receive = trio.open_memory_channel[tuple[str, bool]](EVENT_QUEUE)
        browser: ServiceBrowser | None = None

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            gone = state_change is ServiceStateChange.Removed
            # Overloaded or shutting down: dropped; the next announcement repeats it.
            with contextlib.suppress(
                trio.WouldBlock, trio.RunFinishedError, trio.ClosedResourceError
            ):
                trio.from_thread.run_sync(names_send.send_nowait, (name, gone), trio_token=token)

        try:
            async with trio.open_nursery() as nursery:
                registered = False
                try:
                    await trio.to_thread.run_sync(zc.register_service, info)
                    registered = True
                except (ZeroconfError, OSError) as exc:
                    log.error("cannot advertise on mDNS: %s", exc)
                browser = await trio.to_thread.run_sync(
                    lambda: ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
                )
                task_status.started()
                nursery.start_soon(self._resolve_loop, zc, names_receive)
                try:
                    while True:
                        # A new day, a new tag: the announcement is renewed under it.
                        await trio.sleep(DAY_SECONDS - self._clock() % DAY_SECONDS + 1)
                        renewed = self._info(self.day())
                        try:
                            if registered:
                                await trio.to_thread.run_sync(zc.unregister_service, info)
                            info, registered = renewed, False
                            await trio.to_thread.run_sync(zc.register_service, info)
                            registered = True
                        except (ZeroconfError, OSError) as exc:
                            log.error("cannot renew the mDNS announcement: %s", exc)
                finally:
                    # Bounded: a zeroconf that hangs on the way out must not hang the node.
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                        await trio.to_thread.run_sync(
                            self._shutdown,
                            zc,
                            browser,
                            info if registered else None,
                            abandon_on_cancel=True,
                        )
        finally:
            self._zc = None
            await self._send.aclose()

    @staticmethod
    def _shutdown(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo | None) -> None:
        try:
            if browser is not None:
                browser.cancel()
            if info is not None:
                zc.unregister_service(info)
        except (ZeroconfError, OSError, RuntimeError) as exc:
            log.warning("mDNS shutdown: %s", exc)
        finally:
            zc.close()

    async def _resolve_loop(
        self, zc: Zeroconf, names: trio.MemoryReceiveChannel[tuple[str, bool]]
    ) -> None:
        async for name, gone in names:
            if name in {service_name(discovery_tag(self.endpoint, d)) for d in self._days()}:
                continue  # our own announcement
            if gone:
                self.heard(name, None)
                continue
            info: Any = await trio.to_thread.run_sync(_resolve, zc, name, abandon_on_cancel=True)
            announced = parse_info(info) if info is not None else None
            if announced is not None:
                self.heard(name, announced)

    def heard(self, name: str, announced: Announcement | None) -> None:
        """The service ``name`` was resolved to ``announced``, or went (None)."""
        if announced is None:
            self._unmatched.pop(name, None)
            endpoint = self._names.pop(name, None)
            seen = self.peers.get(endpoint) if endpoint is not None else None
            if endpoint is not None and seen is not None:
                del self.peers[endpoint]
                self._emit(
                    Sighting(endpoint=endpoint, addresses=(), version=seen.version, gone=True)
                )
            return
        if announced.version != PROTOCOL_VERSION:
            log.info("ignoring %s: protocol version %d", name, announced.version)
            return
        endpoint = self._match(announced.tag)
        self._unmatched.pop(name, None)
        if endpoint is not None:
            self._adopt(name, endpoint, announced)
            return
        # Nobody we know (yet): kept, bounded, for find() and rematch() to match later.
        self._unmatched[name] = announced
        while len(self._unmatched) > MAX_UNMATCHED:
            del self._unmatched[next(iter(self._unmatched))]

    def _emit(self, sighting: Sighting) -> None:
        try:
            self._send.send_nowait(sighting)
        except trio.WouldBlock:
            log.warning("discovery events are not being consumed; dropped one")


def _resolve(zc: Zeroconf, name: str) -> ServiceInfo | None:
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=RESOLVE_TIMEOUT_MS)
    except (ZeroconfError, OSError, RuntimeError):
        return None
    return info


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def local_addresses() -> list[str]:
    """IPv4 addresses of this host's interfaces, loopback last (for invitations and mDNS)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    return sorted(found, key=lambda a: (ipaddress.ip_address(a).is_loopback, a))


__all__ = ["SERVICE_TYPE", "Discovery", "PeerDiscovery", "Sighting", "local_addresses"]
