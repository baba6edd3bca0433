"""The workloads in one process, without a network: W1, W2, W3.

* **W1 local commit** -- 50,000 one-command deltas (set a field on one of 1,000 records) created
  back to back on one durable endpoint, with one transaction per delta and with group commit.
  Baselines: bare SQLite insert of the same encoded bytes (same durability, same batching) and
  the Ed25519 sign rate.
* **W2 catch-up** -- endpoint B holds the first 25,000 of A's 50,000 deltas and catches up through
  the sync protocol (in process). Baseline: bare CBOR decode + SQLite insert of the same deltas.
* **W3 concurrent merge** -- 3 endpoints each create 16,667 deltas (10% on shared records) while
  disconnected, then connect; seconds to converge and undo/redo counts.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cbor2

from p2pspace.app.bench.bulk import (
    GROUP,
    add_records,
    bench_endpoint,
    create_grouped,
    set_commands,
)
from p2pspace.core.delta import Command
from p2pspace.core.identity import Identity
from p2pspace.engines import members, rdb
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing.loopback import connect, pump


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
    started = time.perf_counter()
    create_grouped(ep, space, batches)
    group_rate = deltas / (time.perf_counter() - started)
    replica = ep.replica(space)
    wires = [w for _c, _s, _r, w in replica.store.iter_log(space)][-deltas:]
    ep.close()
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
        "baseline_sqlite_per_s": round(sqlite_rate),
        "baseline_sign_per_s": round(sign_rate),
    }


def _member_pair(root: Path, names: Sequence[str]) -> tuple[list[Endpoint], bytes]:
    eps = [bench_endpoint(root, n) for n in names]
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


def w2(root: Path, *, deltas: int = 50_000, records: int = 1_000) -> dict[str, Any]:
    rng = random.Random(2)
    (a, b), space = _member_pair(root, ["w2a", "w2b"])
    add_records(a, space, records)
    create_grouped(a, space, set_commands(rng, deltas, records))
    ra, rb = a.replica(space), b.replica(space)
    wires = [w for _c, _s, _r, w in ra.store.iter_log(space)]
    half = len(wires) - deltas // 2
    for start in range(0, half, 4096):
        rb.receive(wires[start : min(half, start + 4096)])
    # What B lacks is measured from its vector: a group-commit chain cut by the split point
    # stays pending in B until its signed delta arrives, so those deltas are sent too.
    have = rb.vector
    missing = [w for c, s, _r, w in ra.store.iter_log(space) if s > have.get(c, 0)]
    started = time.perf_counter()
    link = connect(a, b)
    pump([link])
    elapsed = time.perf_counter() - started
    converged = ra.vector == rb.vector and ra.state_digest() == rb.state_digest()
    a.close()
    b.close()
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
    return {
        "workload": "W2",
        "deltas": len(missing),
        "seconds": round(elapsed, 3),
        "bytes": link.bytes_a_to_b,
        "stored_bytes": sum(len(w) for w in missing),
        "deltas_per_s": round(len(missing) / elapsed),
        "baseline_floor_per_s": round(floor),
        "converged": converged,
    }


def w3(root: Path, *, per_endpoint: int = 16_667, shared: int = 100) -> dict[str, Any]:
    rng = random.Random(3)
    eps, space = _member_pair(root, ["w3a", "w3b", "w3c"])
    add_records(eps[0], space, shared)
    # Every endpoint first receives the shared records (one short sync), then goes offline.
    links = [connect(eps[0], eps[1]), connect(eps[0], eps[2]), connect(eps[1], eps[2])]
    pump(links)
    for ep in eps:
        for session in list(ep.sessions):
            ep.close_session(session)
    undo_counts: dict[Any, int] = {}
    for n, ep in enumerate(eps):
        own_prefix = f"own{n}-"
        batches: list[list[Command]] = []
        for k in range(per_endpoint):
            if rng.random() < 0.1:
                batches.append(
                    [
                        rdb.set_fields(
                            "t", f"r{rng.randrange(shared)}", {"v": rng.randrange(1 << 30)}
                        )
                    ]
                )
            else:
                batches.append([rdb.create("t", f"{own_prefix}{k}", {"v": k})])
        create_grouped(ep, space, batches)
    for n, ep in enumerate(eps):
        ep.replica(space).undo_listener = _undo_counter(undo_counts, n)
    started = time.perf_counter()
    links = [connect(eps[0], eps[1]), connect(eps[0], eps[2]), connect(eps[1], eps[2])]
    pump(links)
    elapsed = time.perf_counter() - started
    replicas = [ep.replica(space) for ep in eps]
    converged = (
        all(r.vector == replicas[0].vector for r in replicas)
        and len({r.order_digest() for r in replicas}) == 1
        and len({r.state_digest() for r in replicas}) == 1
    )
    undone = sum(r.stats.undone for r in replicas)
    redone = sum(r.stats.redone for r in replicas)
    for ep in eps:
        ep.close()
    return {
        "workload": "W3",
        "deltas": per_endpoint * 3,
        "seconds": round(elapsed, 3),
        "undone": undone,
        "redone": redone,
        "max_undos_per_delta": max(undo_counts.values(), default=0),
        "converged": converged,
    }


def _undo_counter(counts: dict[Any, int], n: int) -> Callable[[Sequence[Any]], None]:
    def count(ids: Sequence[Any]) -> None:
        for did in ids:
            counts[(n, did)] = counts.get((n, did), 0) + 1

    return count


__all__ = ["w1", "w2", "w3"]
