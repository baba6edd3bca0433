"""W9 many endpoints: the simulated network at 20 and 50 endpoints under every network fault.

Each size is one seeded :func:`~p2pspace.testing.simnet.run_simulation` -- real endpoints with
on-disk stores, a simulated network and clock -- with the faults ``drop, dup, reorder, partition,
crash``, in a full mesh, the deltas spread over the endpoints (one every 20 ms of virtual time
network-wide), then healed and run until every replica executed the same deltas. Figures per size,
prefixed ``n<endpoints>_``:

* ``seconds`` -- wall-clock time of the whole run (setup, workload, healing, comparison);
* ``undos_per_delta_per_replica`` -- deltas undone in all replicas over deltas times endpoints
  (a reorder undoes what sorts after the newcomer; 0 if nothing ever arrived late);
* ``duplicates_per_delta`` -- copies replicas received of deltas they already held, over the
  deltas (each delta reaches each of N - 1 peers; 0 is "each exactly once"); the ``dup`` fault
  alone delivers a share of all frames twice, so under faults it cannot reach 0;
* ``converged`` -- same order and state everywhere, causality respected.

Same-run baselines: the smaller size again without faults (``nofaults_`` figures: what the faults
cost), and 5 endpoints under the same faults (``n5_`` figures: how the cost grows with endpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pspace.testing.faults import NETWORK_FAULTS
from p2pspace.testing.simnet import SimulationReport, run_simulation

SEED = 11
SIZES = ((20, 2_000), (50, 5_000))
BASELINE_ENDPOINTS = 5


def _figures(prefix: str, report: SimulationReport, endpoints: int) -> dict[str, Any]:
    deltas = max(1, report.deltas)
    return {
        f"{prefix}endpoints": endpoints,
        f"{prefix}deltas": report.deltas,
        f"{prefix}seconds": round(report.seconds, 2),
        f"{prefix}undos_per_delta_per_replica": round(report.undone / (deltas * endpoints), 3),
        f"{prefix}max_undos_of_a_delta": report.max_undos_per_delta,
        f"{prefix}duplicates_per_delta": round(report.duplicates / deltas, 3),
        f"{prefix}frames": report.stats["frames"],
        f"{prefix}converged": report.converged,
    }


def w9(
    root: Path,
    *,
    sizes: Sequence[tuple[int, int]] = SIZES,
    baseline_endpoints: int = BASELINE_ENDPOINTS,
    seed: int = SEED,
    quiet_limit_ms: int = 600_000,
) -> dict[str, Any]:
    """Run every ``(endpoints, deltas)`` size under all network faults, and the baselines
    (the first size without faults; ``baseline_endpoints`` with the first size's deltas under
    the same faults)."""
    out: dict[str, Any] = {"workload": "W9", "seed": seed, "faults": ",".join(NETWORK_FAULTS)}
    converged = True
    runs: list[tuple[str, int, int, Sequence[str]]] = [
        (f"n{n}_", n, d, NETWORK_FAULTS) for n, d in sizes
    ]
    first_n, first_d = sizes[0]
    runs.append(("nofaults_", first_n, first_d, ()))
    runs.append((f"n{baseline_endpoints}_", baseline_endpoints, first_d, NETWORK_FAULTS))
    for prefix, endpoints, deltas, faults in runs:
        report = run_simulation(
            root / prefix.rstrip("_"),
            endpoints=endpoints,
            deltas=deltas,
            seed=seed,
            faults=faults,
            quiet_limit_ms=quiet_limit_ms,
        )
        out.update(_figures(prefix, report, endpoints))
        converged = converged and report.converged
    out["converged"] = converged
    return out


__all__ = ["SIZES", "w9"]
