"""Deltas in bulk for the workloads: endpoints with fixed seeds, records, random field updates.

The setup of a workload is not what it measures, so deltas are made with group commit (one
transaction and one signature per chain of ``GROUP``) wherever the workload allows it. A
workload that compares authorisation on and off (W1, W2) runs the two on twin endpoints: one
home copied after the setup (:func:`copy_home`), reopened with :data:`ROLES_OFF`.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command
from p2pspace.engines import members, rdb
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint

GROUP = 1024  # one transaction and one signature per chain (MAX_CHAIN)

# Authorisation off: what the W1 and W2 figures with roles enforced are compared against.
ROLES_OFF = Limits(enforce_roles=False)


def bench_endpoint(root: Path, name: str, *, limits: Limits | None = None) -> Endpoint:
    """An endpoint in ``root/name`` whose identity comes from its name (same ids every run)."""
    return open_endpoint(root / name, seed=f"bench-{name}".encode(), name=name, limits=limits)


def member_space(
    root: Path, names: Sequence[str], *, limits: Limits | None = None
) -> tuple[list[Endpoint], bytes]:
    """Endpoints named ``names`` and a space the first one creates (a fixed nonce: the same
    space id every run) and adds the others to as participants, in one delta; the others have
    joined it but hold nothing else of it yet."""
    eps = [bench_endpoint(root, n, limits=limits) for n in names]
    first = eps[0]
    replica = first.create_space("bench", time=0, nonce=b"\x01" * 16)
    first.create(
        replica.space_id,
        [
            members.add_command(member_id=e.endpoint_id, key=e.identity.public_key, name=e.name)
            for e in eps[1:]
        ],
        time=0,
    )
    for e in eps[1:]:
        e.join_space(replica.genesis.wire())
    return eps, replica.space_id


def copy_home(source: Path, target: Path) -> None:
    """Copy the (closed) endpoint home ``source`` to ``target``, every file synced to disk: the
    kernel must not be writing the copy back while a twin is being timed."""
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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


__all__ = [
    "GROUP",
    "ROLES_OFF",
    "add_records",
    "bench_endpoint",
    "copy_home",
    "create_grouped",
    "member_space",
    "set_commands",
]
