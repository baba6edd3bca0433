"""The SQLite store: schema, transactions, log ordering, state scans and error translation."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pspace.core.kv_state import KVState
from p2pspace.core.store import SCHEMA_VERSION, Store
from p2pspace.errors import LocalProtocolError, StorageError

SPACE = b"S" * 16
OTHER_SPACE = b"T" * 16

# Order keys below deliberately disagree between rank, creator and seq so that a wrong ORDER BY
# column order shows up.
C1 = b"\x01" * 16
C2 = b"\x02" * 16
C3 = b"\xff" * 16
ROWS = [
    # (creator, seq, rank)
    (C2, 1, 1),
    (C1, 1, 2),
    (C3, 1, 2),
    (C1, 2, 3),
    (C2, 2, 3),
    (C1, 3, 5),
    (C2, 3, 4),
    (C3, 2, 10),
]
EXPECTED = sorted(ROWS, key=lambda r: (r[2], r[0], r[1]))


def _fill(store: Store, space: bytes = SPACE, rows: list[tuple[bytes, int, int]] = ROWS) -> None:
    with store.transaction():
        for creator, seq, rank in rows:
            store.insert_delta(
                space,
                creator,
                seq,
                rank,
                bytes([seq]) * 32,
                seq % 2 == 1,
                b"wire:" + creator[:1] + bytes([seq]),
                b"undo:" + creator[:1] + bytes([seq]),
            )


def _tables(path: Path) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_schema_created(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.close()
    assert _tables(tmp_path / "s.sqlite3") >= {
        "meta",
        "spaces",
        "log",
        "grants",
        "evidence",
        "state",
        "own",
    }
    db = sqlite3.connect(str(tmp_path / "s.sqlite3"))
    try:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            SCHEMA_VERSION,
        )
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_bad_durability_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError):
        Store(tmp_path / "s.sqlite3", durability="off")


def test_reopen_keeps_data(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with store.transaction():
        store.add_space(SPACE, b"genesis")
        store.state_put(SPACE, "db", b"k", b"v")
        store.set_own_deps(SPACE, b"deps")
        store.add_grant(SPACE, C1, b"K" * 32, C2, 1)
        store.add_evidence(SPACE, C1, 1, b"h" * 32, b"other")
    _fill(store)
    store.close()

    again = make_store("s")
    assert again.spaces() == [(SPACE, b"genesis")]
    assert again.has_space(SPACE)
    assert not again.has_space(OTHER_SPACE)
    assert again.state_get(SPACE, "db", b"k") == b"v"
    assert again.own_deps(SPACE) == b"deps"
    assert again.grants(SPACE) == [(C1, b"K" * 32, C2, 1)]
    assert again.evidence(SPACE) == [(C1, 1, b"h" * 32, b"other")]
    assert again.log_size(SPACE) == len(ROWS)
    assert [(c, s, r) for c, s, r, _w in again.iter_log(SPACE)] == EXPECTED


def test_schema_version_mismatch_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    db = sqlite3.connect(str(path))
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="schema version"):
        Store(path)


def test_store_without_footprint_column_gains_it(tmp_path: Path) -> None:
    """A store made before log rows kept footprints opens, keeps its rows, and reads their
    footprints as not recorded (NULL)."""
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    _fill(store)
    store.close()
    db = sqlite3.connect(str(path))
    db.execute("DROP INDEX log_walk")
    db.execute("ALTER TABLE log DROP COLUMN keys")
    db.execute("CREATE INDEX log_order ON log (space, block, rank, creator, seq)")
    db.commit()
    db.close()
    again = Store(path)
    assert [(c, s, r) for c, s, r, _w in again.iter_log(SPACE)] == EXPECTED
    assert [row[4] for row in again.suffix_keys(SPACE, (-1, 0, b"", 0))] == [None] * len(ROWS)
    again.close()
    db = sqlite3.connect(str(path))
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert "log_walk" in indexes and "log_order" not in indexes


def test_rollback_on_exception_leaves_nothing(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    _fill(store, rows=ROWS[:1])
    before_log = list(store.iter_log(SPACE))

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction():
        store.add_space(SPACE, b"g")
        store.state_put(SPACE, "db", b"k", b"v")
        store.insert_delta(SPACE, C1, 1, 2, b"h" * 32, True, b"w", None)
        store.set_own_deps(SPACE, b"d")
        store.add_grant(SPACE, C1, b"K" * 32, C1, 1)
        store.add_evidence(SPACE, C1, 1, b"h" * 32, b"x")
        raise Boom
    assert store.spaces() == []
    assert store.state_rows(SPACE) == []
    assert list(store.iter_log(SPACE)) == before_log
    assert store.own_deps(SPACE) is None
    assert store.grants(SPACE) == []
    assert store.evidence(SPACE) == []
    # The store is usable after the rollback, and a reopen sees the same (nothing).
    with store.transaction():
        store.state_put(SPACE, "db", b"k2", b"v2")
    store.close()
    again = make_store("s")
    assert again.state_rows(SPACE) == [("db", b"k2", b"v2")]
    assert again.spaces() == []


def test_sqlite_error_in_transaction_is_storage_error(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with pytest.raises(StorageError), store.transaction():
        store.state_put(SPACE, "db", b"k", b"v")
        store.add_space(SPACE, b"g")
        store.add_space(SPACE, b"g")  # primary key violation
    assert store.spaces() == []
    assert store.state_rows(SPACE) == []


def _kv_put_flush(store: Store) -> None:
    state = KVState(store, SPACE, "db")
    state.put(b"k", b"v")
    state.flush()


WRITES: list[tuple[str, Callable[[Store], None]]] = [
    ("add_space", lambda s: s.add_space(SPACE, b"g")),
    ("insert_delta", lambda s: s.insert_delta(SPACE, C1, 1, 1, b"h" * 32, True, b"w", None)),
    ("set_undo", lambda s: s.set_undo(SPACE, C1, 1, b"u")),
    ("add_grant", lambda s: s.add_grant(SPACE, C1, b"K" * 32, C1, 1)),
    ("add_evidence", lambda s: s.add_evidence(SPACE, C1, 1, b"h" * 32, b"w")),
    ("set_own_deps", lambda s: s.set_own_deps(SPACE, b"d")),
    ("state_put", lambda s: s.state_put(SPACE, "db", b"k", b"v")),
    ("state_delete", lambda s: s.state_delete(SPACE, "db", b"k")),
    (
        "insert_deltas",
        lambda s: s.insert_deltas([(SPACE, C1, 1, 1, b"h" * 32, 1, b"w", None, None)]),
    ),
    ("set_undos", lambda s: s.set_undos([(b"u", SPACE, C1, 1)])),
    ("state_write", lambda s: s.state_write([(SPACE, "db", b"k", b"v")], [])),
    ("state_write_delete", lambda s: s.state_write([], [(SPACE, "db", b"k")])),
    ("kvstate_flush", _kv_put_flush),
]


@pytest.mark.parametrize("write", [w for _n, w in WRITES], ids=[n for n, _w in WRITES])
def test_write_outside_transaction_refused(
    make_store: Callable[[str], Store], write: Callable[[Store], None]
) -> None:
    store = make_store("s")
    with pytest.raises(LocalProtocolError):
        write(store)
    assert store.spaces() == []
    assert store.log_size(SPACE) == 0
    assert store.state_rows(SPACE) == []
    assert store.own_deps(SPACE) is None
    assert store.grants(SPACE) == []
    assert store.evidence(SPACE) == []


def test_nested_transaction_refused(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with store.transaction():
        store.state_put(SPACE, "db", b"outer", b"1")
        with pytest.raises(LocalProtocolError), store.transaction():
            pass  # pragma: no cover - never entered
        store.state_put(SPACE, "db", b"outer2", b"2")
    # The refused inner transaction neither committed nor rolled back the outer one.
    assert store.state_rows(SPACE) == [("db", b"outer", b"1"), ("db", b"outer2", b"2")]
    with store.transaction():  # and the flag was reset after the outer one ended
        store.state_delete(SPACE, "db", b"outer")
    assert store.state_rows(SPACE) == [("db", b"outer2", b"2")]


def test_log_after_orders_by_block_rank_creator_seq(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    _fill(store)
    _fill(store, OTHER_SPACE, ROWS[:2])
    everything = store.log_after(SPACE, (-1, 0, b"", 0), 100)
    assert [(c, s, r) for _b, c, s, r, _w in everything] == EXPECTED
    assert everything[0][4] == b"wire:" + C2[:1] + b"\x01"
    # Strictly after a key, for every key in the log, with a limit.
    for i, (creator, seq, rank) in enumerate(EXPECTED):
        rows = store.log_after(SPACE, (0, rank, creator, seq), 100)
        assert [(c, s, r) for _b, c, s, r, _w in rows] == EXPECTED[i + 1 :]
        limited = store.log_after(SPACE, (0, rank, creator, seq), 2)
        assert [(c, s, r) for _b, c, s, r, _w in limited] == EXPECTED[i + 1 : i + 3]
    # A key between entries: same rank, creator sorts between C1 and C3.
    rows = store.log_after(SPACE, (0, 2, C2, 99), 100)
    assert [(c, s, r) for _b, c, s, r, _w in rows] == [
        e for e in EXPECTED if (e[2], e[0]) > (2, C2)
    ]


def test_suffix_desc_is_reverse_order_with_undo(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    _fill(store)
    for i, (creator, seq, rank) in enumerate(EXPECTED):
        rows = store.suffix_desc(SPACE, (0, rank, creator, seq))
        assert [(c, s, r) for c, s, r, _h, _w, _u in rows] == list(reversed(EXPECTED[i + 1 :]))
    rows = store.suffix_desc(SPACE, (-1, 0, b"", 0))
    assert [(c, s, r) for c, s, r, _h, _w, _u in rows] == list(reversed(EXPECTED))
    c, s, _r, h, w, u = rows[0]
    assert (h, w, u) == (
        bytes([s]) * 32,
        b"wire:" + c[:1] + bytes([s]),
        b"undo:" + c[:1] + bytes([s]),
    )
    with store.transaction():
        store.set_undo(SPACE, c, s, None)
    assert store.suffix_desc(SPACE, (-1, 0, b"", 0))[0][5] is None
    last = EXPECTED[-1]
    assert store.last_key(SPACE) == (0, last[2], last[0], last[1])
    assert store.last_key(OTHER_SPACE) is None


def test_iter_log_chunks(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    _fill(store)
    for chunk in (1, 2, 3, len(ROWS), len(ROWS) + 1):
        assert [(c, s, r) for c, s, r, _w in store.iter_log(SPACE, chunk=chunk)] == EXPECTED
    assert list(store.iter_log(OTHER_SPACE)) == []


def test_heads_info_and_ranges(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    _fill(store)
    assert store.heads(SPACE) == {
        C1: (3, 5, bytes([3]) * 32),
        C2: (3, 4, bytes([3]) * 32),
        C3: (2, 10, bytes([2]) * 32),
    }
    assert store.delta_info(SPACE, C1, 2) == (3, bytes([2]) * 32)
    assert store.delta_info(SPACE, C1, 4) is None
    assert store.delta_info(OTHER_SPACE, C1, 2) is None
    assert store.wires_range(SPACE, C1, 2, 10) == [
        (2, False, b"wire:" + C1[:1] + b"\x02"),
        (3, True, b"wire:" + C1[:1] + b"\x03"),
    ]
    assert store.wires_range(SPACE, C1, 3, 2) == []


def test_state_scan_prefix_semantics(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    keys = [
        b"",
        b"`",
        b"a",
        b"a\x00",
        b"a\x00z",
        b"a\xff",
        b"ab",
        b"abc",
        b"b",
        b"\xff",
        b"\xff\x00",
    ]
    with store.transaction():
        for k in keys:
            store.state_put(SPACE, "db", k, b"v" + k)
            store.state_put(SPACE, "other", k, b"o")
            store.state_put(OTHER_SPACE, "db", k, b"x")
    state = KVState(store, SPACE, "db")
    for prefix in [b"a", b"a\x00", b"ab", b"\xff", b"`", b"zz", b"a\xff"]:
        expected = sorted((k, b"v" + k) for k in keys if k.startswith(prefix))
        assert store.state_scan(SPACE, "db", prefix) == expected, prefix
        assert list(state.scan(prefix)) == expected
    assert store.state_scan(SPACE, "db", b"") == sorted((k, b"v" + k) for k in keys)
    assert store.state_scan(SPACE, "none", b"a") == []
    assert state.get(b"ab") == b"vab"
    assert state.get(b"missing") is None


def test_state_put_replace_and_delete(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with store.transaction():
        store.state_put(SPACE, "db", b"k", b"1")
        store.state_put(SPACE, "db", b"k", b"2")
        store.state_put(SPACE, "a", b"z", b"3")
        store.state_delete(SPACE, "db", b"absent")
    assert store.state_rows(SPACE) == [("a", b"z", b"3"), ("db", b"k", b"2")]
    with store.transaction():
        store.state_delete(SPACE, "db", b"k")
    assert store.state_rows(SPACE) == [("a", b"z", b"3")]


def test_grants_ignore_duplicates(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with store.transaction():
        store.add_grant(SPACE, C1, b"K" * 32, C2, 1)
        store.add_grant(SPACE, C1, b"K" * 32, C2, 1)
        store.add_grant(SPACE, C1, b"K" * 32, C3, 4)
    assert sorted(store.grants(SPACE)) == [(C1, b"K" * 32, C2, 1), (C1, b"K" * 32, C3, 4)]


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xab" * 4080],
    ids=["text", "bad-header"],
)
def test_corrupt_file_is_storage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StorageError):
        Store(path)


def test_unopenable_path_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        Store(tmp_path / "no-such-dir" / "s.sqlite3")


def test_reads_after_close_are_storage_errors(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    store.close()
    with pytest.raises(StorageError):
        store.spaces()
    with pytest.raises(StorageError):
        store.state_get(SPACE, "db", b"k")
    with pytest.raises(StorageError):
        store.transaction().__enter__()


def test_batched_writes(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    with store.transaction():
        store.insert_deltas(
            [
                (SPACE, c, s, r, bytes([s]) * 32, s % 2, b"w" + bytes([s]), None, bytes([r]))
                for c, s, r in ROWS
            ]
        )
        store.set_undos([(b"u1", SPACE, C1, 1), (b"u2", SPACE, C2, 2)])
        store.state_write([(SPACE, "db", b"a", b"1"), (SPACE, "db", b"b", b"2")], [])
    assert [(c, s, r) for c, s, r, _w in store.iter_log(SPACE)] == EXPECTED
    undos = {(c, s): u for c, s, _r, _h, _w, u in store.suffix_desc(SPACE, (-1, 0, b"", 0))}
    assert undos[(C1, 1)] == b"u1" and undos[(C2, 2)] == b"u2" and undos[(C3, 1)] is None
    # The walk a selective merge makes: order keys and packed footprints only, in order.
    walked = store.suffix_keys(SPACE, (-1, 0, b"", 0))
    assert [(c, s, r) for _b, r, c, s, _k in walked] == EXPECTED
    assert all(k == bytes([r]) for _b, r, _c, _s, k in walked)
    assert store.wire_and_undo(SPACE, C1, 1) == (b"w\x01", b"u1")
    with pytest.raises(StorageError):
        store.wire_and_undo(SPACE, C1, 99)
    with store.transaction():
        store.state_write([(SPACE, "db", b"c", b"3")], [(SPACE, "db", b"a")])
    assert store.state_rows(SPACE) == [("db", b"b", b"2"), ("db", b"c", b"3")]
    with pytest.raises(StorageError), store.transaction():  # duplicate primary key
        store.insert_deltas([(SPACE, C1, 1, 1, b"h" * 32, 1, b"w", None)])
    assert store.log_size(SPACE) == len(ROWS)


def test_kvstate_buffers_until_flush(make_store: Callable[[str], Store]) -> None:
    store = make_store("s")
    state = KVState(store, SPACE, "db")
    with store.transaction():
        state.put(b"a", b"1")
        state.put(b"b", b"2")
        assert state.get(b"a") == b"1"
        state.delete(b"b")
        assert state.get(b"b") is None
        assert list(state.scan(b"")) == [(b"a", b"1")]  # scan sees buffered changes
        state.put(b"c", b"3")
        state.flush()
    assert store.state_rows(SPACE) == [("db", b"a", b"1"), ("db", b"c", b"3")]

    # A rolled-back transaction: after reset, the state reads what the store holds.
    with pytest.raises(RuntimeError), store.transaction():
        state.put(b"a", b"changed")
        state.flush()
        raise RuntimeError
    state.reset()
    assert state.get(b"a") == b"1"
    assert store.state_rows(SPACE) == [("db", b"a", b"1"), ("db", b"c", b"3")]
