"""The command line: demo, simulate (text, --json, --dump-logs) and bench --quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2pspace.app.cli import main
from p2pspace.app.cli.parser import FAULTS_HELP
from p2pspace.testing import FAULT_KINDS, causality_violation
from tests.helpers import TIMEOUT


def test_demo_once_runs_three_nodes_and_converges() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pspace", "demo", "--once", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=4 * TIMEOUT,  # three nodes start, converge and stop, each a wait of its own
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "all three threads are identical" in proc.stdout
    assert proc.stdout.count(" deltas, ") == 3
    assert "Welcome to the LAN" in proc.stdout and "[deleted]" in proc.stdout
    assert "delivered to 3 of 3" in proc.stdout
    assert proc.stderr == ""


def test_simulate_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "simulate", "--endpoints", "4", "--deltas", "50", "--seed", "2",
            "--faults", "drop,dup,reorder,partition,crash", "--json",
            "--dump-logs", str(tmp_path / "logs"),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["converged"] is True
    assert report["deltas"] == 50
    assert set(report) == {"converged", "deltas", "undone", "redone", "seconds", "endpoints"}
    assert len(report["endpoints"]) == 4
    for endpoint in report["endpoints"]:
        assert set(endpoint) == {"id", "executed", "order_digest", "state_digest"}
    assert len({e["order_digest"] for e in report["endpoints"]}) == 1
    files = sorted((tmp_path / "logs").glob("*.json"))
    assert len(files) == 4
    orders = []
    for file in files:
        data = json.loads(file.read_text())
        assert data["endpoint"] in {e["id"] for e in report["endpoints"]}
        first = data["order"][0]
        assert set(first) == {"creator", "seq", "rank", "deps"}
        assert causality_violation(data["order"]) is None
        orders.append([(d["creator"], d["seq"]) for d in data["order"]])
        assert len(data["order"]) == report["endpoints"][0]["executed"]
    assert all(order == orders[0] for order in orders)


def test_simulate_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--endpoints", "3", "--deltas", "20", "--seed", "1"]) == 0
    assert "converged" in capsys.readouterr().out


def test_bad_arguments_exit_nonzero_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pspace", "simulate", "--faults", "bogus"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown fault kind" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_simulate_help_names_every_fault_kind() -> None:
    # The parser does not import the simulator to build its help, so it keeps its own text.
    assert FAULTS_HELP.split(",") == list(FAULT_KINDS)


def test_bench_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--json", "--repeat", "1", "--workload", "W1,W2,W3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {line["workload"]: line for line in lines}
    assert set(by_name) == {"W1", "W2", "W3"}
    w1, w2, w3 = by_name["W1"], by_name["W2"], by_name["W3"]
    for key in ("deltas_per_s_single", "deltas_per_s_group", "baseline_sqlite_per_s",
                "baseline_sign_per_s"):  # fmt: skip
        assert w1[key] > 0
    for key in ("seconds", "bytes", "deltas_per_s", "baseline_floor_per_s"):
        assert w2[key] > 0
    assert w2["converged"] is True
    assert w3["converged"] is True
    assert w3["undone"] > 0 and w3["redone"] == w3["undone"]
    assert 1 <= w3["max_undos_per_delta"] <= 2
