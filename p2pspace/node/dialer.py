"""Whom the node dials, when, and where: dial targets, backoff, the address book, sightings.

Theory of operation. A *dial target* is somewhere to keep a connection to: a static ``--peer``
address, a member seen by discovery or remembered in the address book, an inviter. Each runs one
task (:meth:`Dialer._keep_dialling`) that waits while the peer is connected, dials when it is not,
and after a failed attempt sleeps a jittered, doubling delay (``backoff_min`` up to
``backoff_max``, each jittered down by up to half so that peers restarted together do not dial
in lockstep). A connection that opened is not yet a success: one that either side refuses
within :data:`STEADY_SECONDS` of opening -- a protocol or version error, a peer that keeps
sending what we refuse to the point of breaking the protocol -- counts as a failed attempt, so
such a peer is redialled with growing delays instead of in a loop. The delay starts again from
``backoff_min`` only after a connection that ended without a refusal, or lasted. For a peer
known by id, the endpoint with the larger id waits ``dial_grace`` before its first dial, so the
smaller id -- whose connection both ends would keep anyway -- usually dials alone.

A target for a peer (not a static address) is dropped once a connection to it ends while the
peer shares no space with us any more (it was removed, or this endpoint was): nobody keeps
dialling a space it left.

Only peers we share a space with (or that sponsor a join of ours) become targets from
discovery: anyone on the LAN can announce anything, and strangers must not grow our dial
targets. A sighting's addresses are merged *after* the ones that worked (a spoofed announcement
cannot cost us a member's real address; the key pin stops impersonation). A peer that was
dialled successfully is remembered in the home's address book and dialled again at the next
start.
"""

from __future__ import annotations

import logging
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pspace.errors import ErrorCode, P2PSpaceError, RemoteProtocolError
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.config import NodeConfig
from p2pspace.node.connections import Connections, PeerName
from p2pspace.node.discovery import PeerDiscovery, Sighting
from p2pspace.node.events import PeerSighted
from p2pspace.node.home import read_address_book, write_address_book
from p2pspace.node.network import Address, Network
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import SpaceBook
from p2pspace.node.transport import dial
from p2pspace.sync import invitations
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.syncstate import PeerInput

log = logging.getLogger("p2pspace.node")
STEADY_SECONDS = 30.0  # a connection refused sooner than this after opening was a failed attempt


@dataclass(slots=True, kw_only=True, eq=False)
class DialTarget:
    """Somewhere to dial: a static address, a discovered or remembered peer, an inviter."""

    key: str
    addresses: list[Address]
    peer: bytes | None = None
    static: bool = False
    attempts: int = 0
    last_error: str = ""
    wanted: bool = True
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    failures: int = 0  # dials failed in a row (a static target's warnings count them)


def peer_key(peer: bytes) -> str:
    """The dial-target key of a peer known by id."""
    return f"peer:{peer.hex()}"


class Dialer:
    """The node's dial targets and the tasks that keep them connected."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        home: Path,
        config: NodeConfig,
        network: Network,
        context: ssl.SSLContext,
        connections: Connections,
        peer_states: PeerStates,
        spaces: SpaceBook,
        changes: ChangeFeed,
        nursery: trio.Nursery,
    ) -> None:
        self.targets: dict[str, DialTarget] = {}
        self.address_book = read_address_book(home)
        self.discovery: PeerDiscovery | None = None
        self._endpoint = endpoint
        self._home = home
        self._config = config
        self._network = network
        self._context = context
        self._connections = connections
        self._peer_states = peer_states
        self._spaces = spaces
        self._changes = changes
        self._nursery = nursery
        self._rng = random.Random(config.jitter_seed)

    # -- targets --------------------------------------------------------------------------------

    def add_peer(self, host: str, port: int) -> None:
        """Dial ``host:port`` now and whenever the connection is lost."""
        self.ensure_target(f"addr:{host}:{port}", [(host, port)], None, static=True)

    def ensure_target(
        self, key: str, addresses: list[Address], peer: bytes | None, *, static: bool = False
    ) -> None:
        """Keep dialling ``addresses`` under ``key`` (merging them into an existing target)."""
        target = self.targets.get(key)
        if target is not None:
            # Addresses that worked stay first (an announcement could be spoofed; the key pin
            # stops impersonation, this stops it from costing us the real address).
            known = target.addresses[: invitations.MAX_ADDRESSES // 2]
            merged = known + [a for a in addresses if a not in known]
            target.addresses = merged[: invitations.MAX_ADDRESSES]
            target.wanted = True
            return
        target = DialTarget(key=key, addresses=list(addresses), peer=peer, static=static)
        self.targets[key] = target
        self._nursery.start_soon(self._keep_dialling, target)

    def drop_target(self, key: str) -> None:
        """Stop dialling the target (a connection it made stays)."""
        target = self.targets.pop(key, None)
        if target is not None:
            target.wanted = False
            target.scope.cancel()

    def dial_known_members(self) -> None:
        """Dial every member the address book knows an address of (at start-up)."""
        for peer, addresses in self.address_book.items():
            if self._spaces.shared_with(peer):
                self.ensure_target(peer_key(peer), list(addresses), peer)

    def remember(self, peer: bytes, address: Address) -> None:
        """Put ``address`` first in the peer's address-book entry."""
        known = self.address_book.get(peer, [])
        if known and known[0] == address:
            return
        self.address_book[peer] = [address] + [a for a in known if a != address]
        write_address_book(self._home, self.address_book)

    def _no_longer_wanted(self, target: DialTarget) -> bool:
        """Drop ``target`` if it is a peer that shares no space with us any more."""
        peer = target.peer
        if target.static or peer is None or self._spaces.wants(peer):
            return False
        log.info(
            "no longer dialling %s: no space shared any more", PeerName(self._endpoint, peer, None)
        )
        target.wanted = False
        if self.targets.get(target.key) is target:
            del self.targets[target.key]
        return True

    async def _keep_dialling(self, target: DialTarget) -> None:
        connections = self._connections.by_peer
        wait_until = self._changes.wait_until
        delay = self._config.backoff_min
        with target.scope:
            while target.wanted:
                peer = target.peer
                if peer is not None and peer in connections:
                    held = connections[peer]
                    await wait_until(lambda p=peer: p not in connections)  # type: ignore[misc]
                    if self._no_longer_wanted(target):
                        return
                    if not held.refused_within(STEADY_SECONDS):
                        delay = self._config.backoff_min
                        continue
                    # The peer dialled us and one side refused the other: no redial at once.
                    await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._config.backoff_max)
                    continue
                first = not target.static and target.attempts == 0
                if peer is not None and first and self._endpoint.endpoint_id > peer:
                    # Let the smaller id dial first; dial ourselves only if it does not.
                    with trio.move_on_after(self._config.dial_grace):
                        await wait_until(lambda p=peer: p in connections)  # type: ignore[misc]
                    if peer in connections:
                        continue
                host, port = target.addresses[target.attempts % len(target.addresses)]
                target.attempts += 1
                if peer is not None:
                    self._peer_states.feed_all(self._spaces.shared_with(peer), peer, PeerInput.DIAL)
                try:
                    conn = await dial(
                        host,
                        port,
                        identity=self._endpoint.identity,
                        context=self._context,
                        expected_peer=peer,
                        network=self._network,
                    )
                except P2PSpaceError as exc:
                    target.last_error = str(exc)
                    if isinstance(exc, RemoteProtocolError) and (
                        exc.code is ErrorCode.UNSUPPORTED_VERSION
                    ):
                        self._connections.log_limits.log(
                            logging.WARNING,
                            (target.key, "version"),
                            "cannot sync with %s:%d (%s): one of you must upgrade p2pspace",
                            host,
                            port,
                            exc,
                        )
                    else:
                        log.debug("dial %s:%d failed: %s", host, port, exc)
                    target.failures += 1
                    if target.static:
                        self._warn_unreachable(target, host, port, exc, delay)
                    if peer is not None:
                        shared = self._spaces.shared_with(peer)
                        self._peer_states.feed_all(shared, peer, PeerInput.CLOSED)
                    if "is this endpoint itself" in str(exc):
                        self.targets.pop(target.key, None)
                        return
                else:
                    if target.static and target.failures:
                        self._connections.log_limits.log(
                            logging.INFO,
                            (target.key, "reached"),
                            "reached %s:%d (given with --peer) after all",
                            host,
                            port,
                        )
                    target.failures = 0
                    target.last_error = ""
                    target.peer = conn.peer
                    if target.static or self._spaces.wants(conn.peer):
                        self.remember(conn.peer, (host, port))
                    if (host, port) in target.addresses:
                        target.addresses.remove((host, port))
                    target.addresses.insert(0, (host, port))
                    ended = await self._connections.run(conn)
                    if not target.wanted or self._no_longer_wanted(target):
                        return
                    if ended is None or not ended.refused_within(STEADY_SECONDS):
                        delay = self._config.backoff_min
                        continue
                    target.last_error = ended.error or str(ended.session.error)
                    log.debug("%s:%d refused soon after opening: %s", host, port, target.last_error)
                if self._no_longer_wanted(target):
                    return
                await trio.sleep(delay * self._rng.uniform(0.5, 1.0))
                delay = min(delay * 2, self._config.backoff_max)

    def _warn_unreachable(
        self, target: DialTarget, host: str, port: int, exc: P2PSpaceError, delay: float
    ) -> None:
        """A static peer (``--peer``) did not answer: a warning once per backoff cycle -- at the
        first failure after a success (or at start), and once more when the retries have
        slowed to their slowest -- and debug lines in between. Each is also limited to a line a
        minute (then a count), so a peer that answers and drops again and again stays quiet."""
        longest = self._config.backoff_max
        limits = self._connections.log_limits  # a peer that flaps: a line a minute, then counts
        if target.failures == 1:
            limits.log(
                logging.WARNING,
                (target.key, "unreachable"),
                "cannot reach %s:%d (given with --peer): %s; trying again, less and less often "
                "(at most every %g s)",
                host,
                port,
                exc,
                longest,
            )
        elif delay < longest <= delay * 2:
            limits.log(
                logging.WARNING,
                (target.key, "still unreachable"),
                "still cannot reach %s:%d (given with --peer): %s; trying every %g s from now on",
                host,
                port,
                exc,
                longest,
            )

    # -- discovery ------------------------------------------------------------------------------

    def sighting(self, peer: bytes) -> Sighting | None:
        """Where discovery sees ``peer`` now, if it does."""
        return self.discovery.find(peer) if self.discovery is not None else None

    async def follow(self, discovery: PeerDiscovery) -> None:
        """Act on ``discovery``'s sightings until its stream ends (and look peers up in it)."""
        self.discovery = discovery
        async for sighting in discovery.events:
            self.on_sighting(sighting)

    def on_sighting(self, sighting: Sighting) -> None:
        """A peer appeared, changed address or went."""
        peer = sighting.endpoint
        key = peer_key(peer)
        if sighting.gone:
            log.info("%s left the network", PeerName(self._endpoint, peer, None))
            # A member of a shared space stays a dial target (it may only be partitioned away
            # and mDNS may not announce it again soon); others are forgotten.
            member = bool(self._spaces.shared_with(peer))
            if key in self.targets and not member and peer not in self._connections.by_peer:
                self.drop_target(key)
            self._changes.announce(PeerSighted(peer=peer, present=False))
            return
        where = ", ".join(f"{h}:{p}" for h, p in sighting.addresses)
        log.info("found %s on the network at %s", PeerName(self._endpoint, peer, None), where)
        if self._spaces.wants(peer):
            self.ensure_target(key, list(sighting.addresses), peer)
        self._changes.announce(PeerSighted(peer=peer, present=True))

    def dial_discovered_members(self) -> None:
        """Dial peers seen earlier that have become members since (run by housekeeping)."""
        if self.discovery is None:
            return
        self.discovery.rematch()  # announcements of peers whose ids were not known yet
        for peer, seen in list(self.discovery.peers.items()):
            key = peer_key(peer)
            if key not in self.targets and self._spaces.wants(peer):
                self.ensure_target(key, list(seen.addresses), peer)


__all__ = ["DialTarget", "Dialer", "peer_key"]
