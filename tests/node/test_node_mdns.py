"""Three nodes on loopback find each other by mDNS bound to 127.0.0.1 and converge."""

from __future__ import annotations

import contextlib
import random
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2pspace.node.node import Node
from tests.helpers import TIMEOUT
from tests.helpers.nodes import node_at


def _open(home: Path, name: str) -> contextlib.AbstractAsyncContextManager[Node]:
    return node_at(home, name, interfaces=("127.0.0.1",), discovery=True)


def _same(nodes: list[Node], space: bytes) -> bool:
    digests = {(n.replica(space).order_digest(), n.replica(space).state_digest()) for n in nodes}
    return len(digests) == 1


async def _converged(nodes: list[Node], space: bytes) -> None:
    await nodes[0].wait_until(lambda: _same(nodes, space), timeout=TIMEOUT)


async def test_three_nodes_discover_edit_concurrently_and_converge(tmp_path: Path) -> None:
    rng = random.Random(5)
    async with AsyncExitStack() as stack:
        a: Node = await stack.enter_async_context(_open(tmp_path / "a", "ann"))
        b: Node = await stack.enter_async_context(_open(tmp_path / "b", "bob"))
        space = a.create_space("lan").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        c_stack = AsyncExitStack()
        c: Node = await c_stack.enter_async_context(_open(tmp_path / "c", "cy"))
        try:
            await c.join(a.invite(space), timeout=TIMEOUT)
            nodes = [a, b, c]
            # B and C learnt each other's address only from mDNS. Whichever saw the other first
            # dials, so the connection can exist before the other side's sighting arrives: wait
            # for both sightings, not only for the connection.
            seen_b, seen_c = b.discovery, c.discovery
            assert seen_b is not None and seen_c is not None
            await a.wait_until(
                lambda: (
                    c.endpoint_id in b.connections
                    and b.endpoint_id in c.connections
                    and c.endpoint_id in seen_b.peers
                    and b.endpoint_id in seen_c.peers
                ),
                timeout=TIMEOUT,
            )
            for i in range(60):
                node = nodes[rng.randrange(3)]
                node.rdb_set(space, "t", f"r{rng.randrange(10)}", {"v": i, "by": node.name})
                if rng.random() < 0.3:
                    await trio.lowlevel.checkpoint()
            await _converged(nodes, space)
            assert a.rdb_get(space, "t") == c.rdb_get(space, "t")
            for node in nodes:
                for other in nodes:
                    if other is not node:
                        state = node.peer_sync[(space, other.endpoint_id)].state.value
                        assert state == "live"
        finally:
            c_have = sum(c.replica(space).vector.values())
            await c_stack.aclose()

        # C is gone: the others notice, then keep writing.
        await a.wait_until(
            lambda: c.endpoint_id not in a.connections and c.endpoint_id not in b.connections,
            timeout=TIMEOUT,
        )
        assert a.peer_sync[(space, c.endpoint_id)].state.value == "disconnected"
        # C unregistered its mDNS service on the way out: the others saw it go.
        seen_a, seen_b = a.discovery, b.discovery
        assert seen_a is not None and seen_b is not None
        await a.wait_until(
            lambda: c.endpoint_id not in seen_a.peers and c.endpoint_id not in seen_b.peers,
            timeout=TIMEOUT,
        )
        for i in range(40):
            (a if i % 2 else b).rdb_set(space, "t", f"late{i}", {"v": i})
        await _converged([a, b], space)
        total = sum(a.replica(space).vector.values())

        # C comes back on the same home and catches up exactly what it lacks.
        async with _open(tmp_path / "c", "cy") as c2:
            await _converged([a, b, c2], space)
            assert sum(c2.replica(space).vector.values()) == total
            await a.wait_until(lambda: len(c2.connections) == 2, timeout=TIMEOUT)
            received = sum(p.session.stats.deltas_received for p in c2.connections.values())
            # Only the missing deltas travel, each at most once per connection.
            assert total - c_have <= received <= (total - c_have) * 2
            assert c2.rdb_get(space, "t", "late39") == {"late39": {"v": 39}}
