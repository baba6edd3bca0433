"""Convergence property on the simulated network.

For every seed: 3-7 endpoints make concurrent rdb edits under network faults (every kind is
covered across the seeds; hostile members are in ``test_hostile_sim.py``), the network heals,
and then every replica must have the same executed order, the same engine state, and an
executed order that respects every dependency. CI runs 200 seeds; ``P2PSPACE_SEEDS=N`` runs N.
A failing seed is named in the failure message and can be replayed with
``p2pspace simulate --seed S --endpoints N --faults ... --topology ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pspace.testing import run_simulation
from p2pspace.testing.faults import NETWORK_FAULTS

SEEDS = int(os.environ.get("P2PSPACE_SEEDS", "200"))


def scenario(seed: int) -> tuple[int, list[str], str]:
    endpoints = 3 + seed % 5
    kind = seed % 7
    if kind < len(NETWORK_FAULTS):
        faults = [NETWORK_FAULTS[kind]]
    elif kind == 5:
        faults = list(NETWORK_FAULTS)
    else:
        faults = ["drop", "reorder", "crash"]
    topology = "ring" if (seed // 7) % 2 else "mesh"
    return endpoints, faults, topology


@pytest.mark.parametrize("seed", range(SEEDS))
def test_replicas_converge(seed: int, tmp_path: Path) -> None:
    endpoints, faults, topology = scenario(seed)
    report = run_simulation(
        tmp_path, endpoints=endpoints, deltas=40, seed=seed, faults=faults, topology=topology
    )
    replay = (
        f"p2pspace simulate --seed {seed} --endpoints {endpoints} --deltas 40 "
        f"--faults {','.join(faults)} --topology {topology}"
    )
    assert report.converged, f"seed {seed} did not converge ({replay}): {report.reasons}"
    assert report.deltas == 40
    assert len(report.endpoints) == endpoints
    assert len({e["order_digest"] for e in report.endpoints}) == 1
    assert len({e["state_digest"] for e in report.endpoints}) == 1


def test_every_fault_kind_is_covered() -> None:
    covered = {kind for seed in range(min(SEEDS, 200)) for kind in scenario(seed)[1]}
    assert covered == set(NETWORK_FAULTS)
    sizes = {scenario(seed)[0] for seed in range(min(SEEDS, 200))}
    assert sizes == {3, 4, 5, 6, 7}


def test_faults_actually_happen(tmp_path: Path) -> None:
    report = run_simulation(tmp_path, endpoints=4, deltas=60, seed=11, faults=NETWORK_FAULTS)
    assert report.converged, report.reasons
    assert report.stats["dropped"] > 0
    assert report.stats["duplicated"] > 0
    assert report.stats["crashes"] > 0
    assert report.stats["partitions"] > 0
    assert report.undone > 0 and report.redone == report.undone


def test_same_seed_same_run(tmp_path: Path) -> None:
    first = run_simulation(tmp_path / "a", endpoints=4, deltas=30, seed=5, faults=NETWORK_FAULTS)
    second = run_simulation(tmp_path / "b", endpoints=4, deltas=30, seed=5, faults=NETWORK_FAULTS)
    assert [e["order_digest"] for e in first.endpoints] == [
        e["order_digest"] for e in second.endpoints
    ]
    assert first.stats == second.stats
