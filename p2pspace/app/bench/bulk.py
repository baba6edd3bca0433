"""Deltas in bulk for the workloads: endpoints with fixed seeds, records, random field updates.

The setup of a workload is not what it measures, so deltas are made with group commit (one
transaction and one signature per chain of ``GROUP``) wherever the workload allows it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from p2pspace.core.delta import Command
from p2pspace.engines import rdb
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint

GROUP = 1024  # one transaction and one signature per chain (MAX_CHAIN)


def bench_endpoint(root: Path, name: str) -> Endpoint:
    """An endpoint in ``root/name`` whose identity comes from its name (same ids every run)."""
    return open_endpoint(root / name, seed=f"bench-{name}".encode(), name=name)


def add_records(ep: Endpoint, space: bytes, count: int) -> None:
    """Records ``r0`` ... of table ``t`` (field ``v`` = 0), created with group commit."""
    for start in range(0, count, GROUP):
        ep.create_many(
            space,
            [[rdb.create("t", f"r{k}", {"v": 0})] for k in range(start, min(count, start + GROUP))],
            time=0,
        )


def set_commands(
    rng: random.Random, n: int, records: int, prefix: str = "r"
) -> list[list[Command]]:
    """``n`` one-command batches, each setting ``v`` of a random one of ``records`` records."""
    return [
        [rdb.set_fields("t", f"{prefix}{rng.randrange(records)}", {"v": rng.randrange(1 << 30)})]
        for _ in range(n)
    ]


def create_grouped(ep: Endpoint, space: bytes, batches: Sequence[Sequence[Command]]) -> None:
    """One delta per batch, ``GROUP`` deltas per transaction and signature."""
    for start in range(0, len(batches), GROUP):
        ep.create_many(space, batches[start : start + GROUP], time=1)


__all__ = ["GROUP", "add_records", "bench_endpoint", "create_grouped", "set_commands"]
