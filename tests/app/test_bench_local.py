"""``p2pspace bench`` W1, W2 (authorisation on and off), W3 and W3R (role changes during the
merge) in quick mode.

Only the shape and sanity of the figures are checked, never the timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pspace.app.bench import WORKLOADS, suite
from p2pspace.app.bench.report import format_table


def test_w1_group_commit_with_roles_on_and_off(tmp_path: Path) -> None:
    (result,) = suite.run(["W1"], quick=True, root=tmp_path)
    assert result["deltas"] == suite.QUICK["W1"]["deltas"]
    on, off = result["deltas_per_s_group"], result["deltas_per_s_group_roles_off"]
    assert on > 0 and off > 0
    assert result["roles_ratio_group"] == pytest.approx(on / off, rel=0.01)
    assert not list(tmp_path.iterdir())  # both twins' homes are gone


def test_w2_catch_up_with_roles_on_and_off(tmp_path: Path) -> None:
    (result,) = suite.run(["W2"], quick=True, root=tmp_path)
    assert result["converged"] is True  # every one of the four catch-ups
    for key in ("seconds", "seconds_roles_off", "deltas_per_s", "deltas_per_s_roles_off"):
        assert result[key] > 0, key
    assert result["deltas"] >= suite.QUICK["W2"]["deltas"] // 2
    assert result["bytes"] >= result["stored_bytes"]
    rate, rate_off = result["deltas_per_s"], result["deltas_per_s_roles_off"]
    assert result["roles_ratio"] == pytest.approx(rate / rate_off, rel=0.01)
    assert not list(tmp_path.iterdir())


def test_w3r_merges_while_roles_change(tmp_path: Path) -> None:
    w3, w3r = suite.run(["W3", "W3R"], quick=True, root=tmp_path)
    per_endpoint = suite.QUICK["W3R"]["per_endpoint"]
    assert w3r["workload"] == "W3R"
    assert (w3r["members"], w3r["role_changes"]) == (20, 5)
    assert w3r["deltas"] == 3 * per_endpoint + 5
    assert w3r["converged"] is True and w3["converged"] is True
    assert w3r["seconds"] > 0
    assert w3r["undone"] > 0 and w3r["redone"] == w3r["undone"]
    assert 1 <= w3r["max_undos_per_delta"] <= 2
    # B was a guest for part of the merge: some of its deltas, never all, are no-ops there.
    assert 0 < w3r["noops"] < per_endpoint
    assert not list(tmp_path.iterdir())


def test_w3r_is_a_bench_workload() -> None:
    assert "W3R" in WORKLOADS and "W3R" in suite.RUNNERS and "W3R" in suite.QUICK
    assert list(WORKLOADS).index("W3R") == list(WORKLOADS).index("W3") + 1


def test_the_table_fits_the_longest_figure_name() -> None:
    table = format_table([{"workload": "W1", "deltas_per_s_group_roles_off": 1, "deltas": 2}])
    header, first, second = table.splitlines()
    # The values (one character each) start in the column of "value".
    assert len(first) - 1 == len(second) - 1 == header.index("value")
