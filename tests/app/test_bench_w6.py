"""``p2pspace bench`` W6 (thread load through the local API) in quick mode.

Only the shape and sanity of the figures are checked, never the timings.
"""

from __future__ import annotations

from pathlib import Path

from p2pspace.app.bench import WORKLOADS, suite


def test_w6_thread_load_quick(tmp_path: Path) -> None:
    (result,) = suite.run(["W6"], quick=True, root=tmp_path)
    quick = suite.QUICK["W6"]
    assert result["workload"] == "W6"
    # The API listed every thread and returned the whole big thread, nested.
    assert result["posts"] == quick["posts"]
    assert result["threads"] == quick["threads"]
    assert result["thread_posts"] == quick["big"]
    for key in (
        "thread_list_ms",
        "thread_ms",
        "direct_thread_list_ms",
        "direct_thread_ms",
        "baseline_scan_list_ms",
        "baseline_scan_thread_ms",
        "baseline_http_ms",
        "thread_list_bytes",
        "thread_bytes",
        "search_ms",
        "search_first_ms",
        "search_hits",
        "plugin_load_ms",
        "baseline_start_ms",
    ):
        assert result[key] > 0, key
    assert result["runs"] == 1
    # The example task list is loaded from the checkout beside the discussion.
    assert result["plugins"] == ["discussion", "tasks"]
    assert not list(tmp_path.iterdir())  # the temporary home is gone


def test_w6_is_a_bench_workload() -> None:
    assert "W6" in WORKLOADS and "W6" in suite.RUNNERS and "W6" in suite.QUICK
