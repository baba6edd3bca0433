"""The workloads in one process, without a network: W1, W2 and W3 (W3R is in
:mod:`~p2pspace.app.bench.merge`).

* **W1 local commit** -- 50,000 one-command deltas (set a field on one of 1,000 records) created
  back to back on one durable endpoint, with one transaction per delta and with group commit.
  Baselines: bare SQLite insert of the same encoded bytes (same durability, same batching) and
  the Ed25519 sign rate.
* **W2 catch-up** -- endpoint B holds the first 25,000 of A's 50,000 deltas and catches up through
  the sync protocol (in process), four times with each setting below, each time from fresh
  copies of the two homes; the figures are the median catch-up. Baseline: bare CBOR decode +
  SQLite insert of the same deltas.
* **W3 concurrent merge** -- 3 endpoints each create 16,667 deltas (10% on shared records) while
  disconnected, then connect; seconds to converge and undo/redo counts.

W1 and W2 report group commit and catch-up with authorisation enforced (the product) and, from
the same run, without it (``Limits(enforce_roles=False)``), and the ratio of the two rates: what
deciding roles on the causal past and at execution costs. The twins start from byte-identical
copies of one home, and their timed parts alternate in the order on, off, off, on (W1: chain by
chain of 1,024 deltas; W2: catch-up by catch-up), so a machine that slows down or speeds up
during the run weighs on both alike.

W1, W2 and W3 also report the same edits done on pycrdt and loro documents (``pycrdt_*`` and
``loro_*`` figures, when the ``bench`` extra is installed):
:mod:`~p2pspace.app.bench.crdt_baselines`.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cbor2

from p2pspace.app.bench import crdt_baselines
from p2pspace.app.bench.bulk import (
    GROUP,
    ROLES_OFF,
    add_records,
    bench_endpoint,
    copy_home,
    create_grouped,
    member_space,
    set_commands,
)
from p2pspace.app.bench.merge import MERGERS, go_offline, merge_offline, offline_batches
from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command
from p2pspace.core.identity import Identity
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing.loopback import connect, pump

# The order of the timed parts of each round: on, off, then off, on (see the module docstring).
ROUND_ORDER = ((True, False), (False, True))
CATCH_UPS = 4  # W2's catch-ups with each setting (a multiple of 2); it reports their median


def _sqlite_baseline(path: Path, blobs: Sequence[bytes], group: int) -> float:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE log (space BLOB, creator BLOB, seq INTEGER, wire BLOB, "
        "PRIMARY KEY (space, creator, seq)) WITHOUT ROWID"
    )
    space, creator = b"s" * 16, b"c" * 16
    started = time.perf_counter()
    for start in range(0, len(blobs), group):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO log VALUES (?, ?, ?, ?)",
            ((space, creator, start + i, b) for i, b in enumerate(blobs[start : start + group])),
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(blobs) / elapsed


def _group_commit_twins(
    on: Endpoint, off: Endpoint, space: bytes, batches: Sequence[Sequence[Command]]
) -> tuple[float, float]:
    """Create ``batches`` with group commit on both twins, one chain at a time, alternating
    which twin goes first; return the seconds each took in all."""
    seconds = {True: 0.0, False: 0.0}
    twins = {True: on, False: off}
    for n, start in enumerate(range(0, len(batches), GROUP)):
        chain = batches[start : start + GROUP]
        for enforced in ROUND_ORDER[n % 2]:
            started = time.perf_counter()
            twins[enforced].create_many(space, chain, time=1)
            seconds[enforced] += time.perf_counter() - started
    return seconds[True], seconds[False]


def w1(
    root: Path, *, deltas: int = 50_000, records: int = 1_000, single: int | None = None
) -> dict[str, Any]:
    rng = random.Random(1)
    ep = bench_endpoint(root, "w1")
    space = ep.create_space("w1", time=0).space_id
    add_records(ep, space, records)
    batches = set_commands(rng, deltas, records)
    single_n = deltas if single is None else single
    started = time.perf_counter()
    for commands in batches[:single_n]:
        ep.create(space, commands, time=1)
    single_rate = single_n / (time.perf_counter() - started)
    ep.close()
    copy_home(root / "w1", root / "roles-off" / "w1")
    on = bench_endpoint(root, "w1")
    off = bench_endpoint(root / "roles-off", "w1", limits=ROLES_OFF)
    seconds_on, seconds_off = _group_commit_twins(on, off, space, batches)
    group_rate, group_rate_off = deltas / seconds_on, deltas / seconds_off
    replica = on.replica(space)
    wires = [w for _c, _s, _r, w in replica.store.iter_log(space)][-deltas:]
    on.close()
    off.close()
    sqlite_rate = _sqlite_baseline(root / "w1-baseline.sqlite3", wires, GROUP)
    ident = Identity.from_seed(b"bench-sign")
    sample = wires[: min(len(wires), 5000)]
    started = time.perf_counter()
    for wire in sample:
        ident.sign(wire)
    sign_rate = len(sample) / (time.perf_counter() - started)
    return {
        "workload": "W1",
        "deltas": deltas,
        "single_deltas": single_n,
        "deltas_per_s_single": round(single_rate),
        "deltas_per_s_group": round(group_rate),
        "deltas_per_s_group_roles_off": round(group_rate_off),
        "roles_ratio_group": round(group_rate / group_rate_off, 3),
        "baseline_sqlite_per_s": round(sqlite_rate),
        "baseline_sign_per_s": round(sign_rate),
        **crdt_baselines.w1(root, batches, records=records, single=single_n),
    }


def _catch_up(
    root: Path, space: bytes, limits: Limits | None
) -> tuple[float, int, bool, dict[bytes, int]]:
    """B's catch-up from A, on fresh endpoints opened on ``root``'s copies of the two homes:
    seconds, bytes from A to B, whether they converged, and B's vector before."""
    a = bench_endpoint(root, "w2a", limits=limits)
    b = bench_endpoint(root, "w2b", limits=limits)
    ra, rb = a.replica(space), b.replica(space)
    before = dict(rb.vector)
    started = time.perf_counter()
    link = connect(a, b)
    pump([link])
    elapsed = time.perf_counter() - started
    converged = ra.vector == rb.vector and ra.state_digest() == rb.state_digest()
    a.close()
    b.close()
    return elapsed, link.bytes_a_to_b, converged, before


def w2(root: Path, *, deltas: int = 50_000, records: int = 1_000) -> dict[str, Any]:
    rng = random.Random(2)
    (a, b), space = member_space(root, ["w2a", "w2b"])
    add_records(a, space, records)
    batches = set_commands(rng, deltas, records)
    create_grouped(a, space, batches)
    ra, rb = a.replica(space), b.replica(space)
    wires = [w for _c, _s, _r, w in ra.store.iter_log(space)]
    half = len(wires) - deltas // 2
    for start in range(0, half, 4096):
        rb.receive(wires[start : min(half, start + 4096)])
    # What B lacks is measured from its vector: a group-commit chain cut by the split point
    # stays pending in B until its signed delta arrives, so those deltas are sent too (B's
    # pending set is not stored: reopened, B asks for them again).
    have = rb.vector
    missing = [w for c, s, _r, w in ra.store.iter_log(space) if s > have.get(c, 0)]
    a.close()
    b.close()
    # The catch-ups, each from its own copy of the two homes: CATCH_UPS with roles enforced,
    # as many without, in the order on, off, off, on, on, off, ...
    order = [enforced for _ in range(CATCH_UPS // 2) for pair in ROUND_ORDER for enforced in pair]
    seconds: dict[bool, list[float]] = {True: [], False: []}
    sent: list[int] = []
    converged = True
    for n, enforced in enumerate(order):
        copy = root / f"catch-up-{n}"
        copy_home(root / "w2a", copy / "w2a")
        copy_home(root / "w2b", copy / "w2b")
        elapsed, sent_now, same, before = _catch_up(copy, space, None if enforced else ROLES_OFF)
        if before != have:
            raise RuntimeError(f"W2: the copy in {copy} does not hold what B held")
        shutil.rmtree(copy)
        seconds[enforced].append(elapsed)
        sent.append(sent_now)
        converged = converged and same
    elapsed = statistics.median(seconds[True])
    elapsed_off = statistics.median(seconds[False])
    # Baseline: bare decode of the same deltas and a batched SQLite insert, same durability.
    db = sqlite3.connect(str(root / "w2-baseline.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE log (creator BLOB, seq INTEGER, wire BLOB, "
        "PRIMARY KEY (creator, seq)) WITHOUT ROWID"
    )
    started = time.perf_counter()
    for start in range(0, len(missing), 1024):
        rows = []
        for i, wire in enumerate(missing[start : start + 1024]):
            body, _sig = cbor2.loads(wire)
            value = cbor2.loads(body)
            rows.append((value[2], start + i, wire))
        db.execute("BEGIN")
        db.executemany("INSERT INTO log VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    floor = len(missing) / (time.perf_counter() - started)
    db.close()
    rate, rate_off = len(missing) / elapsed, len(missing) / elapsed_off
    return {
        "workload": "W2",
        "deltas": len(missing),
        "seconds": round(elapsed, 3),
        "seconds_roles_off": round(elapsed_off, 3),
        "bytes": sent[0],  # the first catch-up (roles enforced)
        "stored_bytes": sum(len(w) for w in missing),
        "deltas_per_s": round(rate),
        "deltas_per_s_roles_off": round(rate_off),
        "roles_ratio": round(rate / rate_off, 3),
        "baseline_floor_per_s": round(floor),
        "converged": converged,
        **crdt_baselines.w2(root, batches, records=records, catch_ups=CATCH_UPS),
    }


def w3(root: Path, *, per_endpoint: int = 16_667, shared: int = 100) -> dict[str, Any]:
    """W3, and the same merge with full undo/redo (``full_*``: the baseline selective undo is
    measured against, in the same run)."""
    runs = {}
    offline: list[list[list[Command]]] = []
    for label, limits in (("selective", None), ("full", Limits(selective_undo=False))):
        rng = random.Random(3)
        eps, space = member_space(root / label, ["w3a", "w3b", "w3c"], limits=limits)
        go_offline(eps, space, shared)
        offline = [offline_batches(rng, n, per_endpoint, shared) for n in range(len(eps))]
        for ep, batches in zip(eps, offline, strict=True):
            create_grouped(ep, space, batches)
        runs[label] = merge_offline(eps, space)
        for ep in eps:
            ep.close()
    figures, full = runs["selective"], runs["full"]
    return {
        "workload": "W3",
        "deltas": per_endpoint * MERGERS,
        "seconds": figures["seconds"],
        "undone": figures["undone"],
        "redone": figures["redone"],
        "max_undos_per_delta": figures["max_undos_per_delta"],
        "converged": figures["converged"] and full["converged"],
        "full_undo_seconds": full["seconds"],
        "full_undone": full["undone"],
        **crdt_baselines.w3(root, offline, shared=shared),
    }


__all__ = ["w1", "w2", "w3"]
