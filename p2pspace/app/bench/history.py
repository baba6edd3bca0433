"""W8 long history: a busy space of three members over a long history, with automatic
checkpoints and purge, then a new member joining and one backdated delta arriving.

Three endpoints A, B and C share a space of ``records`` records (A is its founder and
checkpointer). A and B make ``deltas`` one-field edits between them, in rounds of ``window``,
taking turns of :data:`TURN` edits, each turn delivered in full over in-process sessions (the
real protocol, :mod:`p2pspace.testing.loopback`) before the next; C only reads. After each
round the endpoints do what a node's housekeeping does: A
closes the open window when :meth:`~p2pspace.core.replica.Replica.checkpoint_due` says so under
``CheckpointPolicy(max_count=window)`` (the peers' acknowledgements are their vectors, as they
hold everything delivered), and every replica purges when
:meth:`~p2pspace.core.replica.Replica.compaction_due` says so -- without VACUUM, as the node:
the freed pages are reused by the next rounds. Then:

* ``store_bytes`` -- A's SQLite files (database and write-ahead log) on disk;
* ``state_bytes`` -- the state at A's last checkpoint: its snapshot (manifest and chunks);
* ``join_seconds``, ``join_bytes`` -- A adds a fourth member D; D catches up from A over a
  session, from nothing to A's state digest (time, and bytes from A to D);
* ``backdate_ms``, ``backdate_undone`` -- after D joined, A and B make half a window more
  (``open_window``: what no checkpoint closed yet); then one delta C made right after the
  records were created (a copy of C's home taken then, so it depends on old history only, the
  lowest rank) arrives at A: the time A takes to receive it, and how many deltas A undid;
* ``rss_mb`` -- the peak resident memory of the process that ran all of it (the workload runs in
  its own interpreter, so nothing else counts), four endpoints together;
* ``converged`` -- A, B, C and D hold the same state, and A executed the backdated delta.

The same run's baselines: ``history_bytes``, the deltas' own bytes as made (what the store held
with no purge), and, when the ``bench`` extra is installed, the same edits on pycrdt and loro
(:func:`~p2pspace.app.bench.crdt_baselines.w8`: their state sizes and a fresh document's join).
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from p2pspace.app.bench.bulk import add_records, bench_endpoint, copy_home, member_space
from p2pspace.core.checkpoint import CheckpointPolicy
from p2pspace.core.delta import Command
from p2pspace.core.replica import Replica
from p2pspace.engines import members, rdb
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing.loopback import Link, connect, pump

DELTAS = 1_000_000
RECORDS = 1_000
WINDOW = 10_000  # the checkpoint policy's max_count (the node's default)
RUN_TIMEOUT = 4 * 3600  # seconds: the full size takes minutes
SETTLE_TICKS = 200  # ticks the replicas get to agree after a round (a few suffice)
TURN = 500  # edits one member makes (one transaction, one signature) before the other's turn


def _settle(links: Sequence[Link], eps: Sequence[Endpoint], space: bytes) -> None:
    """Pump ``links`` and tick ``eps`` until every replica of ``space`` executed the same
    deltas: relayed deltas travel on acks' announcements and fetches, which ticks drive."""
    for _ in range(SETTLE_TICKS):
        pump(links)
        vectors = [ep.replica(space).vector for ep in eps]
        if all(v == vectors[0] for v in vectors):
            return
        for ep in eps:
            ep.tick()
    raise RuntimeError(f"W8: replicas still differ after {SETTLE_TICKS} ticks")


def _store_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.rglob("*.sqlite3*") if p.is_file())


def _checkpoint(eps: Sequence[Endpoint], space: bytes, policy: CheckpointPolicy, now: int) -> None:
    """What the checkpointer's housekeeping does after a round: close the window if due (each
    peer's acknowledgement is its vector: it holds everything delivered)."""
    first, peers = eps[0].replica(space), eps[1:]
    acked = {e.endpoint_id: dict(e.replica(space).vector) for e in peers}
    if first.checkpoint_due(policy, now=now, acked=acked):
        first.create_checkpoint(time=now)


def _purge(eps: Sequence[Endpoint], space: bytes) -> int:
    """What every node's housekeeping does next: purge where due; returns the deltas purged."""
    acks = {e.endpoint_id: dict(e.replica(space).vector) for e in eps}
    purged = 0
    for e in eps:
        replica = e.replica(space)
        others = {peer: v for peer, v in acks.items() if peer != e.endpoint_id}
        if replica.compaction_due(others):
            purged += replica.compact()
    return purged


def edit_rounds(deltas: int, records: int, window: int) -> Iterator[list[list[Command]]]:
    """W8's edits, ``window`` a round: each one sets field ``v`` of a random record (seeded:
    the same edits every run, for us and for the CRDT baselines)."""
    rng = random.Random(8)
    made = 0
    while made < deltas:
        n = min(window, deltas - made)
        yield [
            [rdb.set_fields("t", f"r{rng.randrange(records)}", {"v": rng.randrange(1 << 30)})]
            for _ in range(n)
        ]
        made += n


def _counting(replica: Replica) -> list[int]:
    undone = [0]

    def listener(ids: Sequence[object]) -> None:
        undone[0] += len(ids)

    replica.undo_listener = listener
    return undone


def run_w8(root: Path, *, deltas: int, records: int, window: int) -> dict[str, Any]:
    """The workload itself, in this process (see the module's docstring)."""
    (a, b, c), space = member_space(root, ["w8a", "w8b", "w8c"])
    add_records(a, space, records)
    links = [connect(a, b), connect(a, c), connect(b, c)]
    pump(links)
    # C's home as it is now: the backdated delta is made from this copy at the end.
    for link in links:
        link.ea.close_session(link.a)
        link.eb.close_session(link.b)
    c.close()
    copy_home(root / "w8c", root / "w8c-early")
    c = bench_endpoint(root, "w8c")
    links = [connect(a, b), connect(a, c), connect(b, c)]
    pump(links)
    policy = CheckpointPolicy(max_count=window)
    eps = [a, b, c]
    history_bytes = 0
    purged = 0
    made = 0
    now = 1
    for batches in edit_rounds(deltas, records, window):
        n = len(batches)
        # A and B take turns of TURN edits, each turn delivered before the next (people
        # editing over a LAN: the edits interleave, seldom concurrent).
        for turn, start in enumerate(range(0, n, TURN)):
            writer = (a, b)[turn % 2]
            for delta in writer.create_many(space, batches[start : start + TURN], time=now):
                history_bytes += len(delta.wire())
            pump(links)
        made += n
        now += 1
        _checkpoint(eps, space, policy, now)
        pump(links)
        purged += _purge(eps, space)
    ra = a.replica(space)
    manifest, chunks = ra.snapshot()
    state_bytes = len(manifest.encode()) + sum(len(chunk) for chunk in chunks)
    store_bytes = _store_bytes(root / "w8a")
    # A new member joins: A adds D, D catches up from A.
    d = bench_endpoint(root, "w8d")
    a.create(
        space,
        [members.add_command(member_id=d.endpoint_id, key=d.identity.public_key, name=d.name)],
        time=now,
    )
    pump(links)
    started = time.perf_counter()
    d.join_space(ra.genesis.wire())
    join = connect(a, d)
    pump([join])
    join_seconds = time.perf_counter() - started
    join_bytes = join.bytes_a_to_b
    rd = d.replica(space)
    joined = rd.state_digest() == ra.state_digest() and rd.vector == ra.vector
    # D's admission is closed into a block (a members delta in the open window has no bounded
    # footprint: a delta sorting before it would undo everything after it). Then the space goes
    # on: half a window of edits that no checkpoint closes yet, the part a backdated delta can
    # still reorder.
    ra.create_checkpoint(time=now)
    pump([*links, join])
    purged += _purge([a, b, c, d], space)
    rng = random.Random(88)
    tail = [
        [rdb.set_fields("t", f"r{rng.randrange(records)}", {"v": rng.randrange(1 << 30)})]
        for _ in range(window // 2)
    ]
    for turn, start in enumerate(range(0, len(tail), TURN)):
        (a, b)[turn % 2].create_many(space, tail[start : start + TURN], time=now)
        _settle([*links, join], [a, b, c, d], space)
    open_window = ra.window()[0]
    # The backdated delta: C's early copy writes once, A receives it.
    early = bench_endpoint(root, "w8c-early")
    late = early.create(space, [rdb.set_fields("t", "r0", {"late": 1})], time=now)
    undone = _counting(ra)
    started = time.perf_counter()
    result = ra.receive([late.wire()])
    backdate_ms = (time.perf_counter() - started) * 1000
    ra.undo_listener = None
    _settle([*links, join], [a, b, c, d], space)
    executed = ra.refusal(late.id) is None and late.id in {delta.id for delta in result.executed}
    digests = {e.replica(space).state_digest() for e in (a, b, c, d)}
    figures: dict[str, Any] = {
        "workload": "W8",
        "deltas": made,
        "records": records,
        "window": window,
        "checkpoints": ra.horizon().number,
        "purged": purged,
        "store_bytes": store_bytes,
        "state_bytes": state_bytes,
        "history_bytes": history_bytes,
        "join_seconds": round(join_seconds, 3),
        "join_bytes": join_bytes,
        "open_window": open_window,
        "backdate_ms": round(backdate_ms, 2),
        "backdate_undone": undone[0],
        "converged": joined and executed and len(digests) == 1,
    }
    for endpoint in (a, b, c, d, early):
        endpoint.close()
    figures["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


def w8(
    root: Path, *, deltas: int = DELTAS, records: int = RECORDS, window: int = WINDOW
) -> dict[str, Any]:
    """Run W8 in its own interpreter (so ``rss_mb`` is its own) and return its figures."""
    args = json.dumps({"root": str(root), "deltas": deltas, "records": records, "window": window})
    done = subprocess.run(
        [sys.executable, "-m", "p2pspace.app.bench.history", args],
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"W8 failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    from p2pspace.app.bench import crdt_baselines  # here: not in the measured interpreter

    figures.update(crdt_baselines.w8(root, edit_rounds(deltas, records, window), records=records))
    return figures


def _main(argv: Sequence[str]) -> None:
    options = json.loads(argv[0])
    figures = run_w8(
        Path(options["root"]),
        deltas=int(options["deltas"]),
        records=int(options["records"]),
        window=int(options["window"]),
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    _main(sys.argv[1:])


__all__ = ["DELTAS", "RECORDS", "WINDOW", "run_w8", "w8"]
