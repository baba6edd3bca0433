"""Automatic purge in the node's housekeeping (DESIGN §12): a space's closed history is
compacted by itself once every other member has acknowledged it, never while a member still
lacks it, never in a space that keeps its history, and not at all with ``auto_compact`` off.

Real nodes on a MemoryNetwork under trio's autojump clock (waits are on node state, bounded in
virtual time).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import trio
import trio.testing

from p2pspace.core.checkpoint import CheckpointPolicy
from p2pspace.engines import rdb
from p2pspace.node.config import NodeConfig
from p2pspace.node.node import Node
from p2pspace.testing import MemoryNetwork, open_test_node
from tests.helpers.replicas import wires_of

VIRTUAL_TIMEOUT = 600.0
BASE = NodeConfig(
    listen=("0.0.0.0", 7455),
    discovery=False,
    durability="normal",
    jitter_seed=7,
    checkpoints=CheckpointPolicy(max_count=20),
)


def _same(nodes: list[Node], space: bytes) -> bool:
    return len({n.replica(space).state_digest() for n in nodes}) == 1 and all(
        n.replica(space).vector == nodes[0].replica(space).vector for n in nodes
    )


def _compacted_through(node: Node, space: bytes, number: int) -> bool:
    replica = node.replica(space)
    closed = replica.horizon().closed or {}
    return replica.horizon().number >= number and all(
        replica.compacted().get(c, 0) >= s for c, s in closed.items()
    )


def _node(
    tmp: Path, network: MemoryNetwork, name: str, **config: object
) -> contextlib.AbstractAsyncContextManager[Node]:
    settings = dataclasses.replace(BASE, name=name, **config)  # type: ignore[arg-type]
    return open_test_node(tmp / name, network=network, config=settings)


async def test_closed_history_is_purged_once_every_member_has_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        ann = await stack.enter_async_context(_node(tmp_path, network, "ann"))
        bob = await stack.enter_async_context(_node(tmp_path, network, "bob"))
        space = ann.create_space("notes").space_id
        await bob.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        async with _node(tmp_path, network, "cy") as cy:
            await cy.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
            nodes = [ann, bob, cy]
            for k in range(40):
                writer = nodes[k % 3]
                writer.commit(space, [rdb.create("t", f"r{k}", {"v": k})])
            # Ann, the checkpointer, closes the window once every member acknowledged it;
            # then every replica purges the block by itself.
            await ann.wait_until(
                lambda: _same(nodes, space) and all(_compacted_through(n, space, 1) for n in nodes),
                timeout=VIRTUAL_TIMEOUT,
            )
            held = {n.name: len(wires_of(n.replica(space))) for n in nodes}
            assert all(count < 30 for count in held.values()), held
            digest = ann.replica(space).state_digest()
            assert ann.compact_due_spaces() == {}  # nothing more to purge

        # Cy goes away; a checkpoint closes what it has not seen. Ann, the checkpointer, who
        # holds Cy's last acknowledgement, keeps that block while Cy lacks it; Bob, who never
        # heard from Cy directly, relies on Ann's rule and purges.
        for k in range(10):
            (ann if k % 2 else bob).commit(space, [rdb.set_fields("t", f"r{k}", {"w": k})])
        await ann.wait_until(lambda: _same([ann, bob], space), timeout=VIRTUAL_TIMEOUT)
        ann.replica(space).create_checkpoint(time=ann.clock.now_ms())
        await ann.wait_until(
            lambda: bob.replica(space).horizon().number == ann.replica(space).horizon().number,
            timeout=VIRTUAL_TIMEOUT,
        )
        number = ann.replica(space).horizon().number
        assert not ann.replica(space).compaction_due(ann.acked(space))
        assert ann.compact_due_spaces() == {}
        assert not _compacted_through(ann, space, number)
        await ann.wait_until(
            lambda: _compacted_through(bob, space, number), timeout=VIRTUAL_TIMEOUT
        )
        assert not _compacted_through(ann, space, number)

        # Cy comes back, catches up and acknowledges: now the block goes.
        async with _node(tmp_path, network, "cy") as cy2:
            nodes = [ann, bob, cy2]
            await ann.wait_until(
                lambda: (
                    _same(nodes, space) and all(_compacted_through(n, space, number) for n in nodes)
                ),
                timeout=VIRTUAL_TIMEOUT,
            )
            assert ann.replica(space).state_digest() != digest
            assert ann.rdb_get(space, "t", "r3") == cy2.rdb_get(space, "t", "r3")


async def test_no_automatic_purge_when_history_is_kept_or_auto_compact_is_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        ann = await stack.enter_async_context(_node(tmp_path, network, "ann"))
        bob = await stack.enter_async_context(_node(tmp_path, network, "bob"))
        cy = await stack.enter_async_context(_node(tmp_path, network, "cy", auto_compact=False))
        space = ann.create_space("audit").space_id
        await bob.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        await cy.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        bob.compact_space(space, keep_history=True)
        nodes = [ann, bob, cy]
        for k in range(40):
            nodes[k % 3].commit(space, [rdb.create("t", f"r{k}", {"v": k})])
        await ann.wait_until(
            lambda: _same(nodes, space) and _compacted_through(ann, space, 1),
            timeout=VIRTUAL_TIMEOUT,
        )
        # Ann purged; Bob keeps the audit trail; Cy does not purge by itself.
        for node in (bob, cy):
            assert node.replica(space).horizon().number >= 1
            assert node.replica(space).compacted() == {}
            assert node.compact_due_spaces() == {}
        assert len(wires_of(bob.replica(space))) > len(wires_of(ann.replica(space))) + 30
        # Cy's owner can still purge by hand.
        assert cy.compact_space(space)["deleted"] > 30
