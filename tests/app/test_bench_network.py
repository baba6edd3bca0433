"""The networked workloads of ``p2pspace bench`` (W4 latency, W5 catch-up) in quick mode.

Three and two trio nodes talk TLS over loopback. Only the shape and sanity of the figures are
checked -- never the timings, which depend on the machine.
"""

from __future__ import annotations

from pathlib import Path

from p2pspace.app.bench import suite


def test_w4_latency_quick(tmp_path: Path) -> None:
    (result,) = suite.run(["W4"], quick=True, root=tmp_path)
    quick = suite.QUICK["W4"]
    assert result["workload"] == "W4"
    assert result["deltas"] == quick["deltas"]
    # Every delta executed on both other nodes: two samples each.
    assert result["samples"] == 2 * quick["deltas"]
    for key in (
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "first_receiver_p50_ms",
        "second_receiver_p50_ms",
        "local_commit_p50_ms",
        "baseline_rtt_ms",
        "baseline_tls_rtt_ms",
    ):
        assert result[key] > 0, key
    assert result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["first_receiver_p50_ms"] <= result["second_receiver_p50_ms"]
    assert result["duplicates_per_delta"] >= 0
    assert result["converged"] is True
    assert result["runs"] == 1


def test_w5_network_catch_up_quick(tmp_path: Path) -> None:
    (result,) = suite.run(["W5"], quick=True, root=tmp_path)
    assert result["workload"] == "W5"
    assert result["deltas"] == suite.QUICK["W5"]["deltas"]
    # B has everything A has, each missing delta arrived at least once.
    assert result["converged"] is True
    assert result["deltas_received"] >= result["deltas"]
    assert result["seconds"] > 0 and result["deltas_per_s"] > 0
    assert result["baseline_bytes"] > 0
    assert result["bytes"] >= 0.9 * result["baseline_bytes"]
    assert result["bytes_ratio"] >= 0.9
    # TCP payload bytes include TLS; 0 only where TCP_INFO is unavailable.
    assert result["tcp_bytes"] == 0 or result["tcp_bytes"] >= result["bytes"]
    assert not list(tmp_path.iterdir())  # the temporary homes are gone
