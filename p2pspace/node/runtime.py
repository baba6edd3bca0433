"""Running a node: :func:`open_node`, its start-up order, its ticker, its shutdown.

Theory of operation. ``async with open_node(home, config) as node`` takes the home folder's lock
(one process per home), opens the endpoint's store, loads every space and starts, in one
nursery and in this order: the listeners (so an invitation made at once has an address), the
ticker, discovery (mDNS unless another :class:`~p2pspace.node.discovery.PeerDiscovery` is
given; it needs the listening port to advertise), the static peers' dial targets and the
address book's members. A failure at start-up -- the port is taken -- is raised as itself.

The ticker runs every ``tick_seconds`` of trio's clock: the sessions' periodic duties (acks,
gap repair), sync states brought up to what the sessions show, every ``housekeeping_ticks``
ticks the housekeeping (dial discovered members, close idle strangers), acknowledgements
written to the store, and every writer kicked.

Leaving the ``async with`` cancels everything: connections close, discovery unregisters,
acknowledgements are flushed, the store closes, the lock is released.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import trio

from p2pspace.node.clock import SYSTEM_CLOCK, Clock
from p2pspace.node.config import NodeConfig
from p2pspace.node.discovery import Discovery, PeerDiscovery, local_addresses
from p2pspace.node.home import check_private, home_lock, open_endpoint, read_config
from p2pspace.node.joining import ANY_HOST
from p2pspace.node.network import TCP, Network
from p2pspace.node.node import Node
from p2pspace.tools.plugin import ToolPlugin, installed_plugins


@contextlib.asynccontextmanager
async def open_node(
    home: Path,
    config: NodeConfig | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    network: Network = TCP,
    discovery: PeerDiscovery | None = None,
    seed: bytes | None = None,
    tools: Mapping[str, ToolPlugin] | None = None,
) -> AsyncIterator[Node]:
    """Run a node on ``home`` for the duration of the ``async with`` block.

    ``config``: the knobs (default: production settings, listening on every interface).
    ``clock``: wall time. ``network``: where streams come from (TCP). ``discovery``: used
    instead of the mDNS one ``config.discovery`` would start. ``seed``: makes a newly created
    identity deterministic (tests, simulations). ``tools``: the tools to load (default: every
    installed one, :func:`~p2pspace.tools.plugin.installed_plugins`). The node serves no HTTP
    API: a program that wants one starts it beside the node
    (``p2pspace.app.api.serve_api(node, ...)``).

    Raises :class:`UnsafePermissionsError` if other users can read ``home`` or its key,
    :class:`LocalProtocolError` if another process uses ``home``,
    :class:`TransportError` if the listen address is taken, :class:`StorageError` if the home
    folder cannot be used.
    """
    home = Path(home)
    config = config or NodeConfig()
    check_private(home)  # before anything is written there
    with home_lock(home):
        name = config.name if config.name is not None else str(read_config(home).get("name", ""))
        endpoint = open_endpoint(
            home, seed=seed, durability=config.durability, limits=config.limits, name=name
        )
        node: Node | None = None
        try:
            try:
                async with trio.open_nursery() as nursery:
                    node = Node(
                        home,
                        endpoint,
                        config,
                        clock=clock,
                        network=network,
                        nursery=nursery,
                        tools=installed_plugins() if tools is None else tools,
                    )
                    await _start(node, nursery, discovery)
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
                if node is not None:
                    node.acks.flush()
                    node.last_seen.note(_members_connected(node), node.clock.now_ms())
                    node.last_seen.flush(everything=True)
        finally:
            endpoint.close()


async def _start(node: Node, nursery: trio.Nursery, discovery: PeerDiscovery | None) -> None:
    config = node.config
    if config.listen is not None:
        await nursery.start(node.admission.listen, *config.listen)
    nursery.start_soon(_tick, node)
    listening = node.listen_addresses
    if discovery is None and config.discovery and listening:
        advertise = list(config.interfaces) or [h for h, _p in listening if h not in ANY_HOST]
        discovery = Discovery(
            node.endpoint_id,
            port=listening[0][1],
            interfaces=config.interfaces,
            advertise=advertise or local_addresses(),
            known=lambda: _known_peers(node),
        )
    if discovery is not None:
        node.dialer.discovery = discovery
        await nursery.start(discovery.run)
        nursery.start_soon(node.dialer.follow, discovery)
    for host, port in config.peers:
        node.add_peer(host, port)
    node.dialer.dial_known_members()


def _known_peers(node: Node) -> set[bytes]:
    """The endpoint ids whose mDNS tags this node recognises: members of its spaces and the
    peers in its address book (an inviter is looked up by id when a join starts)."""
    known = set(node.dialer.address_book)
    for replica in node.endpoint.replicas.values():
        known.update(replica.member_ids())
    return known


async def _tick(node: Node) -> None:
    config = node.config
    ticks = 0
    while True:
        await trio.sleep(config.tick_seconds)
        node.endpoint.tick()
        node.conns.observe_all()
        ticks += 1
        if ticks % config.housekeeping_ticks == 0:
            node.dialer.dial_discovered_members()
            node.admission.close_idle_strangers()
            node.make_due_checkpoints()
            node.compact_due_spaces()
        node.acks.flush()
        node.last_seen.note(_members_connected(node), node.clock.now_ms())
        node.last_seen.flush()
        node.conns.kick()
        node.changes.announce()


def _members_connected(node: Node) -> list[bytes]:
    """The connected peers that share a space with this endpoint: whose "last seen" is kept
    (a stranger's is not: anyone on the LAN could make the table grow, key after key)."""
    return [peer for peer in node.conns.by_peer if node.space_book.shared_with(peer)]


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


__all__ = ["open_node"]
