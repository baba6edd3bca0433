"""W8 at its quick size: automatic checkpoints and purge keep the store near the state, a new
member joins by snapshot, and a backdated delta reorders only the open window."""

from __future__ import annotations

from pathlib import Path

from p2pspace.app.bench import WORKLOADS, suite
from p2pspace.app.bench.crdt_baselines import libraries


def test_w8_purges_joins_by_snapshot_and_bounds_a_backdated_delta(tmp_path: Path) -> None:
    (result,) = suite.run(["W8"], quick=True, root=tmp_path)
    quick = suite.QUICK["W8"]
    assert result["workload"] == "W8" and result["converged"] is True
    assert result["deltas"] == quick["deltas"]
    # A checkpoint closes every window, and one more the joiner's admission; the replicas
    # purged what the checkpoints closed.
    assert result["checkpoints"] == quick["deltas"] // quick["window"] + 1
    assert result["purged"] > 2 * quick["deltas"]  # on each of the three replicas
    # The store holds the state and about a window, not the history; the joiner got the state.
    assert result["store_bytes"] < result["history_bytes"]
    assert 0 < result["state_bytes"] <= result["join_bytes"] < result["history_bytes"] / 4
    # The backdated delta undid at most the open window, half a window of edits.
    assert result["open_window"] == quick["window"] // 2
    assert result["backdate_undone"] <= result["open_window"]
    assert result["rss_mb"] > 0 and result["join_seconds"] > 0 and result["backdate_ms"] > 0
    for name in libraries():
        assert result[f"{name}_converged"] is True and result[f"{name}_state_bytes"] > 0


def test_w8_and_w10_are_registered_workloads() -> None:
    for name in ("W8", "W10"):
        assert name in WORKLOADS and name in suite.RUNNERS and name in suite.QUICK
