"""Concurrent merges in one process, without a network: how W3 and W3R set up and time a merge,
and W3R.

The merging endpoints share a space and its records (:func:`go_offline`), create their deltas
while disconnected (:func:`offline_batches`), then connect in a full mesh and are pumped until
idle (:func:`merge_offline`, the timed part). W3 itself is in :mod:`~p2pspace.app.bench.local`.

* **W3R concurrent merge with role changes** -- W3's three endpoints and deltas in a space of
  20 members (the manager A adds B and C in one delta, then 17 members that never connect, one
  delta each), while A makes 5 role changes spread evenly through its offline deltas: C made
  manager, B made guest, one of the members that never connect made guest, B made participant
  again, C made participant again. No delta of B or C has those changes in its causal past, so
  every one is accepted; at execution the merge re-decides each delta on the members state at
  its place in the total order. B's deltas that sort between its demotion and its reinstatement
  are recorded no-ops (``noops``), on every replica alike. The same-run baseline is W3.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2pspace.app.bench.bulk import add_records, create_grouped, member_space
from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.identity import Identity
from p2pspace.engines import members, rdb
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing.loopback import Link, connect, pump

MERGERS = 3  # the endpoints that create deltas offline and then merge
ROLE_CHANGES = 5


def mesh(eps: Sequence[Endpoint]) -> list[Link]:
    """A link between every two of ``eps`` (sessions opened, nothing sent yet)."""
    return [connect(eps[i], eps[j]) for i in range(len(eps)) for j in range(i + 1, len(eps))]


def go_offline(eps: Sequence[Endpoint], space: bytes, shared: int) -> None:
    """The first endpoint creates the shared records; every endpoint receives them and
    everything else of the space (one short sync), then goes offline."""
    add_records(eps[0], space, shared)
    pump(mesh(eps))
    for ep in eps:
        for session in list(ep.sessions):
            ep.close_session(session)


def offline_batches(rng: random.Random, n: int, count: int, shared: int) -> list[list[Command]]:
    """Endpoint ``n``'s offline deltas: 10% set a field of a shared record, the others create
    a record of its own."""
    batches: list[list[Command]] = []
    for k in range(count):
        if rng.random() < 0.1:
            record = f"r{rng.randrange(shared)}"
            batches.append([rdb.set_fields("t", record, {"v": rng.randrange(1 << 30)})])
        else:
            batches.append([rdb.create("t", f"own{n}-{k}", {"v": k})])
    return batches


def merge_offline(eps: Sequence[Endpoint], space: bytes) -> dict[str, Any]:
    """Connect the offline endpoints (a full mesh) and pump until idle: the merge's figures.
    ``converged``: the same vector, order and state on every replica."""
    undo_counts: dict[tuple[int, DeltaId], int] = {}
    for n, ep in enumerate(eps):
        ep.replica(space).undo_listener = _undo_counter(undo_counts, n)
    started = time.perf_counter()
    pump(mesh(eps))
    elapsed = time.perf_counter() - started
    replicas = [ep.replica(space) for ep in eps]
    converged = (
        all(r.vector == replicas[0].vector for r in replicas)
        and len({r.order_digest() for r in replicas}) == 1
        and len({r.state_digest() for r in replicas}) == 1
    )
    return {
        "seconds": round(elapsed, 3),
        "undone": sum(r.stats.undone for r in replicas),
        "redone": sum(r.stats.redone for r in replicas),
        "max_undos_per_delta": max(undo_counts.values(), default=0),
        "converged": converged,
    }


def _undo_counter(
    counts: dict[tuple[int, DeltaId], int], n: int
) -> Callable[[Sequence[DeltaId]], None]:
    def count(ids: Sequence[DeltaId]) -> None:
        for did in ids:
            counts[(n, did)] = counts.get((n, did), 0) + 1

    return count


def _noops(ep: Endpoint, space: bytes) -> int:
    """How many executed deltas of the space are recorded no-ops on ``ep``."""
    replica = ep.replica(space)
    return sum(
        replica.refusal(DeltaId(creator, seq)) is not None
        for creator, seq, _rank, _wire in replica.store.iter_log(space)
    )


def w3r(
    root: Path, *, per_endpoint: int = 16_667, shared: int = 100, size: int = 20
) -> dict[str, Any]:
    """W3R (see the module docstring) in a space of ``size`` members (at least 4). Raises
    RuntimeError if the space does not end with ``size`` members and the roles the changes
    leave."""
    rng = random.Random(3)
    eps, space = member_space(root, ["w3ra", "w3rb", "w3rc"])
    a, b, c = (ep.endpoint_id for ep in eps)
    idle = [Identity.from_seed(f"bench-w3r-idle{k}".encode()) for k in range(size - MERGERS)]
    for k, ident in enumerate(idle):
        add = members.add_command(
            member_id=ident.endpoint_id, key=ident.public_key, name=f"idle{k}"
        )
        eps[0].create(space, [add], time=0)
    go_offline(eps, space, shared)
    changes = [(c, "manager"), (b, "guest"), (idle[0].endpoint_id, "guest")]
    changes += [(b, "participant"), (c, "participant")]
    for n, ep in enumerate(eps):
        batches = offline_batches(rng, n, per_endpoint, shared)
        if n != 0:
            create_grouped(ep, space, batches)
            continue
        # A's deltas in ROLE_CHANGES + 1 equal runs, one role change between two runs.
        cuts = [round(k * per_endpoint / (ROLE_CHANGES + 1)) for k in range(ROLE_CHANGES + 2)]
        for k in range(ROLE_CHANGES + 1):
            create_grouped(ep, space, batches[cuts[k] : cuts[k + 1]])
            if k < ROLE_CHANGES:
                ep.create(space, [members.role_command(*changes[k])], time=1)
    figures = merge_offline(eps, space)
    noops = [_noops(ep, space) for ep in eps]
    view = eps[0].replica(space).members()
    roles = {m.id: m.role for m in view.members()}
    for ep in eps:
        ep.close()
    expected = {a: "manager", b: "participant", c: "participant", idle[0].endpoint_id: "guest"}
    if len(roles) != size or any(roles.get(m) != role for m, role in expected.items()):
        raise RuntimeError(f"W3R: the space ended with {len(roles)} members, roles not as set")
    return {
        "workload": "W3R",
        "deltas": per_endpoint * MERGERS + ROLE_CHANGES,
        "members": size,
        "role_changes": ROLE_CHANGES,
        "seconds": figures["seconds"],
        "undone": figures["undone"],
        "redone": figures["redone"],
        "max_undos_per_delta": figures["max_undos_per_delta"],
        "noops": noops[0],
        "converged": figures["converged"] and len(set(noops)) == 1,
    }


__all__ = [
    "MERGERS",
    "go_offline",
    "merge_offline",
    "mesh",
    "offline_batches",
    "w3r",
]
