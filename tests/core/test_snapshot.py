"""Snapshots: the state at the last checkpoint, verified before it replaces anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pspace.core import snapshot
from p2pspace.core.delta import Delta
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import LocalProtocolError, SnapshotError
from tests.helpers.replicas import wires_of

IDS = [Identity.from_seed(f"snapshot-{i}".encode()) for i in range(4)]


class Space:
    """A founder, a second manager and a participant; stores on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stores: list[Store] = []
        a = Replica.create_space(self._store(), IDS[0], name="s", time=1, nonce=b"\x05" * 16)
        a.create(
            [
                members.add_command(
                    member_id=IDS[1].endpoint_id, key=IDS[1].public_key, name="b", role="manager"
                ),
                members.add_command(
                    member_id=IDS[2].endpoint_id,
                    key=IDS[2].public_key,
                    name="c",
                    role="participant",
                ),
            ],
            time=2,
        )
        self.a = a
        self.b = Replica.join(self._store(), IDS[1], a.genesis.wire())
        assert not self.b.receive(wires_of(a)).rejected

    def _store(self) -> Store:
        store = Store(self.folder / f"s{len(self.stores)}.sqlite3", durability="normal")
        self.stores.append(store)
        return store

    def joiner(self) -> Replica:
        return Replica.join(self._store(), IDS[2], self.a.genesis.wire())

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def space(tmp_path: Path) -> Iterator[Space]:
    s = Space(tmp_path)
    yield s
    s.close()


def _busy(space: Space, count: int) -> None:
    for k in range(count):
        space.a.create([rdb.create("t", f"a{k}", {"v": k})], time=10)
        space.b.create(
            [rdb.set_fields("t", "a0", {"b": k})] if k else [rdb.create("t", "b", {"v": 0})],
            time=10,
        )
        if k % 7 == 0:
            assert not space.a.receive(wires_of(space.b)).rejected
            assert not space.b.receive(wires_of(space.a)).rejected
    assert not space.a.receive(wires_of(space.b)).rejected
    assert not space.b.receive(wires_of(space.a)).rejected


def _take(replica: Replica, manifest: snapshot.Manifest, chunks: list[bytes]) -> None:
    replica.install_snapshot(snapshot.verify(manifest, chunks, replica.genesis))


def test_a_joiner_takes_the_snapshot_then_only_the_window(space: Space) -> None:
    _busy(space, 60)
    checkpoint = space.a.create_checkpoint(time=20)
    for k in range(5):  # the open window after the checkpoint
        space.a.create([rdb.set_fields("t", f"a{k}", {"after": k})], time=30)
    assert not space.b.receive(wires_of(space.a)).rejected
    manifest, chunks = space.a.snapshot()
    assert manifest.checkpoint_id == checkpoint.id and manifest.number == 1
    c = space.joiner()
    _take(c, manifest, chunks)
    assert c.horizon().checkpoint == checkpoint.id and c.horizon().number == 1
    assert c.window() == (0, 0)
    assert c.role() == "participant"
    # Only the deltas after the checkpoint are missing, and they execute on the snapshot.
    missing = [w for w in wires_of(space.a) if not _holds(c, w)]
    assert len(missing) == 5
    result = c.receive(missing)
    assert not result.rejected and len(result.executed) == 5
    assert c.state_digest() == space.a.state_digest() == space.b.state_digest()
    # The joiner writes, and everyone executes it.
    made = c.create([rdb.set_fields("t", "a1", {"c": 1})], time=40)
    for replica in (space.a, space.b):
        assert not replica.receive([made.wire()]).rejected
    assert len({r.state_digest() for r in (space.a, space.b, c)}) == 1
    # It can serve the same snapshot on.
    again, _chunks = c.snapshot()
    assert again.digest == manifest.digest and again.checkpoint == manifest.checkpoint


def _holds(replica: Replica, wire: bytes) -> bool:
    from p2pspace.core.delta import decode_delta

    delta = decode_delta(wire)
    return replica.vector.get(delta.creator, 0) >= delta.seq


def test_a_laggard_behind_the_checkpoint_takes_the_snapshot(space: Space) -> None:
    c = space.joiner()
    assert not c.receive(wires_of(space.a)[:2]).rejected  # it saw the beginning only
    _busy(space, 30)
    space.a.create_checkpoint(time=20)
    assert not space.b.receive(wires_of(space.a)).rejected
    manifest, chunks = space.b.snapshot()  # any member that closed the block serves it
    _take(c, manifest, chunks)
    assert c.state_digest() == space.a.state_digest()
    assert c.vector == space.a.vector


def test_a_corrupted_or_forged_snapshot_replaces_nothing(space: Space) -> None:
    _busy(space, 10)
    space.a.create_checkpoint(time=20)
    manifest, chunks = space.a.snapshot()
    c = space.joiner()
    before = (c.state_digest(), dict(c.vector))
    bad = bytearray(chunks[0])
    bad[len(bad) // 2] ^= 1
    with pytest.raises(SnapshotError, match="corrupted"):
        snapshot.check_chunk(manifest, 0, bytes(bad))
    with pytest.raises(SnapshotError, match="corrupted"):
        snapshot.verify(manifest, [bytes(bad), *chunks[1:]], c.genesis)
    # A consistent forgery (chunks and manifest made to match) fails on the digest.
    from p2pspace.core import codec

    items = codec.decode(chunks[0])
    for item in items:
        if item[0] == "s" and item[1] == "db":
            item[3] = codec.encode({"forged": True})
            break
    forged = codec.encode(items)
    import hashlib

    fake = snapshot.Manifest(
        space=manifest.space,
        number=manifest.number,
        checkpoint=manifest.checkpoint,
        digest=manifest.digest,
        chunks=(hashlib.sha256(forged).digest(), *manifest.chunks[1:]),
        size=manifest.size,
    )
    with pytest.raises(SnapshotError, match="digest"):
        snapshot.verify(fake, [forged, *chunks[1:]], c.genesis)
    assert (c.state_digest(), dict(c.vector)) == before


def test_a_snapshot_checkpoint_must_verify_under_admitted_keys(space: Space) -> None:
    _busy(space, 3)
    space.a.create_checkpoint(time=20)
    manifest, chunks = space.a.snapshot()
    stranger = Identity.from_seed(b"stranger")
    other = Replica.create_space(
        Store(space.folder / "other.sqlite3", durability="normal"),
        stranger,
        name="s",
        time=1,
        nonce=b"\x06" * 16,
    )
    try:
        with pytest.raises(SnapshotError):
            snapshot.verify(manifest, chunks, other.genesis)  # another founder's key
    finally:
        other.store.close()


def _laggard_with_own_edit(space: Space) -> tuple[Replica, Delta]:
    """``c`` joins early, edits while away, and meanwhile ``a`` and ``b`` close a block."""
    _busy(space, 3)
    c = space.joiner()
    assert not c.receive(wires_of(space.a)[:2]).rejected
    # Beyond any snapshot: one group commit, its deltas chained to one signature.
    own = c.create_many(
        [
            [rdb.create("t", "mine", {"v": 1})],
            *([rdb.set_fields("t", "mine", {"v": k})] for k in range(5)),
        ],
        time=30,
    )[-1]
    _busy(space, 40)
    space.a.create_checkpoint(time=40)
    assert not space.b.receive(wires_of(space.a)).rejected
    return c, own


def test_a_laggard_keeps_its_own_later_edit_through_the_snapshot(space: Space) -> None:
    c, own = _laggard_with_own_edit(space)
    manifest, chunks = space.a.snapshot()
    verified = snapshot.verify(manifest, chunks, space.b.genesis)
    c.install_snapshot(verified)
    assert c.horizon().number == 1
    assert c.vector[own.creator] == own.seq
    assert c.state("db").get(rdb.record_key("t", "mine")) is not None
    assert c.store.held_back(c.space_id) == []
    # Its edit reaches the others, and all three end the same.
    assert not space.a.receive(wires_of(c)).rejected
    assert not space.b.receive(wires_of(c)).rejected
    assert not c.receive(wires_of(space.a)).rejected
    assert c.vector == space.a.vector == space.b.vector
    assert c.state_digest() == space.a.state_digest() == space.b.state_digest()
    with pytest.raises(LocalProtocolError, match="already holds"):
        space.b.install_snapshot(verified)  # b holds the block already


def test_edits_kept_through_a_snapshot_survive_a_crash_before_they_run_again(
    space: Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the snapshot's transaction committed and before the kept
    deltas were received again: the next open receives them."""
    c, own = _laggard_with_own_edit(space)
    manifest, chunks = space.a.snapshot()
    with monkeypatch.context() as patch:
        patch.setattr(Replica, "_receive_held_back", lambda self: None)  # the crash
        _take(c, manifest, chunks)
    assert own.creator not in c.vector
    assert len(c.store.held_back(c.space_id)) == own.seq
    path = space.folder / f"s{space.stores.index(c.store)}.sqlite3"
    c.store.close()
    store = Store(path, durability="normal")
    space.stores.append(store)
    reopened = Replica.open(store, IDS[2], c.space_id)
    assert reopened.vector[own.creator] == own.seq
    assert store.held_back(c.space_id) == []
    assert not space.a.receive(wires_of(reopened)).rejected
    assert reopened.state_digest() == space.a.state_digest()


def test_the_snapshot_follows_the_last_checkpoint(space: Space) -> None:
    _busy(space, 5)
    space.a.create_checkpoint(time=20)
    _busy(space, 5)
    second = space.a.create_checkpoint(time=30)
    manifest, chunks = space.a.snapshot()
    assert manifest.number == 2 and manifest.checkpoint_id == second.id
    c = space.joiner()
    _take(c, manifest, chunks)
    assert c.state_digest() == space.a.state_digest()
