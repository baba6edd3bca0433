"""Checkpoints on the simulated network: blocks close the same way on every replica.

Every seed runs the convergence scenarios of ``test_convergence.py`` with three managers. The
checkpointer (the founder, then the endpoint it hands over to halfway) makes checkpoints at
random times; the other managers make checkpoints too, concurrently, which must close nothing.
After healing, every replica must hold the same order, state and closed blocks, no undo record
inside a closed block, and an order that respects every dependency. Every fourth seed adds a
byzantine member (not a manager).
CI runs 200 seeds (``P2PSPACE_SEEDS=N`` runs N).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pspace.core import codec
from p2pspace.core.checkpoint import NOT_CHECKPOINTER, OUT_OF_SEQUENCE
from p2pspace.core.delta import DeltaId, decode_delta
from p2pspace.core.replica import Replica
from p2pspace.engines import members
from p2pspace.testing.simnet import Faults, SimNetwork
from tests.sim.test_convergence import scenario

SEEDS = int(os.environ.get("P2PSPACE_SEEDS", "200"))
MANAGERS = 3
DELTAS = 40


def _attempt(net: SimNetwork, i: int, rng: random.Random) -> Callable[[], None]:
    def attempt() -> None:
        node = net.nodes[i]
        if node.endpoint is None or not net.replica(i).can_create():
            net.schedule(rng.randint(50, 300), attempt)
            return
        replica = net.replica(i)
        if replica.role() != "manager":
            net.schedule(rng.randint(50, 300), attempt)
            return
        if replica.is_checkpointer():
            replica.create_checkpoint(time=net.now)
        else:
            # A manager that is not the checkpointer: its checkpoint must close nothing.
            number = replica.horizon().number + 1
            digest = bytes.fromhex(replica.state_digest())
            replica.create([members.checkpoint_command(number, digest)], time=net.now)
        net.flush(i)

    return attempt


def _handover(net: SimNetwork, rng: random.Random, target: bytes) -> Callable[[], None]:
    def handover() -> None:
        node = net.nodes[0]
        replica = None if node.endpoint is None else net.replica(0)
        if replica is None or replica.members().role_of(target) != "manager":
            net.schedule(rng.randint(50, 300), handover)
            return
        replica.create([members.checkpointer_command(target)], time=net.now)
        net.flush(0)

    return handover


def _run(root: Path, seed: int) -> tuple[SimNetwork, bool, list[bytes]]:
    endpoints, faults, topology = scenario(seed)
    endpoints = max(endpoints, MANAGERS)
    hostile = seed % 4 == 3
    if hostile:  # a byzantine member (the last endpoint, never a manager) on every fourth seed
        endpoints, faults = max(endpoints, MANAGERS + 1), [*faults, "hostile"]
    net = SimNetwork(
        root, endpoints=endpoints, seed=seed, faults=Faults.of(faults), topology=topology
    )
    rng = random.Random(seed * 7919 + 1)
    ids = [net.endpoint(i).endpoint_id for i in range(endpoints)]
    founder = net.replica(0)
    founder.create(
        [members.role_command(net.endpoint(i).endpoint_id, "manager") for i in range(1, MANAGERS)],
        time=0,
    )
    span = max(2000, DELTAS * 20)
    net.schedule_workload(DELTAS, over_ms=span)
    for _ in range(6):
        net.schedule(rng.randint(0, span), _attempt(net, rng.randrange(MANAGERS), rng))
    net.schedule(
        rng.randint(span // 3, 2 * span // 3), _handover(net, rng, net.endpoint(1).endpoint_id)
    )
    if hostile:
        net.schedule_hostile(max(6, DELTAS // 3), over_ms=span)
    net.schedule_faults(over_ms=span)
    net.run_for(span + 100)
    net.heal()
    quiet = net.run_until_quiet(limit_ms=120_000)
    return net, quiet, ids


def _closed_blocks(replica: Replica) -> list[tuple[int, list[DeltaId]]]:
    rows = replica.store._read(
        "SELECT block, creator, seq, undo FROM log WHERE space=? AND block<0 "
        "ORDER BY block, rank, creator, seq",
        (replica.space_id,),
    )
    for _b, _c, _s, undo in rows:  # only a recorded no-op's reason is kept in a block
        assert undo is None or set(codec.decode_stored(undo)) == {"noop"}
    blocks: dict[int, list[DeltaId]] = {}
    for block, creator, seq, _undo in rows:
        blocks.setdefault(block, []).append(DeltaId(bytes(creator), seq))
    return sorted(blocks.items())


@pytest.mark.parametrize("seed", range(SEEDS))
def test_checkpoints_close_the_same_blocks_everywhere(seed: int, tmp_path: Path) -> None:
    net, quiet, ids = _run(tmp_path, seed)
    try:
        result = net.check_convergence()
        assert quiet and result.converged, f"seed {seed}: {result.reasons}"
        replicas = [net.replica(i) for i in net.honest]
        blocks = {repr(_closed_blocks(r)) for r in replicas}
        assert len(blocks) == 1
        horizons = {(r.horizon().number, r.horizon().checkpoint) for r in replicas}
        assert len(horizons) == 1
        reference = replicas[0]
        closed = reference.horizon().closed or {}
        # Every checkpoint that closed nothing says why, the same everywhere.
        for wire, _v, _u in reference.store.members_deltas(reference.space_id):
            delta = decode_delta(wire)
            if not members.is_checkpoint(delta.commands):
                continue
            reasons = {r.refusal(delta.id) for r in replicas}
            assert len(reasons) == 1
            reason = reasons.pop()
            checkpointers = {ids[0], ids[1]}
            if delta.creator not in checkpointers:
                assert reason in (NOT_CHECKPOINTER, OUT_OF_SEQUENCE), reason
            if reason is None:
                assert closed.get(delta.creator, 0) >= delta.seq
        _STATS["closed"] += reference.horizon().number
    finally:
        net.close()


_STATS = {"closed": 0}


def test_some_blocks_were_closed() -> None:
    """Runs after the seeds above (file order): checkpoints did close blocks."""
    if SEEDS < 20:
        pytest.skip("run with the seeded runs above")
    assert _STATS["closed"] >= SEEDS
