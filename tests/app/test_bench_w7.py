"""``p2pspace bench`` W7 (whole CLI processes against a running node) in quick mode.

Only the shape and sanity of the figures are checked, never the timings: W7 itself checks that
``status`` went through the node's API and that ``discuss show`` listed every post.
"""

from __future__ import annotations

from pathlib import Path

from p2pspace.app.bench import WORKLOADS, suite


def test_w7_cli_latency_quick(tmp_path: Path) -> None:
    (result,) = suite.run(["W7"], quick=True, root=tmp_path)
    quick = suite.QUICK["W7"]
    assert result["workload"] == "W7"
    assert result["processes"] == quick["processes"]
    assert result["posts"] == quick["topics"] * (1 + quick["replies"])
    for key in ("help_ms", "status_ms", "discuss_show_ms", "baseline_python_ms", "target_ms"):
        assert result[key] > 0, key
    assert result["target_ms"] == round(result["baseline_python_ms"] + 120, 3)
    assert result["runs"] == 1
    assert not list(tmp_path.iterdir())  # the temporary home is gone, the node with it


def test_w7_is_a_bench_workload() -> None:
    assert "W7" in WORKLOADS and "W7" in suite.RUNNERS and "W7" in suite.QUICK
    assert list(WORKLOADS) == list(suite.RUNNERS)
