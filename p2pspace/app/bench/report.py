"""The bench's figures: percentiles and milliseconds, medians over repeated runs, the output.

A workload returns one flat dict of figures; :func:`median_of_runs` merges the dicts of repeated
runs figure by figure, so every workload's JSON has the same fields whatever ``--repeat`` is.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)


def median_ms(samples: Sequence[float]) -> float:
    """The median of ``samples`` (seconds) in milliseconds."""
    return ms(statistics.median(samples))


def median_of_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One dict of figures from several runs of a workload: the median of every number (ints
    stay ints), a flag only if it held in every run, anything else from the first run; plus
    ``runs``, how many there were."""
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, bool):
            merged[key] = all(values)  # a flag (converged) must hold in every run
        elif isinstance(value, int | float):
            middle = statistics.median(values)
            merged[key] = round(middle) if isinstance(value, int) else round(middle, 3)
        else:
            merged[key] = value
    merged["runs"] = len(runs)
    return merged


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The figures as a table: one row per workload and figure."""
    width = max([len("figure"), *(len(key) for result in results for key in result)])
    lines = [f"{'workload':<9} {'figure':<{width}} value"]
    for result in results:
        for key, value in result.items():
            if key == "workload":
                continue
            lines.append(f"{result['workload']:<9} {key:<{width}} {value}")
    return "\n".join(lines)


def to_json_lines(results: Sequence[dict[str, Any]]) -> str:
    """The figures as one JSON object per workload and line."""
    return "\n".join(json.dumps(r, sort_keys=True) for r in results)


__all__ = ["format_table", "median_ms", "median_of_runs", "ms", "percentile", "to_json_lines"]
