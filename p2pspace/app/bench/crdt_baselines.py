"""Same-run baselines for W1, W2, W3 and W8: the workload's own edits done on pycrdt (Yjs) and
loro documents, reported beside our figures as ``pycrdt_*`` and ``loro_*``.

Both libraries come with the ``bench`` extra (``pip install -e '.[bench]'``). A library that is
not importable gives no figures and no error; the bench says once, on stderr, which are missing.

The documents mirror the rdb table the workloads write: a root map ``t`` of records, each a
nested map of fields. The edits are the workload's own commands (:func:`edits_of` reads their
record and fields), in the same order, so both sides do exactly the same work. Every timed part
ends with its result on disk and ``fsync``-ed, as ours do (SQLite WAL, ``synchronous=FULL``):

* **W1** -- each transaction's update (the bytes a Yjs or loro document emits on commit) is
  appended to an update log and the log is ``fsync``-ed: one transaction per edit for the
  single figure, ``GROUP`` edits per transaction for the group figure. ``*_bytes`` is the size of
  the group run's log.
* **W2** -- B holds A's document after the first half of the edits; B sends its state vector
  (pycrdt ``get_state``, loro's encoded oplog version vector), A answers with the update B lacks
  (pycrdt ``get_update(state_vector)``, loro ``export(ExportMode.Updates(from_=...))``), B
  applies it and writes its whole encoded state (pycrdt ``get_update()``, loro snapshot) to a
  file, ``fsync``-ed. ``*_bytes`` is the update's size; the median of ``catch_ups`` catch-ups,
  each on a fresh B, as ours.
* **W3** -- three replicas hold the shared records, make their edits offline, then each sends
  each other one the update it lacks (from the pre-merge state vectors); every replica applies
  what it received and writes its encoded state to a file, ``fsync``-ed. ``*_converged``: the
  three documents hold equal values.
* **W8** -- one document makes the whole long history; ``*_state_bytes`` is its encoded state
  (what a new replica is sent), and a fresh document joins by applying it and writing its own
  state, ``fsync``-ed (``*_join_seconds``).
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from p2pspace.app.bench.bulk import GROUP
from p2pspace.core.delta import Command
from p2pspace.errors import LocalProtocolError

try:
    import pycrdt
except ImportError:  # the bench extra is not installed: no pycrdt figures
    HAVE_PYCRDT = False
else:
    HAVE_PYCRDT = True
try:
    import loro
except ImportError:  # the bench extra is not installed: no loro figures
    HAVE_LORO = False
else:
    HAVE_LORO = True

TABLE = "t"  # the root map holding the records, as the workloads' rdb table


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """One record edit: create the record with ``fields``, or set ``fields`` on it."""

    record: str
    fields: dict[str, Any]
    create: bool


def edits_of(batches: Sequence[Sequence[Command]]) -> list[Edit]:
    """The workload's rdb commands as edits, in order. Raises LocalProtocolError for a command
    other than an rdb create or set (a workload this module does not mirror)."""
    edits = []
    for batch in batches:
        for command in batch:
            if command.name not in ("create", "set"):
                raise LocalProtocolError(f"no CRDT baseline for command {command.name!r}")
            args = command.args
            edits.append(
                Edit(record=args["record"], fields=args["fields"], create=command.name == "create")
            )
    return edits


def creates(records: int) -> list[Edit]:
    """The records ``r0`` ... with field ``v`` = 0, as :func:`~p2pspace.app.bench.bulk.
    add_records` makes them."""
    return [Edit(record=f"r{k}", fields={"v": 0}, create=True) for k in range(records)]


class CrdtReplica(Protocol):
    """One document of a CRDT library, seen as a replica of the workloads' table."""

    def commit(self, edits: Sequence[Edit]) -> bytes:
        """Apply ``edits`` in one transaction; the update that transaction made."""
        ...

    def version(self) -> bytes:
        """The encoded state vector: what another replica needs to send only what is missing."""
        ...

    def update_since(self, version: bytes) -> bytes:
        """The update holding everything here that ``version`` lacks."""
        ...

    def apply(self, update: bytes) -> None: ...

    def encoded_state(self) -> bytes:
        """The whole document encoded, the form a replica is reopened from."""
        ...

    def value(self) -> Any:
        """The table as plain Python values (equal on converged replicas)."""
        ...


class PycrdtReplica:
    """A pycrdt (Yjs) document; ``client`` is its fixed client id (same bytes every run)."""

    def __init__(self, client: int) -> None:
        self._doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
        self._table: pycrdt.Map[Any] = self._doc.get(TABLE, type=pycrdt.Map)
        self._records: dict[str, pycrdt.Map[Any]] = {}
        self._updates: list[bytes] = []
        self._subscription = self._doc.observe(lambda event: self._updates.append(event.update))

    def _record(self, key: str) -> pycrdt.Map[Any]:
        found = self._records.get(key)
        if found is None:
            found = self._table[key]
            if not isinstance(found, pycrdt.Map):
                raise LocalProtocolError(f"record {key!r} is not in the document")
            self._records[key] = found
        return found

    def commit(self, edits: Sequence[Edit]) -> bytes:
        with self._doc.transaction():
            for edit in edits:
                if edit.create:
                    self._table[edit.record] = pycrdt.Map(dict(edit.fields))
                else:
                    record = self._record(edit.record)
                    for name, value in edit.fields.items():
                        record[name] = value
        return self._updates.pop()

    def version(self) -> bytes:
        return bytes(self._doc.get_state())

    def update_since(self, version: bytes) -> bytes:
        return bytes(self._doc.get_update(version))

    def apply(self, update: bytes) -> None:
        self._doc.apply_update(update)

    def encoded_state(self) -> bytes:
        return bytes(self._doc.get_update())

    def value(self) -> Any:
        return self._table.to_py()


class LoroReplica:
    """A loro document; ``peer`` is its fixed peer id (same bytes every run)."""

    def __init__(self, peer: int) -> None:
        self._doc = loro.LoroDoc()
        self._doc.peer_id = peer
        self._table = self._doc.get_map(TABLE)
        self._records: dict[str, loro.LoroMap] = {}
        self._updates: list[bytes] = []
        self._subscription = self._doc.subscribe_local_update(self._keep)

    def _keep(self, update: bytes) -> bool:
        self._updates.append(update)
        return True  # stay subscribed

    def _record(self, key: str) -> loro.LoroMap:
        found = self._records.get(key)
        if found is None:
            held = self._table.get(key)
            if not isinstance(held, loro.ValueOrContainer.Container) or not isinstance(
                held.container, loro.LoroMap
            ):
                raise LocalProtocolError(f"record {key!r} is not in the document")
            found = self._records[key] = held.container
        return found

    def commit(self, edits: Sequence[Edit]) -> bytes:
        for edit in edits:
            if edit.create:
                record = self._table.insert_container(edit.record, loro.LoroMap())
                if not isinstance(record, loro.LoroMap):
                    raise LocalProtocolError(f"loro made record {edit.record!r} no map")
                self._records[edit.record] = record
            else:
                record = self._record(edit.record)
            for name, value in edit.fields.items():
                record.insert(name, value)
        self._doc.commit()
        # A commit with nothing in it emits no update.
        return self._updates.pop() if self._updates else b""

    def version(self) -> bytes:
        return bytes(self._doc.oplog_vv.encode())

    def update_since(self, version: bytes) -> bytes:
        since = loro.VersionVector.decode(version)
        return bytes(self._doc.export(loro.ExportMode.Updates(from_=since)))

    def apply(self, update: bytes) -> None:
        self._doc.import_(update)

    def encoded_state(self) -> bytes:
        return bytes(self._doc.export(loro.ExportMode.Snapshot()))

    def value(self) -> Any:
        return self._table.get_deep_value()


def libraries() -> dict[str, Callable[[int], CrdtReplica]]:
    """The importable libraries, by figure prefix; notes the missing ones once on stderr."""
    found: dict[str, Callable[[int], CrdtReplica]] = {}
    if HAVE_PYCRDT:
        found["pycrdt"] = PycrdtReplica
    if HAVE_LORO:
        found["loro"] = LoroReplica
    missing = tuple(name for name in ("pycrdt", "loro") if name not in found)
    if missing:
        _note_missing(missing)
    return found


@functools.cache
def _note_missing(missing: tuple[str, ...]) -> None:
    names = " and ".join(missing)
    print(
        f"bench: {names} not importable, no {names} figures (pip install -e '.[bench]')",
        file=sys.stderr,
    )


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _commit_logged(replica: CrdtReplica, log: Path, chunks: Sequence[Sequence[Edit]]) -> float:
    """Commit each chunk in one transaction, appending its update to ``log`` and syncing the
    log after each; the seconds it took."""
    with log.open("ab") as f:
        started = time.perf_counter()
        for chunk in chunks:
            f.write(replica.commit(chunk))
            f.flush()
            os.fsync(f.fileno())
        return time.perf_counter() - started


def _grouped(edits: Sequence[Edit]) -> list[Sequence[Edit]]:
    return [edits[start : start + GROUP] for start in range(0, len(edits), GROUP)]


def _seeded(make: Callable[[int], CrdtReplica], client: int, records: int) -> CrdtReplica:
    replica = make(client)
    for chunk in _grouped(creates(records)):
        replica.commit(chunk)
    return replica


def w1(
    root: Path, batches: Sequence[Sequence[Command]], *, records: int, single: int
) -> dict[str, Any]:
    """W1 on each library: the first ``single`` of ``batches`` one transaction each, then all
    of them ``GROUP`` per transaction, on one document seeded with ``records`` records."""
    edits = edits_of(batches)
    figures: dict[str, Any] = {}
    for name, make in libraries().items():
        replica = _seeded(make, 1, records)
        one_each = _commit_logged(
            replica, root / f"{name}-w1-single.log", [[e] for e in edits[:single]]
        )
        group_log = root / f"{name}-w1-group.log"
        grouped = _commit_logged(replica, group_log, _grouped(edits))
        figures[f"{name}_deltas_per_s_single"] = round(single / one_each)
        figures[f"{name}_deltas_per_s_group"] = round(len(edits) / grouped)
        figures[f"{name}_bytes"] = group_log.stat().st_size
    return figures


def w2(
    root: Path, batches: Sequence[Sequence[Command]], *, records: int, catch_ups: int
) -> dict[str, Any]:
    """W2 on each library: A makes ``batches`` on ``records`` records, B holds A's document
    after the first half of them; the median of ``catch_ups`` catch-ups of a fresh B."""
    edits = edits_of(batches)
    have = len(edits) - len(edits) // 2
    figures: dict[str, Any] = {}
    for name, make in libraries().items():
        a = _seeded(make, 1, records)
        for chunk in _grouped(edits[:have]):
            a.commit(chunk)
        b_holds = a.encoded_state()
        for chunk in _grouped(edits[have:]):
            a.commit(chunk)
        seconds, sent, converged = [], 0, True
        for n in range(catch_ups):
            b = make(2)
            b.apply(b_holds)
            started = time.perf_counter()
            update = a.update_since(b.version())
            b.apply(update)
            state = b.encoded_state()
            _write_synced(root / f"{name}-w2-b{n}.state", state)
            seconds.append(time.perf_counter() - started)
            sent = len(update)
            converged = converged and b.value() == a.value()
        elapsed = statistics.median(seconds)
        figures[f"{name}_seconds"] = round(elapsed, 4)
        figures[f"{name}_deltas_per_s"] = round((len(edits) - have) / elapsed)
        figures[f"{name}_bytes"] = sent
        figures[f"{name}_state_bytes"] = len(state)
        figures[f"{name}_converged"] = converged
    return figures


def w3(
    root: Path, offline: Sequence[Sequence[Sequence[Command]]], *, shared: int
) -> dict[str, Any]:
    """W3 on each library: one replica per entry of ``offline`` (its offline batches), all
    holding ``shared`` records; the full-mesh merge."""
    edits = [edits_of(batches) for batches in offline]
    figures: dict[str, Any] = {}
    for name, make in libraries().items():
        first = _seeded(make, 1, shared)
        replicas = [first, *(make(n + 1) for n in range(1, len(edits)))]
        for replica in replicas[1:]:
            replica.apply(first.encoded_state())
        for replica, own in zip(replicas, edits, strict=True):
            for chunk in _grouped(own):
                replica.commit(chunk)
        started = time.perf_counter()
        versions = [r.version() for r in replicas]
        updates = [
            (target, source.update_since(versions[target]))
            for s, source in enumerate(replicas)
            for target in range(len(replicas))
            if target != s
        ]
        for target, update in updates:
            replicas[target].apply(update)
        for n, replica in enumerate(replicas):
            _write_synced(root / f"{name}-w3-{n}.state", replica.encoded_state())
        elapsed = time.perf_counter() - started
        values = [r.value() for r in replicas]
        figures[f"{name}_seconds"] = round(elapsed, 4)
        figures[f"{name}_bytes"] = sum(len(update) for _target, update in updates)
        figures[f"{name}_records"] = len(values[0])
        figures[f"{name}_converged"] = all(v == values[0] for v in values)
    return figures


def w8(
    root: Path, rounds: Iterable[Sequence[Sequence[Command]]], *, records: int
) -> dict[str, Any]:
    """W8 on each library: one document makes every edit of ``rounds`` (``GROUP`` a
    transaction) on ``records`` records; ``*_state_bytes`` is its whole encoded state, and a new
    replica joins by applying that state and writing its own to a file, ``fsync``-ed
    (``*_join_seconds``; ``*_join_bytes`` is the state it received)."""
    figures: dict[str, Any] = {}
    makers = libraries()
    if not makers:
        return figures
    docs = {name: _seeded(make, 1, records) for name, make in makers.items()}
    for batches in rounds:
        edits = edits_of(batches)
        for doc in docs.values():
            for chunk in _grouped(edits):
                doc.commit(chunk)
    for name, doc in docs.items():
        state = doc.encoded_state()
        started = time.perf_counter()
        joiner = makers[name](2)
        joiner.apply(state)
        _write_synced(root / f"{name}-w8-join.state", joiner.encoded_state())
        elapsed = time.perf_counter() - started
        figures[f"{name}_state_bytes"] = len(state)
        figures[f"{name}_join_seconds"] = round(elapsed, 4)
        figures[f"{name}_join_bytes"] = len(state)
        figures[f"{name}_converged"] = joiner.value() == doc.value()
    return figures


__all__ = [
    "HAVE_LORO",
    "HAVE_PYCRDT",
    "CrdtReplica",
    "Edit",
    "LoroReplica",
    "PycrdtReplica",
    "creates",
    "edits_of",
    "libraries",
    "w1",
    "w2",
    "w3",
    "w8",
]
