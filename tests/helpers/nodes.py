"""Nodes on loopback and hand-driven TLS clients, shared by the node tests."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from p2pspace.core.identity import Identity
from p2pspace.node.clock import SYSTEM_CLOCK, Clock
from p2pspace.node.config import NodeConfig
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.node.tls import make_certificate

LOOPBACK = ("127.0.0.1", 0)


def loopback_config(name: str, **knobs: Any) -> NodeConfig:
    """A node config on a free loopback port, without mDNS; ``knobs`` override fields."""
    return NodeConfig(**{"listen": LOOPBACK, "discovery": False, "name": name, **knobs})


@contextlib.asynccontextmanager
async def node_at(
    home: Path, name: str, *, seed: bytes | None = None, clock: Clock = SYSTEM_CLOCK, **knobs: Any
) -> AsyncIterator[Node]:
    """A node on ``home`` listening on loopback (``knobs``: NodeConfig fields to change)."""
    async with open_node(home, loopback_config(name, **knobs), seed=seed, clock=clock) as node:
        yield node


def address(node: Node) -> tuple[str, int]:
    """Where ``node`` listens."""
    return node.listen_addresses[0]


def attacker_context(tmp: Path, identity: Identity) -> ssl.SSLContext:
    """A TLS client context with ``identity``'s own certificate and no checks, as the node's
    own client has (the test then speaks the wire format by hand)."""
    pem = tmp / f"attacker-{identity.endpoint_id.hex()}.pem"
    pem.write_bytes(make_certificate(identity))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(pem))
    return context


__all__ = ["LOOPBACK", "address", "attacker_context", "loopback_config", "node_at"]
