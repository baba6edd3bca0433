"""Nodes for tests: a real node on a :class:`MemoryNetwork`, with a wall clock the test sets.

Theory of operation. :func:`open_test_node` opens the same node :func:`~p2pspace.node.open_node`
opens -- same store, TLS, handshake, sessions, dialler and admission -- but on an in-process
network host and with a :class:`ManualClock`, and without mDNS (a
:class:`~p2pspace.testing.FakeDiscovery` can stand in). Run under trio's
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture), every timer of the
node -- ticks, backoff, stall deadlines, stranger grace -- passes in virtual time, so a test can
let a minute go by in milliseconds and still assert on exact behaviour, never on timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from p2pspace.errors import LocalProtocolError
from p2pspace.node.clock import Clock
from p2pspace.node.config import DEFAULT_PORT, NodeConfig
from p2pspace.node.discovery import PeerDiscovery
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.testing.memory_network import WILDCARDS, MemoryNetwork

START_MS = 1_700_000_000_000  # 2023-11-14: the wall time a ManualClock starts at


@dataclass(slots=True, kw_only=True)
class ManualClock:
    """A wall clock that stands still until the test moves it."""

    ms: int = START_MS

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds (LocalProtocolError if negative)."""
        if ms < 0:
            raise LocalProtocolError("a clock does not go back")
        self.ms += ms


@contextlib.asynccontextmanager
async def open_test_node(
    home: Path,
    *,
    network: MemoryNetwork,
    discovery: PeerDiscovery | None = None,
    config: NodeConfig | None = None,
    clock: Clock | None = None,
    seed: bytes | None = None,
    host: str | None = None,
) -> AsyncIterator[Node]:
    """A node on ``home`` attached to ``network`` for the duration of the ``async with``.

    ``host``: the node's address on the network (default: ``config.listen``'s host if it names
    one, else a new host). ``config``: default listens on ``host`` at the default port; mDNS is
    always off (pass ``discovery``, e.g. a FakeDiscovery). ``clock``: default a new
    :class:`ManualClock`. ``seed``: the identity's seed for a new home (default: derived from
    the home folder's name, so a test's ids are the same on every run).

    Raises what :func:`~p2pspace.node.open_node` raises.
    """
    config = config or NodeConfig(listen=("0.0.0.0", DEFAULT_PORT))
    if host is None and config.listen is not None and config.listen[0] not in WILDCARDS:
        host = config.listen[0]
    on = network.host(host)
    if config.listen is not None and config.listen[0] in WILDCARDS:
        config = dataclasses.replace(config, listen=(on.name, config.listen[1]))
    config = dataclasses.replace(config, discovery=False)
    async with open_node(
        home,
        config,
        clock=clock if clock is not None else ManualClock(),
        network=on,
        discovery=discovery,
        seed=seed if seed is not None else b"test-node:" + Path(home).name.encode(),
    ) as node:
        yield node


__all__ = ["START_MS", "ManualClock", "open_test_node"]
