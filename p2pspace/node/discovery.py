"""mDNS discovery with zeroconf, bridged into trio.

Each node advertises ``<id>._p2pspace._tcp.local.`` with its endpoint id and protocol version
in TXT -- never a space name or id -- on the interfaces the user chose (zeroconf binds its
sockets to exactly those addresses; nothing is sent elsewhere). zeroconf runs its own threads:
its browser callbacks only hand the service name to trio (``trio.from_thread.run_sync`` onto a
bounded channel); resolving, registering and closing run in worker threads via
``trio.to_thread``. Peers appear as :class:`Sighting` events and disappear as ``gone`` events.

The node uses any discovery through :class:`PeerDiscovery` -- what it needs of
:class:`Discovery`: ``run`` started with ``nursery.start``, the ``peers`` seen now and the
``events`` stream of sightings -- so tests can hand it a
:class:`p2pspace.testing.FakeDiscovery` instead of mDNS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Mapping, Sequence
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


def service_name(endpoint: bytes) -> str:
    return f"{endpoint.hex()}.{SERVICE_TYPE}"


def parse_info(info: ServiceInfo) -> Sighting | None:
    """A sighting from a resolved service, or None if its TXT is not ours."""
    props = info.properties or {}
    raw_id, raw_version = props.get(b"id"), props.get(b"v")
    if raw_id is None or raw_version is None or info.port is None:
        return None
    try:
        endpoint = bytes.fromhex(raw_id.decode("ascii"))
        version = int(raw_version.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if len(endpoint) != 16:
        return None
    addresses = tuple((address, int(info.port)) for address in info.parsed_addresses())
    return Sighting(endpoint=endpoint, addresses=addresses, version=version)


class Discovery:
    """Advertise this endpoint and report peers. Use :meth:`run` with ``nursery.start``."""

    def __init__(
        self,
        endpoint: bytes,
        *,
        port: int,
        interfaces: Sequence[str],
        advertise: Sequence[str] = (),
    ) -> None:
        """``interfaces``: addresses to bind mDNS to (empty: every interface).
        ``advertise``: addresses to publish for this endpoint (default: ``interfaces``)."""
        self.endpoint = endpoint
        self.port = port
        self.interfaces = list(interfaces)
        self.advertise = list(advertise or interfaces)
        self.peers: dict[bytes, Sighting] = {}
        self._send, self.events = trio.open_memory_channel[Sighting](EVENT_QUEUE)
        self._zc: Zeroconf | None = None

    def _make_zeroconf(self) -> Zeroconf:
        if self.interfaces:
            v6 = any(ipaddress.ip_address(a).version == 6 for a in self.interfaces)
            v4 = any(ipaddress.ip_address(a).version == 4 for a in self.interfaces)
            version = IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only
            return Zeroconf(interfaces=list(self.interfaces), ip_version=version)
        return Zeroconf(ip_version=IPVersion.V4Only)

    def _info(self) -> ServiceInfo:
        addresses = [socket.inet_pton(_family(a), a) for a in self.advertise]
        return ServiceInfo(
            SERVICE_TYPE,
            service_name(self.endpoint),
            port=self.port,
            properties={"id": self.endpoint.hex(), "v": str(PROTOCOL_VERSION)},
            server=f"p2pspace-{self.endpoint.hex()}.local.",
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
        info = self._info()
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
                    await trio.sleep_forever()
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
        own = service_name(self.endpoint)
        async for name, gone in names:
            if name == own:
                continue
            if gone:
                for endpoint, seen in list(self.peers.items()):
                    if service_name(endpoint) == name:
                        del self.peers[endpoint]
                        self._emit(
                            Sighting(
                                endpoint=endpoint, addresses=(), version=seen.version, gone=True
                            )
                        )
                continue
            info: Any = await trio.to_thread.run_sync(_resolve, zc, name, abandon_on_cancel=True)
            found = parse_info(info) if info is not None else None
            if found is None or found.endpoint == self.endpoint:
                continue
            if found.version != PROTOCOL_VERSION:
                log.info("ignoring %s: protocol version %d", name, found.version)
                continue
            if self.peers.get(found.endpoint) != found:
                self.peers[found.endpoint] = found
                self._emit(found)

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
