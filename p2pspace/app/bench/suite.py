"""Running the workloads: the full and ``--quick`` sizes, repeats, a fresh folder per run."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2pspace.app.bench.api import w6
from p2pspace.app.bench.cli import w7
from p2pspace.app.bench.history import w8
from p2pspace.app.bench.local import w1, w2, w3
from p2pspace.app.bench.many import w9
from p2pspace.app.bench.merge import w3r
from p2pspace.app.bench.network import w4, w5
from p2pspace.app.bench.report import median_of_runs
from p2pspace.app.bench.strangers import w10

RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W3R": w3r,
    "W4": w4,
    "W5": w5,
    "W6": w6,
    "W7": w7,
    "W8": w8,
    "W9": w9,
    "W10": w10,
}

QUICK: dict[str, dict[str, Any]] = {
    "W1": {"deltas": 2000, "records": 100},
    "W2": {"deltas": 2000, "records": 100},
    "W3": {"per_endpoint": 500, "shared": 20},
    "W3R": {"per_endpoint": 500, "shared": 20},
    "W4": {"deltas": 300, "warmup": 10},
    "W5": {"deltas": 5000, "records": 100},
    "W6": {"posts": 1000, "threads": 50, "big": 100, "requests": 3},
    "W7": {"processes": 2, "topics": 2, "replies": 1},
    "W8": {"deltas": 6000, "records": 100, "window": 1000},
    "W9": {"sizes": ((6, 200), (10, 300)), "baseline_endpoints": 3},
    "W10": {"strangers": 200},
}


def run(
    workloads: Sequence[str],
    *,
    quick: bool = False,
    repeat: int = 1,
    root: Path | None = None,
) -> list[dict[str, Any]]:
    """Run each workload ``repeat`` times, each run in a fresh temporary folder (under ``root``
    if given); report the median of every numeric figure. Raises KeyError for an unknown
    workload name."""
    results = []
    for name in workloads:
        runs = []
        for _ in range(max(1, repeat)):
            with tempfile.TemporaryDirectory(prefix=f"p2pspace-bench-{name}-", dir=root) as tmp:
                kwargs = QUICK[name] if quick else {}
                runs.append(RUNNERS[name](Path(tmp), **kwargs))
        results.append(median_of_runs(runs))
    return results


__all__ = ["QUICK", "RUNNERS", "run"]
