"""The trio edge: a running endpoint on a real network.

This layer decides how an endpoint meets the world: its home folder (:mod:`.home`), TLS and the
key proof on each connection (:mod:`.tls`, :mod:`.transport`), mDNS (:mod:`.discovery`), which
connections are admitted, dialled and kept, and the events and views a program sees. It drives
the sans-IO :mod:`p2pspace.sync` endpoint and sessions from one trio thread.

May import: :mod:`p2pspace.core`, :mod:`p2pspace.sync`, :mod:`p2pspace.engines`,
:mod:`p2pspace.tools`, :mod:`p2pspace.errors`, trio, zeroconf, ssl. Never :mod:`p2pspace.app`.

The names below load on first use, so ``import p2pspace.node.home`` (which the command line
needs) does not pull in trio. The node's modules, by what each decides: :mod:`.config` (the
knobs), :mod:`.clock` (wall time), :mod:`.events` and :mod:`.views` (what programs see),
:mod:`.changes` (who hears of changes), :mod:`.spaces`, :mod:`.peer_states`, :mod:`.acks`,
:mod:`.connections` (one connection per peer pair), :mod:`.admission` (where a connection is
admitted), :mod:`.dialer`, :mod:`.joining` (invitations), :mod:`.network` (where streams come
from), :mod:`.node` (the facade) and :mod:`.runtime` (:func:`open_node`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pspace.node.clock import SYSTEM_CLOCK, Clock, SystemClock
    from p2pspace.node.config import DEFAULT_PORT, NodeConfig, parse_hostport
    from p2pspace.node.connections import PeerConnection
    from p2pspace.node.discovery import PeerDiscovery, Sighting
    from p2pspace.node.events import NodeEvent
    from p2pspace.node.network import Network, StreamListener, TcpNetwork
    from p2pspace.node.node import Node
    from p2pspace.node.runtime import open_node

_EXPORTS = {
    "DEFAULT_PORT": "p2pspace.node.config",
    "NodeConfig": "p2pspace.node.config",
    "parse_hostport": "p2pspace.node.config",
    "SYSTEM_CLOCK": "p2pspace.node.clock",
    "Clock": "p2pspace.node.clock",
    "SystemClock": "p2pspace.node.clock",
    "PeerConnection": "p2pspace.node.connections",
    "PeerDiscovery": "p2pspace.node.discovery",
    "Sighting": "p2pspace.node.discovery",
    "NodeEvent": "p2pspace.node.events",
    "Network": "p2pspace.node.network",
    "StreamListener": "p2pspace.node.network",
    "TcpNetwork": "p2pspace.node.network",
    "Node": "p2pspace.node.node",
    "open_node": "p2pspace.node.runtime",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'p2pspace.node' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_PORT",
    "SYSTEM_CLOCK",
    "Clock",
    "Network",
    "Node",
    "NodeConfig",
    "NodeEvent",
    "PeerConnection",
    "PeerDiscovery",
    "Sighting",
    "StreamListener",
    "SystemClock",
    "TcpNetwork",
    "open_node",
    "parse_hostport",
]
