"""Crash safety: a real ``kill -9`` of a writing process, and crashes in the simulated network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.node.home import open_endpoint
from p2pspace.testing import Faults, SimNetwork, causality_violation
from tests.helpers.replicas import wires_of

# The child commits deltas as fast as it can (single deltas and group commits with unsigned
# chains) and reports the executed count after every commit returned.
CHILD = """
import sys
from pathlib import Path

from p2pspace.node.home import open_endpoint
from p2pspace.engines import rdb

endpoint = open_endpoint(Path(sys.argv[1]), seed=b"crash-child", durability="full")
replica = endpoint.create_space("crash", time=0, nonce=bytes(16))
i = 0
while True:
    i += 1
    k = i % 7
    if i % 4 == 0:
        replica.create_many(
            [[rdb.set_fields("t", f"r{k}", {"v": i, "j": j})] for j in range(1 + i % 5)], time=i
        )
    elif i % 4 == 1:
        replica.create([rdb.create("t", f"r{k}", {"v": i})], time=i)
    else:
        replica.create(
            [rdb.set_fields("t", f"r{k}", {"v": i}), rdb.delete("t", f"r{(k + 3) % 7}")], time=i
        )
    sys.stdout.write(f"{replica.executed_count()}\\n")
    sys.stdout.flush()
"""

WATCHDOG_SECONDS = 60


def _run_and_kill(home: Path, commits: int) -> int:
    """Start the child, SIGKILL it after ``commits`` reported commits; return the last count."""
    stderr_path = home.parent / f"{home.name}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(home)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=Path(__file__).resolve().parents[2],
        )
    # Only a safety net against a hung child; the test never waits on time otherwise.
    watchdog = threading.Timer(WATCHDOG_SECONDS, proc.kill)
    watchdog.start()
    last = 0
    seen = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            count = int(line)
            assert count > last
            last = count
            seen += 1
            if seen >= commits:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        if proc.poll() is None and seen < commits:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert seen == commits, f"child stopped early: {stderr_path.read_text()}"
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.parametrize("commits", [23, 97, 200])
def test_kill_9_keeps_every_committed_delta(
    tmp_path: Path,
    commits: int,
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    home = tmp_path / "child"
    reported = _run_and_kill(home, commits)

    endpoint = open_endpoint(home, durability="full")
    try:
        (replica,) = endpoint.replicas.values()
        creator = replica.genesis.creator
        assert creator == endpoint.endpoint_id
        # Everything the child reported as committed survived the kill.
        assert replica.vector[creator] >= reported
        assert replica.executed_count() == replica.store.log_size(replica.space_id)
        assert replica.vector == {creator: replica.store.log_size(replica.space_id)}

        # Integrity: replaying the reopened log into a fresh replica gives the same state.
        fresh = Replica.join(make_store("fresh"), identities[4], replica.genesis.wire())
        result = fresh.receive(wires_of(replica))
        assert not result.rejected
        assert fresh.pending_count == 0
        assert fresh.vector == replica.vector
        assert fresh.order_digest() == replica.order_digest()
        assert fresh.state_digest() == replica.state_digest()
        assert causality_violation(replica.dump_order()) is None

        # The reopened replica continues its hash chain; the fresh one accepts the new deltas.
        last_seq = replica.vector[creator]
        new = replica.create([rdb.create("t", "after-crash", {"ok": True})], time=10**6)
        chain = replica.create_many(
            [[rdb.set_fields("t", "after-crash", {"n": n})] for n in range(3)], time=10**6
        )
        assert new.seq == last_seq + 1
        result = fresh.receive([d.wire() for d in [new, *chain]])
        assert not result.rejected
        assert len(result.executed) == 4
        assert fresh.order_digest() == replica.order_digest()
        assert fresh.state_digest() == replica.state_digest()
        assert rdb.view(fresh).get("t", "after-crash") == {"ok": True, "n": 2}
    finally:
        endpoint.close()


@pytest.mark.parametrize("seed", [3, 11])
def test_simulated_crash_and_restart_converge(tmp_path: Path, seed: int) -> None:
    net = SimNetwork(tmp_path, endpoints=3, seed=seed, faults=Faults(crash=True))
    try:
        net.schedule_workload(40, over_ms=2000)
        net.run_for(600)
        created_before = net.stats.deltas_created
        net.crash(1)
        assert net.nodes[1].endpoint is None
        net.run_for(500)
        net.restart(1)
        net.run_for(300)
        net.crash(0, restart_after=400)  # the space's creator, with deltas still in flight
        net.run_for(200)
        assert net.nodes[0].endpoint is None
        net.run_for(1500)
        assert net.nodes[0].endpoint is not None
        net.heal()
        assert net.run_until_quiet()
        result = net.check_convergence()
        assert result.converged, result.reasons
        assert net.stats.crashes == 2
        assert created_before < net.stats.deltas_created == 40
        # genesis, the member adds and the seed records, then every workload delta
        assert {e["executed"] for e in result.endpoints} == {3 + 40}
    finally:
        net.close()
