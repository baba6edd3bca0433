"""The durable store: one SQLite file per endpoint, in WAL mode.

Theory of operation. Everything a replica knows durably lives here: the executed log of each
space (the delta as received, its order key, hash, and the undo records of its commands), the
member grants seen in that log, equivocation evidence, each space's engine state (a key/value map
per engine instance) and the endpoint's own last dependency vector per space. The in-memory
vector of a replica is derived from the log, so "log, undo records, vectors and engine state" are
one transaction: :meth:`Store.transaction` wraps a batch of executions, and a crash at any
instant leaves exactly the last committed batch. Nothing is written outside a transaction.

``durability="full"`` (the default) syncs the WAL on every commit, so a committed batch survives
power loss; ``"normal"`` syncs at checkpoints only (a committed batch survives a process crash,
not a power cut) and is what the simulator uses.

A store opened with a key is a SQLCipher database (``sqlcipher3``, the ``sqlite3`` interface
with SQLCipher built in): pages, WAL frames and journal are encrypted; nothing else differs.

Every ``sqlite3`` (or ``sqlcipher3``) error is translated to :class:`~p2pspace.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from p2pspace.errors import LocalProtocolError, StorageError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS spaces (space BLOB PRIMARY KEY, genesis BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    space BLOB NOT NULL, creator BLOB NOT NULL, seq INTEGER NOT NULL,
    block INTEGER NOT NULL, rank INTEGER NOT NULL,
    hash BLOB NOT NULL, signed INTEGER NOT NULL, wire BLOB NOT NULL, undo BLOB, keys BLOB,
    PRIMARY KEY (space, creator, seq)
) WITHOUT ROWID;
-- In order-key order, with each row's packed footprint: the walk of a selective merge reads
-- the index alone.
CREATE INDEX IF NOT EXISTS log_walk ON log (space, block, rank, creator, seq, keys);
CREATE TABLE IF NOT EXISTS grants (
    space BLOB NOT NULL, member BLOB NOT NULL, key BLOB NOT NULL,
    creator BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (space, member, creator, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evidence (
    space BLOB NOT NULL, creator BLOB NOT NULL, seq INTEGER NOT NULL,
    kept_hash BLOB NOT NULL, other_wire BLOB NOT NULL,
    PRIMARY KEY (space, creator, seq, other_wire)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    space BLOB NOT NULL, instance TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (space, instance, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS own (space BLOB PRIMARY KEY, deps BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS claimed (
    space BLOB NOT NULL, creator BLOB NOT NULL, vector BLOB NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (space, creator)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members_deltas (
    space BLOB NOT NULL, creator BLOB NOT NULL, seq INTEGER NOT NULL, vector BLOB NOT NULL,
    unsupported INTEGER NOT NULL, PRIMARY KEY (space, creator, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS void (
    space BLOB NOT NULL, creator BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (space, creator, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sponsors (
    space BLOB NOT NULL, peer BLOB NOT NULL, PRIMARY KEY (space, peer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peer_acks (
    space BLOB NOT NULL, peer BLOB NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (space, peer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tool_local (
    tool TEXT NOT NULL, space BLOB NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (tool, space, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peer_seen (
    peer BLOB PRIMARY KEY NOT NULL, seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS base (
    space BLOB NOT NULL, instance TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (space, instance, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS base_heads (
    space BLOB NOT NULL, creator BLOB NOT NULL, seq INTEGER NOT NULL, vector BLOB NOT NULL,
    used INTEGER NOT NULL, PRIMARY KEY (space, creator)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_parts (
    space BLOB NOT NULL, manifest BLOB NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (space, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS held_back (
    space BLOB NOT NULL, idx INTEGER NOT NULL, wire BLOB NOT NULL, PRIMARY KEY (space, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    space BLOB PRIMARY KEY, purged BLOB NOT NULL, keep INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS purged_ranks (
    space BLOB NOT NULL, creator BLOB NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (space, creator, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS invitations (
    id BLOB PRIMARY KEY, space BLOB NOT NULL, secret BLOB NOT NULL, role TEXT NOT NULL,
    expires INTEGER NOT NULL, used_by BLOB
) WITHOUT ROWID;
"""

LogRow = tuple[bytes, int, int, bytes, bytes, bytes | None]
# (space, creator, seq, rank, hash, signed, wire, undo, keys): a row as a commit inserts it.
LogInsert = tuple[bytes, bytes, int, int, bytes, int, bytes, bytes | None, bytes | None]
"""``(creator, seq, rank, hash, wire, undo)`` of one executed delta."""


class Store:
    """One endpoint's SQLite store. Not thread-safe: one owner drives it."""

    def __init__(self, path: Path, *, durability: str = "full", key: bytes | None = None) -> None:
        """Open (or create) the store at ``path``. ``key`` (32 bytes) makes it a SQLCipher
        database encrypted under that raw key; without one the standard ``sqlite3`` opens it.
        Raises :class:`StorageError`, also if ``key`` does not open an existing store."""
        if durability not in ("full", "normal"):
            raise LocalProtocolError("durability is 'full' or 'normal'")
        if key is not None and len(key) != 32:
            raise LocalProtocolError("a store key is 32 bytes")
        self.path = path
        self._in_txn = False
        self._durability = durability
        self._synced = durability == "full"  # the connection's current synchronous mode is FULL
        # What the driver raises: SQLCipher's binding has its own classes, not sqlite3's.
        self._errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        try:
            self._db = self._connect(path, key)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability.upper()}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.execute("PRAGMA cache_size=-65536")
            # Checkpoint the WAL every ~40 MB instead of every 4 MB: write-heavy batches then
            # stall for checkpoints a tenth as often (the WAL is synced on every commit anyway).
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(log)")}
            if columns and "keys" not in columns:
                # A store made before footprints were kept: its rows read as NULL (not
                # recorded), so merges decode them as before; the order index gains them.
                self._db.execute("ALTER TABLE log ADD COLUMN keys BLOB")
                self._db.execute("DROP INDEX IF EXISTS log_order")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
            elif row[0] != SCHEMA_VERSION:
                raise StorageError(f"{path}: unsupported schema version {row[0]}")
        except self._errors as exc:
            raise StorageError(f"cannot open store {path}: {exc}") from None

    def _connect(self, path: Path, key: bytes | None) -> sqlite3.Connection:
        if key is None:
            return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # Imported only for an encrypted store: a plain one stays on the standard sqlite3.
        import sqlcipher3  # type: ignore[import-untyped]

        self._errors = (sqlcipher3.Error,)
        db = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            # A wrong key is reported by the error raised below, not by lines on stderr.
            db.execute("PRAGMA cipher_log_level = NONE")
            # A raw key (x'...'): the data key is random, so no KDF runs on every open.
            db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError:
            db.close()
            raise StorageError(
                f"{path} does not open with this home's key (or is not a p2pspace store)"
            ) from None
        return cast(sqlite3.Connection, db)

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            if self._in_txn:
                self._db.execute("ROLLBACK")
            self._db.close()

    # -- transactions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, sync: bool = True) -> Iterator[None]:
        """One atomic batch. Raises :class:`StorageError` (and rolls back) on any SQLite error.

        ``sync=False`` (for batches that only hold deltas received from peers) skips the WAL
        sync of this commit under ``durability="full"``: the commit survives a process crash,
        and the next synced commit -- every local delta's -- makes it durable against power
        loss too, since the WAL is sequential. A power cut in between loses only deltas that
        peers still hold and send again; a local delta can never outlive its dependencies.
        """
        if self._in_txn:
            raise LocalProtocolError("store transactions do not nest")
        # The mode is switched only when it changes: a run of received batches (a catch-up)
        # costs no extra statements.
        want = sync and self._durability == "full"
        try:
            if want != self._synced and self._durability == "full":
                self._db.execute(f"PRAGMA synchronous={'FULL' if want else 'NORMAL'}")
                self._synced = want
            self._db.execute("BEGIN IMMEDIATE")
        except self._errors as exc:
            raise StorageError(f"cannot begin transaction: {exc}") from None
        self._in_txn = True
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(*self._errors):
                self._db.execute("ROLLBACK")
            if isinstance(exc, self._errors):
                raise StorageError(f"store write failed: {exc}") from None
            raise
        finally:
            self._in_txn = False

    def _require_txn(self) -> None:
        if not self._in_txn:
            raise LocalProtocolError("store writes need a transaction")

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._require_txn()
        try:
            self._db.execute(sql, params)
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def _write_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self._require_txn()
        try:
            self._db.executemany(sql, rows)
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except self._errors as exc:
            raise StorageError(f"store read failed: {exc}") from None

    # -- spaces -------------------------------------------------------------------------------

    def add_space(self, space: bytes, genesis_wire: bytes) -> None:
        self._write("INSERT INTO spaces (space, genesis) VALUES (?, ?)", (space, genesis_wire))

    def spaces(self) -> list[tuple[bytes, bytes]]:
        return [(bytes(s), bytes(g)) for s, g in self._read("SELECT space, genesis FROM spaces")]

    def has_space(self, space: bytes) -> bool:
        return bool(self._read("SELECT 1 FROM spaces WHERE space=?", (space,)))

    # -- sponsors -----------------------------------------------------------------------------

    def add_sponsors(self, space: bytes, peers: Sequence[bytes]) -> None:
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO sponsors (space, peer) VALUES (?, ?)",
                [(space, p) for p in peers],
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def sponsors(self) -> list[tuple[bytes, bytes]]:
        return [(bytes(s), bytes(p)) for s, p in self._read("SELECT space, peer FROM sponsors")]

    # -- what peers acknowledged ---------------------------------------------------------------

    def set_peer_acks(self, rows: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        """Store ``(space, peer, encoded vector)`` rows (the latest vector each peer acked)."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO peer_acks (space, peer, vector) VALUES (?, ?, ?)", rows
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def peer_acks(self) -> list[tuple[bytes, bytes, bytes]]:
        return [
            (bytes(s), bytes(p), bytes(v))
            for s, p, v in self._read("SELECT space, peer, vector FROM peer_acks")
        ]

    def set_peer_seen(self, rows: Sequence[tuple[bytes, int]]) -> None:
        """Store ``(peer, ms)`` rows: when this endpoint was last connected to each peer."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO peer_seen (peer, seen) VALUES (?, ?)", rows
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def peer_seen(self) -> list[tuple[bytes, int]]:
        return [(bytes(p), int(t)) for p, t in self._read("SELECT peer, seen FROM peer_seen")]

    # -- tools' local data (never replicated) --------------------------------------------------

    def tool_local(self, tool: str, space: bytes) -> dict[str, bytes]:
        """What ``tool`` keeps for ``space`` on this endpoint only: key -> value."""
        rows = self._read(
            "SELECT key, value FROM tool_local WHERE tool = ? AND space = ?", (tool, space)
        )
        return {str(k): bytes(v) for k, v in rows}

    def set_tool_local(self, tool: str, space: bytes, rows: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, value)`` rows of ``tool``'s local data for ``space``."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO tool_local (tool, space, key, value) VALUES (?, ?, ?, ?)",
                [(tool, space, key, value) for key, value in rows],
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    # -- invitations --------------------------------------------------------------------------

    def add_invitation(
        self, invitation: bytes, space: bytes, secret: bytes, role: str, expires: int
    ) -> None:
        self._write(
            "INSERT INTO invitations (id, space, secret, role, expires) VALUES (?, ?, ?, ?, ?)",
            (invitation, space, secret, role, expires),
        )

    def invitation(self, invitation: bytes) -> tuple[bytes, bytes, str, int, bytes | None] | None:
        """``(space, secret, role, expires, used_by)`` of an invitation this endpoint issued."""
        rows = self._read(
            "SELECT space, secret, role, expires, used_by FROM invitations WHERE id=?",
            (invitation,),
        )
        if not rows:
            return None
        space, secret, role, expires, used_by = rows[0]
        return (
            bytes(space),
            bytes(secret),
            role,
            expires,
            None if used_by is None else bytes(used_by),
        )

    def use_invitation(self, invitation: bytes, joiner: bytes) -> bool:
        """Mark an invitation used by ``joiner``; False if it was already used."""
        self._require_txn()
        try:
            cursor = self._db.execute(
                "UPDATE invitations SET used_by=? WHERE id=? AND used_by IS NULL",
                (joiner, invitation),
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None
        return cursor.rowcount == 1

    # -- whose store ----------------------------------------------------------------------------

    def claim_owner(self, endpoint_id: bytes) -> None:
        """Record the endpoint this store belongs to, or check it: :class:`StorageError` if the
        store was written by another endpoint (a store file copied or swapped in)."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='endpoint'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('endpoint', ?)", (endpoint_id,)
                )
                return
        except self._errors as exc:
            raise StorageError(f"cannot read store {self.path}: {exc}") from None
        if bytes(row[0]) != endpoint_id:
            raise StorageError(
                f"{self.path} belongs to endpoint {bytes(row[0]).hex()[:12]}, not to this "
                f"identity ({endpoint_id.hex()[:12]}): put the right store back, or move this "
                "one away to start an empty one"
            )

    # -- log ----------------------------------------------------------------------------------

    def insert_delta(
        self,
        space: bytes,
        creator: bytes,
        seq: int,
        rank: int,
        hash_: bytes,
        signed: bool,
        wire: bytes,
        undo: bytes | None,
    ) -> None:
        self._write(
            "INSERT INTO log (space, creator, seq, block, rank, hash, signed, wire, undo) "
            "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
            (space, creator, seq, rank, hash_, int(signed), wire, undo),
        )

    def set_undo(self, space: bytes, creator: bytes, seq: int, undo: bytes | None) -> None:
        self._write(
            "UPDATE log SET undo=? WHERE space=? AND creator=? AND seq=?",
            (undo, space, creator, seq),
        )

    def insert_deltas(self, rows: Sequence[LogInsert]) -> None:
        """Many :meth:`insert_delta` rows ``(space, creator, seq, rank, hash, signed, wire,
        undo, keys)`` in one statement; ``keys`` is the delta's packed footprint
        (:func:`p2pspace.core.merge.pack_keys`), or None if not recorded."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT INTO log "
                "(space, creator, seq, block, rank, hash, signed, wire, undo, keys) "
                "VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def set_undos(self, rows: Sequence[tuple[bytes | None, bytes, bytes, int]]) -> None:
        """Many :meth:`set_undo` rows ``(undo, space, creator, seq)`` in one statement."""
        self._require_txn()
        try:
            self._db.executemany(
                "UPDATE log SET undo=? WHERE space=? AND creator=? AND seq=?", rows
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def replace_delta(
        self,
        space: bytes,
        creator: bytes,
        seq: int,
        rank: int,
        hash_: bytes,
        wire: bytes,
        keys: bytes | None,
    ) -> None:
        """Put another copy of an executed delta (and its packed footprint) in its row
        (equivocation: the copy kept)."""
        self._write(
            "UPDATE log SET rank=?, hash=?, signed=1, wire=?, keys=? "
            "WHERE space=? AND creator=? AND seq=?",
            (rank, hash_, wire, keys, space, creator, seq),
        )

    def undo_of(self, space: bytes, creator: bytes, seq: int) -> bytes | None:
        rows = self._read(
            "SELECT undo FROM log WHERE space=? AND creator=? AND seq=?", (space, creator, seq)
        )
        return None if not rows or rows[0][0] is None else bytes(rows[0][0])

    def heads(self, space: bytes) -> dict[bytes, tuple[int, int, bytes]]:
        """Per creator: ``(seq, rank, hash)`` of its latest executed delta."""
        rows = self._read(
            "SELECT creator, seq, rank, hash FROM log AS l WHERE space=? AND seq = "
            "(SELECT MAX(seq) FROM log WHERE space=l.space AND creator=l.creator)",
            (space,),
        )
        return {bytes(c): (s, r, bytes(h)) for c, s, r, h in rows}

    def delta_info(self, space: bytes, creator: bytes, seq: int) -> tuple[int, bytes] | None:
        """``(rank, hash)`` of an executed delta, or ``None``."""
        rows = self._read(
            "SELECT rank, hash FROM log WHERE space=? AND creator=? AND seq=?",
            (space, creator, seq),
        )
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def wires_range(
        self, space: bytes, creator: bytes, first: int, last: int
    ) -> list[tuple[int, bool, bytes]]:
        """``(seq, signed, wire)`` of a creator's deltas ``first..last`` in seq order."""
        rows = self._read(
            "SELECT seq, signed, wire FROM log WHERE space=? AND creator=? AND seq BETWEEN ? AND ? "
            "ORDER BY seq",
            (space, creator, first, last),
        )
        return [(s, bool(g), bytes(w)) for s, g, w in rows]

    def log_after(
        self, space: bytes, after: tuple[int, int, bytes, int], limit: int
    ) -> list[tuple[int, bytes, int, int, bytes]]:
        """``(block, creator, seq, rank, wire)`` of executed deltas with order key > ``after``."""
        rows = self._read(
            "SELECT block, creator, seq, rank, wire FROM log WHERE space=? "
            "AND (block, rank, creator, seq) > (?, ?, ?, ?) "
            "ORDER BY block, rank, creator, seq LIMIT ?",
            (space, *after, limit),
        )
        return [(b, bytes(c), s, r, bytes(w)) for b, c, s, r, w in rows]

    def open_window(self, space: bytes) -> list[LogRow]:
        """The executed deltas no checkpoint has closed (block 0), in order-key order."""
        rows = self._read(
            "SELECT creator, seq, rank, hash, wire, undo FROM log WHERE space=? AND block=0 "
            "ORDER BY rank, creator, seq",
            (space,),
        )
        return [
            (bytes(c), s, r, bytes(h), bytes(w), None if u is None else bytes(u))
            for c, s, r, h, w, u in rows
        ]

    def close_block(
        self, space: bytes, block: int, ids: Sequence[tuple[bytes, int]], *, keep: bool = False
    ) -> None:
        """Move deltas into closed ``block``, dropping their footprints, and their undo
        records unless ``keep`` (a recorded no-op's reason); they are never undone again."""
        self._require_txn()
        sql = "UPDATE log SET block=?, keys=NULL" + ("" if keep else ", undo=NULL")
        try:
            self._db.executemany(
                sql + " WHERE space=? AND creator=? AND seq=?",
                [(block, space, c, s) for c, s in ids],
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def closed_vector(self, space: bytes) -> dict[bytes, int]:
        """Per creator, its last delta in a closed block (blocks below 0)."""
        rows = self._read(
            "SELECT creator, MAX(seq) FROM log WHERE space=? AND block<0 GROUP BY creator",
            (space,),
        )
        return {bytes(c): s for c, s in rows}

    def window_size(self, space: bytes) -> tuple[int, int]:
        """``(count, bytes)`` of the open window's deltas."""
        rows = self._read(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(wire)), 0) FROM log WHERE space=? AND block=0",
            (space,),
        )
        return int(rows[0][0]), int(rows[0][1])

    def key_of(self, space: bytes, creator: bytes, seq: int) -> tuple[int, int, bytes, int] | None:
        """The order key an executed delta holds now, or None."""
        rows = self._read(
            "SELECT block, rank FROM log WHERE space=? AND creator=? AND seq=?",
            (space, creator, seq),
        )
        return (rows[0][0], rows[0][1], creator, seq) if rows else None

    def suffix_desc(self, space: bytes, after: tuple[int, int, bytes, int]) -> list[LogRow]:
        """Executed deltas with order key > ``after``, latest first (the undo order)."""
        rows = self._read(
            "SELECT creator, seq, rank, hash, wire, undo FROM log WHERE space=? "
            "AND (block, rank, creator, seq) > (?, ?, ?, ?) "
            "ORDER BY block DESC, rank DESC, creator DESC, seq DESC",
            (space, *after),
        )
        return [
            (bytes(c), s, r, bytes(h), bytes(w), None if u is None else bytes(u))
            for c, s, r, h, w, u in rows
        ]

    def suffix_keys(
        self, space: bytes, after: tuple[int, int, bytes, int]
    ) -> list[tuple[int, int, bytes, int, bytes | None]]:
        """Executed deltas with order key > ``after``, in order: ``(block, rank, creator, seq,
        keys)``, keys the packed footprint or None if not recorded (what a selective merge
        walks; read from the order index alone)."""
        return self._read(
            "SELECT block, rank, creator, seq, keys FROM log WHERE space=? "
            "AND (block, rank, creator, seq) > (?, ?, ?, ?) "
            "ORDER BY block, rank, creator, seq",
            (space, *after),
        )

    def wire_and_undo(self, space: bytes, creator: bytes, seq: int) -> tuple[bytes, bytes | None]:
        """An executed delta's wire form and undo record."""
        rows = self._read(
            "SELECT wire, undo FROM log WHERE space=? AND creator=? AND seq=?",
            (space, creator, seq),
        )
        if not rows:
            raise StorageError(f"no executed delta {creator.hex()[:12]}/{seq} in the log")
        wire, undo = rows[0]
        return bytes(wire), None if undo is None else bytes(undo)

    def last_key(self, space: bytes) -> tuple[int, int, bytes, int] | None:
        rows = self._read(
            "SELECT block, rank, creator, seq FROM log WHERE space=? "
            "ORDER BY block DESC, rank DESC, creator DESC, seq DESC LIMIT 1",
            (space,),
        )
        return (rows[0][0], rows[0][1], bytes(rows[0][2]), rows[0][3]) if rows else None

    def log_size(self, space: bytes) -> int:
        return int(self._read("SELECT COUNT(*) FROM log WHERE space=?", (space,))[0][0])

    def iter_log(
        self, space: bytes, *, chunk: int = 4096
    ) -> Iterator[tuple[bytes, int, int, bytes]]:
        """Every executed delta ``(creator, seq, rank, wire)`` in order-key order."""
        after: tuple[int, int, bytes, int] = (-(2**63), 0, b"", 0)
        while True:
            rows = self.log_after(space, after, chunk)
            for _b, c, s, r, w in rows:
                yield c, s, r, w
            if len(rows) < chunk:
                return
            b, c, s, r, _w = rows[-1]
            after = (b, r, c, s)

    # -- members, evidence, own vector ----------------------------------------------------------

    def add_grant(self, space: bytes, member: bytes, key: bytes, creator: bytes, seq: int) -> None:
        self._write(
            "INSERT OR IGNORE INTO grants (space, member, key, creator, seq) "
            "VALUES (?, ?, ?, ?, ?)",
            (space, member, key, creator, seq),
        )

    def grants(self, space: bytes) -> list[tuple[bytes, bytes, bytes, int]]:
        rows = self._read("SELECT member, key, creator, seq FROM grants WHERE space=?", (space,))
        return [(bytes(m), bytes(k), bytes(c), s) for m, k, c, s in rows]

    def add_evidence(
        self, space: bytes, creator: bytes, seq: int, kept_hash: bytes, other_wire: bytes
    ) -> None:
        self._write(
            "INSERT OR IGNORE INTO evidence (space, creator, seq, kept_hash, other_wire) "
            "VALUES (?, ?, ?, ?, ?)",
            (space, creator, seq, kept_hash, other_wire),
        )

    def evidence(self, space: bytes) -> list[tuple[bytes, int, bytes, bytes]]:
        rows = self._read(
            "SELECT creator, seq, kept_hash, other_wire FROM evidence WHERE space=?", (space,)
        )
        return [(bytes(c), s, bytes(h), bytes(w)) for c, s, h, w in rows]

    # -- authority (see p2pspace.core.authority) -------------------------------------------------

    def set_claimed(self, rows: Sequence[tuple[bytes, bytes, bytes, int]]) -> None:
        """``(space, creator, vector, used)`` rows: each creator's claimed vector and bytes."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO claimed (space, creator, vector, used) VALUES (?, ?, ?, ?)",
                rows,
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def claimed(self, space: bytes) -> list[tuple[bytes, bytes, int]]:
        rows = self._read("SELECT creator, vector, used FROM claimed WHERE space=?", (space,))
        return [(bytes(c), bytes(v), u) for c, v, u in rows]

    def add_members_deltas(self, rows: Sequence[tuple[bytes, bytes, int, bytes, int]]) -> None:
        """``(space, creator, seq, vector, unsupported)`` rows of accepted members deltas."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO members_deltas (space, creator, seq, vector, unsupported) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def members_deltas(self, space: bytes) -> list[tuple[bytes, bytes, int]]:
        """``(wire, vector, unsupported)`` of every executed members delta."""
        rows = self._read(
            "SELECT l.wire, m.vector, m.unsupported FROM members_deltas AS m JOIN log AS l "
            "ON l.space = m.space AND l.creator = m.creator AND l.seq = m.seq WHERE m.space=?",
            (space,),
        )
        return [(bytes(w), bytes(v), u) for w, v, u in rows]

    def add_void(self, rows: Sequence[tuple[bytes, bytes, int]]) -> None:
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO void (space, creator, seq) VALUES (?, ?, ?)", rows
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def remove_void(self, rows: Sequence[tuple[bytes, bytes, int]]) -> None:
        self._require_txn()
        try:
            self._db.executemany("DELETE FROM void WHERE space=? AND creator=? AND seq=?", rows)
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def void(self, space: bytes) -> list[tuple[bytes, int]]:
        rows = self._read("SELECT creator, seq FROM void WHERE space=?", (space,))
        return [(bytes(c), s) for c, s in rows]

    def creator_wires(self, space: bytes, creator: bytes) -> Iterator[bytes]:
        """Every executed delta of ``creator``, in seq order (for rebuilding derived rows)."""
        seq = 0
        while True:
            rows = self.wires_range(space, creator, seq + 1, seq + 4096)
            for _s, _signed, wire in rows:
                yield wire
            if len(rows) < 4096:
                return
            seq = rows[-1][0]

    def set_own_deps(self, space: bytes, deps: bytes) -> None:
        self._write("INSERT OR REPLACE INTO own (space, deps) VALUES (?, ?)", (space, deps))

    def own_deps(self, space: bytes) -> bytes | None:
        rows = self._read("SELECT deps FROM own WHERE space=?", (space,))
        return bytes(rows[0][0]) if rows else None

    # -- engine state ---------------------------------------------------------------------------

    def state_get(self, space: bytes, instance: str, key: bytes) -> bytes | None:
        rows = self._read(
            "SELECT value FROM state WHERE space=? AND instance=? AND key=?", (space, instance, key)
        )
        return bytes(rows[0][0]) if rows else None

    def state_put(self, space: bytes, instance: str, key: bytes, value: bytes) -> None:
        self._write(
            "INSERT OR REPLACE INTO state (space, instance, key, value) VALUES (?, ?, ?, ?)",
            (space, instance, key, value),
        )

    def state_delete(self, space: bytes, instance: str, key: bytes) -> None:
        self._write(
            "DELETE FROM state WHERE space=? AND instance=? AND key=?", (space, instance, key)
        )

    def state_write(
        self, puts: list[tuple[bytes, str, bytes, bytes]], deletes: list[tuple[bytes, str, bytes]]
    ) -> None:
        """Batched :meth:`state_put` and :meth:`state_delete` rows."""
        self._require_txn()
        try:
            if puts:
                self._db.executemany(
                    "INSERT OR REPLACE INTO state (space, instance, key, value) "
                    "VALUES (?, ?, ?, ?)",
                    puts,
                )
            if deletes:
                self._db.executemany(
                    "DELETE FROM state WHERE space=? AND instance=? AND key=?", deletes
                )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def state_scan(self, space: bytes, instance: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
        if prefix:
            upper = _successor(prefix)
            if upper is None:  # the prefix is all 0xff bytes: no upper bound
                rows = self._read(
                    "SELECT key, value FROM state WHERE space=? AND instance=? AND key >= ? "
                    "AND substr(key, 1, ?) = ? ORDER BY key",
                    (space, instance, prefix, len(prefix), prefix),
                )
            else:
                # Both bounds, so the index range holds exactly the prefix's keys.
                rows = self._read(
                    "SELECT key, value FROM state WHERE space=? AND instance=? AND key >= ? "
                    "AND key < ? ORDER BY key",
                    (space, instance, prefix, upper),
                )
        else:
            rows = self._read(
                "SELECT key, value FROM state WHERE space=? AND instance=? ORDER BY key",
                (space, instance),
            )
        return [(bytes(k), bytes(v)) for k, v in rows]

    # -- the state at the last checkpoint (p2pspace.core.snapshot) -------------------------------

    def capture_base(self, space: bytes) -> None:
        """Copy the engine state as it is now (a checkpoint just closed) as the base state."""
        self._write("DELETE FROM base WHERE space=?", (space,))
        self._write(
            "INSERT INTO base (space, instance, key, value) "
            "SELECT space, instance, key, value FROM state WHERE space=?",
            (space,),
        )

    def base_rows(self, space: bytes) -> list[tuple[str, bytes, bytes]]:
        rows = self._read(
            "SELECT instance, key, value FROM base WHERE space=? ORDER BY instance, key", (space,)
        )
        return [(i, bytes(k), bytes(v)) for i, k, v in rows]

    def set_base_heads(self, rows: Sequence[tuple[bytes, bytes, int, bytes, int]]) -> None:
        """``(space, creator, seq, vector, used)``: each creator's last closed delta, the full
        dependency vector it claims (itself included) and its creator's bytes up to it."""
        self._require_txn()
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO base_heads (space, creator, seq, vector, used) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    def base_heads(self, space: bytes) -> list[tuple[bytes, int, bytes, int]]:
        rows = self._read(
            "SELECT creator, seq, vector, used FROM base_heads WHERE space=? ORDER BY creator",
            (space,),
        )
        return [(bytes(c), s, bytes(v), u) for c, s, v, u in rows]

    def closed_members_deltas(self, space: bytes) -> list[tuple[bytes, bytes, int]]:
        """``(wire, vector, unsupported)`` of the members deltas in closed blocks, in order."""
        rows = self._read(
            "SELECT l.wire, m.vector, m.unsupported FROM members_deltas AS m JOIN log AS l "
            "ON l.space = m.space AND l.creator = m.creator AND l.seq = m.seq "
            "WHERE m.space=? AND l.block<0 ORDER BY l.block, l.rank, l.creator, l.seq",
            (space,),
        )
        return [(bytes(w), bytes(v), u) for w, v, u in rows]

    def log_row(
        self, space: bytes, creator: bytes, seq: int
    ) -> tuple[int, int, bool, bytes] | None:
        """``(block, rank, signed, wire)`` of one executed delta, or None."""
        rows = self._read(
            "SELECT block, rank, signed, wire FROM log WHERE space=? AND creator=? AND seq=?",
            (space, creator, seq),
        )
        return (rows[0][0], rows[0][1], bool(rows[0][2]), bytes(rows[0][3])) if rows else None

    def replace_space_content(
        self,
        space: bytes,
        *,
        state: Sequence[tuple[str, bytes, bytes]],
        log: Sequence[tuple[bytes, int, int, int, bytes, bool, bytes]],
        heads: Sequence[tuple[bytes, int, bytes, int]],
        members: Sequence[tuple[bytes, int, bytes, int]],
        grants: Sequence[tuple[bytes, bytes, bytes, int]],
    ) -> None:
        """Replace a space's log, state and authority rows by a verified snapshot's (inside a
        transaction). ``log``: ``(creator, seq, block, rank, hash, signed, wire)``; ``heads``:
        ``(creator, seq, vector, used)``; ``members``: ``(creator, seq, vector, unsupported)``;
        ``grants``: ``(member, key, creator, seq)``."""
        self._require_txn()
        try:
            for table in (
                "log",
                "state",
                "base",
                "base_heads",
                "grants",
                "claimed",
                "members_deltas",
                "void",
            ):
                self._db.execute(f"DELETE FROM {table} WHERE space=?", (space,))
            self._db.executemany(
                "INSERT INTO state (space, instance, key, value) VALUES (?, ?, ?, ?)",
                [(space, i, k, v) for i, k, v in state],
            )
            self._db.executemany(
                "INSERT INTO base (space, instance, key, value) VALUES (?, ?, ?, ?)",
                [(space, i, k, v) for i, k, v in state],
            )
            self._db.executemany(
                "INSERT INTO log (space, creator, seq, block, rank, hash, signed, wire, undo) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                [(space, c, q, b, r, h, int(g), w) for c, q, b, r, h, g, w in log],
            )
            self._db.executemany(
                "INSERT INTO base_heads (space, creator, seq, vector, used) VALUES (?, ?, ?, ?, ?)",
                [(space, c, q, v, u) for c, q, v, u in heads],
            )
            self._db.executemany(
                "INSERT INTO claimed (space, creator, vector, used) VALUES (?, ?, ?, ?)",
                [(space, c, v, u) for c, _q, v, u in heads],
            )
            self._db.executemany(
                "INSERT INTO members_deltas (space, creator, seq, vector, unsupported) "
                "VALUES (?, ?, ?, ?, ?)",
                [(space, c, q, v, u) for c, q, v, u in members],
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO grants (space, member, key, creator, seq) "
                "VALUES (?, ?, ?, ?, ?)",
                [(space, m, k, c, q) for m, k, c, q in grants],
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None

    # -- the closed history kept (p2pspace.core.history) ----------------------------------------

    def history(self, space: bytes) -> tuple[bytes | None, bool]:
        """``(purged vector blob, keep history)`` of a space; ``(None, False)`` if never set."""
        rows = self._read("SELECT purged, keep FROM history WHERE space=?", (space,))
        return (bytes(rows[0][0]), bool(rows[0][1])) if rows else (None, False)

    def set_history(self, space: bytes, purged: bytes, *, keep: bool) -> None:
        self._write(
            "INSERT OR REPLACE INTO history (space, purged, keep) VALUES (?, ?, ?)",
            (space, purged, int(keep)),
        )

    def closed_ranks(self, space: bytes) -> Iterator[tuple[bytes, int, int]]:
        """``(creator, seq, rank)`` of every closed delta held, by creator and seq (streamed)."""
        try:
            cursor = self._db.execute(
                "SELECT creator, seq, rank FROM log WHERE space=? AND block<0"
                " ORDER BY creator, seq",
                (space,),
            )
            while rows := cursor.fetchmany(4096):
                for c, s, r in rows:
                    yield bytes(c), s, r
        except self._errors as exc:
            raise StorageError(f"store read failed: {exc}") from None

    def purged_ranks_through(self, space: bytes) -> dict[bytes, int]:
        """Per creator, the last seq whose rank is packed."""
        rows = self._read(
            "SELECT creator, MAX(last) FROM purged_ranks WHERE space=? GROUP BY creator", (space,)
        )
        return {bytes(c): s for c, s in rows}

    def add_purged_ranks(self, rows: Sequence[tuple[bytes, bytes, int, int, bytes]]) -> None:
        """``(space, creator, first, last, packed)`` chunks of compacted deltas' ranks."""
        self._write_many(
            "INSERT OR REPLACE INTO purged_ranks (space, creator, first, last, data) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    def purged_ranks(self, space: bytes, creator: bytes, seq: int) -> tuple[int, bytes] | None:
        """``(first, packed)`` of the chunk holding ``creator``'s ``seq``, or None."""
        rows = self._read(
            "SELECT first, last, data FROM purged_ranks WHERE space=? AND creator=? AND first<=? "
            "ORDER BY first DESC LIMIT 1",
            (space, creator, seq),
        )
        if not rows or rows[0][1] < seq:
            return None
        return rows[0][0], bytes(rows[0][2])

    def drop_purged_ranks(self, space: bytes) -> None:
        self._write("DELETE FROM purged_ranks WHERE space=?", (space,))

    def delete_closed(self, space: bytes) -> int:
        """Delete the closed deltas that are neither a creator's last closed one nor a members
        delta; returns how many."""
        self._require_txn()
        try:
            cursor = self._db.execute(
                "DELETE FROM log WHERE space=? AND block<0 AND NOT EXISTS (SELECT 1 FROM "
                "base_heads AS h WHERE h.space=log.space AND h.creator=log.creator AND "
                "h.seq=log.seq) AND NOT EXISTS (SELECT 1 FROM members_deltas AS m WHERE "
                "m.space=log.space AND m.creator=log.creator AND m.seq=log.seq)",
                (space,),
            )
        except self._errors as exc:
            raise StorageError(f"store write failed: {exc}") from None
        return int(cursor.rowcount)

    def truncate_wal(self) -> None:
        """Copy the write-ahead log into the database and cut the log file to nothing (outside
        transactions): after a purge, so the log does not hold on to the deleted history."""
        if self._in_txn:
            raise LocalProtocolError("the write-ahead log is truncated outside a transaction")
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except self._errors as exc:
            raise StorageError(f"store checkpoint failed: {exc}") from None

    def vacuum(self) -> None:
        """Give the pages freed by deletions back to the file system (outside transactions)."""
        if self._in_txn:
            raise LocalProtocolError("vacuum runs outside a transaction")
        try:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except self._errors as exc:
            raise StorageError(f"store vacuum failed: {exc}") from None

    # -- a snapshot being received: its verified chunks, kept across connections -----------------

    def snapshot_parts(self, space: bytes) -> tuple[bytes | None, dict[int, bytes]]:
        """The manifest of the snapshot being received for ``space`` and its chunks held."""
        rows = self._read(
            "SELECT manifest, idx, data FROM snapshot_parts WHERE space=? ORDER BY idx", (space,)
        )
        if not rows:
            return None, {}
        return bytes(rows[0][0]), {i: bytes(d) for _m, i, d in rows}

    def add_snapshot_part(self, space: bytes, manifest: bytes, index: int, data: bytes) -> None:
        self._write("DELETE FROM snapshot_parts WHERE space=? AND manifest<>?", (space, manifest))
        self._write(
            "INSERT OR REPLACE INTO snapshot_parts (space, manifest, idx, data) "
            "VALUES (?, ?, ?, ?)",
            (space, manifest, index, data),
        )

    def drop_snapshot_parts(self, space: bytes) -> None:
        self._write("DELETE FROM snapshot_parts WHERE space=?", (space,))

    def wires_beyond(self, space: bytes, covered: Mapping[bytes, int]) -> list[bytes]:
        """The wires of the executed deltas of ``space`` that ``covered`` (a vector) does
        not cover, in executed order. The order index is walked alone; only the deltas
        beyond are read whole."""
        rows = self._read(
            "SELECT creator, seq FROM log WHERE space=? ORDER BY block, rank, creator, seq",
            (space,),
        )
        wires = []
        for creator, seq in rows:
            if seq > covered.get(bytes(creator), 0):
                row = self.log_row(space, bytes(creator), seq)
                if row is not None:
                    wires.append(row[3])
        return wires

    def hold_back(self, space: bytes, wires: Sequence[bytes]) -> None:
        """Keep ``wires`` (deltas to receive again once a snapshot is installed) until
        :meth:`drop_held_back`: they survive a crash in between."""
        self._write("DELETE FROM held_back WHERE space=?", (space,))
        self._write_many(
            "INSERT INTO held_back (space, idx, wire) VALUES (?, ?, ?)",
            [(space, i, w) for i, w in enumerate(wires)],
        )

    def held_back(self, space: bytes) -> list[bytes]:
        rows = self._read("SELECT wire FROM held_back WHERE space=? ORDER BY idx", (space,))
        return [bytes(w) for (w,) in rows]

    def drop_held_back(self, space: bytes) -> None:
        self._write("DELETE FROM held_back WHERE space=?", (space,))

    def state_rows(self, space: bytes) -> list[tuple[str, bytes, bytes]]:
        rows = self._read(
            "SELECT instance, key, value FROM state WHERE space=? ORDER BY instance, key", (space,)
        )
        return [(i, bytes(k), bytes(v)) for i, k, v in rows]


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
