"""W9 at a tiny size: every figure is there for each size and both baselines, and it converged."""

from __future__ import annotations

from pathlib import Path

from p2pspace.app.bench import WORKLOADS, suite
from p2pspace.app.bench.many import w9

FIGURES = ("seconds", "undos_per_delta_per_replica", "duplicates_per_delta", "converged")


def test_w9_reports_each_size_and_its_baselines(tmp_path: Path) -> None:
    result = w9(tmp_path, sizes=((4, 40), (6, 40)), baseline_endpoints=3)
    assert result["workload"] == "W9" and result["converged"] is True
    for prefix in ("n4_", "n6_", "nofaults_", "n3_"):
        for figure in FIGURES:
            assert f"{prefix}{figure}" in result, f"{prefix}{figure}"
    assert result["n6_endpoints"] == 6 and result["n6_deltas"] == 40
    assert result["nofaults_endpoints"] == 4
    assert result["n4_duplicates_per_delta"] >= 0 and result["n4_seconds"] > 0


def test_w9_is_a_registered_workload() -> None:
    assert "W9" in WORKLOADS and "W9" in suite.RUNNERS and "W9" in suite.QUICK
