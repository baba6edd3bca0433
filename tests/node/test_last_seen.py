"""When peers were last connected: kept in memory every tick, written at most once a minute per
peer, and everything at shutdown; times only grow."""

from __future__ import annotations

from pathlib import Path

from p2pspace.core.store import Store
from p2pspace.node.last_seen import WRITE_EVERY_MS, LastSeen

P, Q = b"p" * 16, b"q" * 16


def test_times_grow_are_written_sparingly_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path, durability="normal")
    seen = LastSeen(store)
    assert seen.get(P) == 0
    seen.note([P, Q], 1_000)
    seen.flush()  # first sighting: more than a minute since "never"
    assert dict(store.peer_seen()) == {P: 1_000, Q: 1_000}
    seen.note([P], 1_000 + WRITE_EVERY_MS - 1)
    seen.flush()  # moved, but less than a minute: memory only
    assert dict(store.peer_seen()) == {P: 1_000, Q: 1_000}
    assert seen.get(P) == 1_000 + WRITE_EVERY_MS - 1
    seen.note([P], 500)  # a clock set back does not move it back
    assert seen.get(P) == 1_000 + WRITE_EVERY_MS - 1
    seen.note([P], 1_000 + WRITE_EVERY_MS)
    seen.flush()
    assert dict(store.peer_seen())[P] == 1_000 + WRITE_EVERY_MS
    seen.note([Q], 2_000)
    seen.flush(everything=True)  # shutdown: every move is written
    store.close()

    reopened = Store(path, durability="normal")
    try:
        again = LastSeen(reopened)
        assert (again.get(P), again.get(Q)) == (1_000 + WRITE_EVERY_MS, 2_000)
    finally:
        reopened.close()
