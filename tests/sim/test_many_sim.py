"""Many endpoints on the simulated network: each delta reaches each peer about once in a mesh,
and relays cross a line of endpoints under faults.

The convergence property itself, over 200 seeds and every fault kind in meshes and rings, is
``test_convergence.py``'s; here: a line (every delta but the neighbours' crosses endpoints that
relay it), 20 endpoints in a mesh, and the duplicate count of a mesh without faults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pspace.core.causal import Limits
from p2pspace.testing import run_simulation
from p2pspace.testing.faults import NETWORK_FAULTS
from p2pspace.testing.simnet import SimNetwork


@pytest.mark.parametrize("seed", range(12))
def test_a_line_converges_under_faults(seed: int, tmp_path: Path) -> None:
    endpoints = 4 + seed % 3
    faults = list(NETWORK_FAULTS) if seed % 2 else ["drop", "reorder", "partition"]
    report = run_simulation(
        tmp_path, endpoints=endpoints, deltas=40, seed=seed, faults=faults, topology="line"
    )
    assert report.converged, f"seed {seed}: {report.reasons}"
    assert report.deltas == 40


def test_twenty_endpoints_converge_under_every_network_fault(tmp_path: Path) -> None:
    report = run_simulation(tmp_path, endpoints=20, deltas=100, seed=11, faults=NETWORK_FAULTS)
    assert report.converged, report.reasons
    assert report.stats["crashes"] > 0 and report.stats["partitions"] > 0


def test_a_mesh_without_faults_gets_each_delta_about_once(tmp_path: Path) -> None:
    net = SimNetwork(tmp_path, endpoints=8, seed=3, limits=Limits(announce_relays=True))
    try:
        net.run_for(3000)  # joined and caught up: the joins' streams are not counted
        replicas = [net.replica(i) for i in range(8)]
        before = sum(r.stats.duplicates for r in replicas)
        net.schedule_workload(300, over_ms=6000)
        net.run_for(6100)
        net.heal()
        assert net.run_until_quiet()
        assert net.check_convergence().converged
        duplicates = sum(r.stats.duplicates for r in replicas) - before
        # Relaying to all 7 peers would give 6 per delta; announcing, about none.
        assert duplicates <= 0.1 * 300
    finally:
        net.close()
