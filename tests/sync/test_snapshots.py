"""Snapshots over sessions: joiners and laggards behind a checkpoint get the state, not the
history; a bad chunk is refused and the snapshot comes from another member; a transfer broken
halfway resumes where it stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pspace.core import snapshot
from p2pspace.engines import members, rdb
from p2pspace.errors import RemoteProtocolError
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.session import State
from p2pspace.testing.loopback import Link, connect, pump
from tests.sync.endpoints import Net, disconnect, settle


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def _team(net: Net) -> tuple[Endpoint, Endpoint, Endpoint, bytes]:
    """``a`` founds a space with manager ``b``; ``c`` (a participant) is added but offline."""
    a, b, c = (net.endpoint(n) for n in "abc")
    replica = a.create_space("s", time=1, nonce=b"\x09" * 16)
    space = replica.space_id
    for other, role in ((b, "manager"), (c, "participant")):
        grant = members.add_command(
            member_id=other.endpoint_id, key=other.identity.public_key, name=other.name, role=role
        )
        a.create(space, [grant], time=2)
    b.join_space(replica.genesis.wire(), sponsors=[a.endpoint_id])
    return a, b, c, space


def _history(a: Endpoint, space: bytes, count: int, *, records: int, size: int = 8) -> None:
    """``count`` one-field edits over ``records`` records, in batches."""
    replica = a.replica(space)
    filler = "x" * size
    replica.create_many(
        [[rdb.create("t", f"r{k}", {"v": 0, "pad": filler})] for k in range(records)], time=5
    )
    done = records
    while done < count:
        batch = [
            [rdb.set_fields("t", f"r{k % records}", {"v": k})]
            for k in range(done, min(count, done + 1000))
        ]
        replica.create_many(batch, time=6)
        done += len(batch)


def _log_rows(ep: Endpoint, space: bytes) -> int:
    return ep.replica(space).store.log_size(space)


def test_a_joiner_and_a_laggard_of_100000_deltas_take_the_snapshot(net: Net) -> None:
    a, b, c, space = _team(net)
    c.join_space(a.replica(space).genesis.wire(), sponsors=[a.endpoint_id])
    pump([connect(a, b), connect(a, c)])  # c holds the beginning: the laggard
    disconnect(a, b, c)
    _history(a, space, 100_000, records=1_000)
    a.replica(space).create_checkpoint(time=7)
    for k in range(20):  # the open window after the checkpoint
        a.create(space, [rdb.set_fields("t", f"r{k}", {"after": k})], time=8)
    history = sum(len(w) for *_r, w in a.replica(space).store.iter_log(space))
    d = net.endpoint("d")  # the joiner: added now, holds nothing but the genesis
    grant = members.add_command(member_id=d.endpoint_id, key=d.identity.public_key, name="d")
    a.create(space, [grant], time=9)
    d.join_space(a.replica(space).genesis.wire(), sponsors=[a.endpoint_id])
    manifest, _chunks = a.replica(space).snapshot()
    for ep in (c, d):
        link = connect(a, ep)
        pump([link])
        assert ep.replica(space).state_digest() == a.replica(space).state_digest()
        assert ep.replica(space).vector == a.replica(space).vector
        assert ep.replica(space).horizon().checkpoint == a.replica(space).horizon().checkpoint
        # The state and the window, not the history.
        assert link.bytes_a_to_b < manifest.size + history // 20
        assert _log_rows(ep, space) < 100
        disconnect(a, ep)
    # The joiner's own edit reaches everyone, and the space goes on converging.
    d.create(space, [rdb.set_fields("t", "r1", {"d": 1})], time=10)
    settle([connect(d, a), connect(a, b), connect(a, c)], [a, b, c, d], space)
    assert len({ep.replica(space).state_digest() for ep in (a, b, c, d)}) == 1


def test_a_laggard_with_its_own_offline_edits_takes_the_snapshot_and_keeps_them(
    net: Net,
) -> None:
    """``c`` edits while away from a space that closed a block of 5,000 deltas: it is sent
    the snapshot, not the history, keeps its edits on top, and they reach everyone."""
    a, b, c, space = _team(net)
    c.join_space(a.replica(space).genesis.wire(), sponsors=[a.endpoint_id])
    pump([connect(a, b), connect(a, c)])
    disconnect(a, b, c)
    mine = [c.create(space, [rdb.create("t", f"c{k}", {"v": k})], time=3) for k in range(3)]
    _history(a, space, 5_000, records=100)
    a.replica(space).create_checkpoint(time=7)
    a.create(space, [rdb.set_fields("t", "r1", {"after": 1})], time=8)
    history = sum(len(w) for *_r, w in a.replica(space).store.iter_log(space))
    link = connect(a, c)
    settle([link], [a, c], space)
    assert c.replica(space).horizon().checkpoint == a.replica(space).horizon().checkpoint
    assert link.bytes_a_to_b < history // 4  # the state and the window, not the history
    assert c.replica(space).vector[c.endpoint_id] == mine[-1].seq
    settle([link, connect(a, b)], [a, b, c], space)
    for ep in (a, b):
        assert ep.replica(space).vector[c.endpoint_id] == mine[-1].seq
    assert len({ep.replica(space).state_digest() for ep in (a, b, c)}) == 1


def _small_space(net: Net, *, records: int) -> tuple[Endpoint, Endpoint, Endpoint, bytes]:
    a, b, c, space = _team(net)
    pump([connect(a, b)])
    _history(a, space, records * 2, records=records, size=600)
    a.replica(space).create_checkpoint(time=7)
    pump([connect(a, b)])  # b closes the same block: it can serve the snapshot too
    disconnect(a, b)
    c.join_space(a.replica(space).genesis.wire(), sponsors=[a.endpoint_id, b.endpoint_id])
    return a, b, c, space


def test_a_corrupted_chunk_is_refused_and_another_member_serves_the_snapshot(net: Net) -> None:
    a, b, c, space = _small_space(net, records=600)
    manifest, chunks = a.replica(space).snapshot()
    assert len(chunks) >= 2
    bad = bytearray(chunks[1])
    bad[10] ^= 0xFF
    chunks[1] = bytes(bad)  # a's cached snapshot is now corrupted on its way out
    link = connect(a, c)
    with pytest.raises(RemoteProtocolError, match="corrupted"):
        pump([link])
    assert link.b.state is not State.OPEN
    # Nothing was replaced; the good chunk is kept.
    assert c.replica(space).horizon().number == 0
    _held, parts = c.replica(space).store.snapshot_parts(space)
    assert set(parts) == {0}
    disconnect(a, c)
    good = connect(b, c)
    pump([good])
    assert c.replica(space).state_digest() == b.replica(space).state_digest()
    # b sent only the chunks c lacked.
    assert good.bytes_a_to_b < manifest.size


def test_a_snapshot_broken_off_halfway_resumes(net: Net) -> None:
    a, _b, c, space = _small_space(net, records=1_200)
    manifest, chunks = a.replica(space).snapshot()
    assert len(chunks) >= 3
    link = connect(a, c)
    # Move bytes until c holds part of the snapshot, then cut the connection.
    while len(c.replica(space).store.snapshot_parts(space)[1]) < len(chunks) // 2:
        _step(link)
    held = set(c.replica(space).store.snapshot_parts(space)[1])
    assert 0 < len(held) < len(chunks)
    disconnect(a, c)
    again = connect(a, c)
    pump([again])
    assert c.replica(space).state_digest() == a.replica(space).state_digest()
    # Only the rest crossed again (and the window).
    rest = sum(len(chunks[i]) for i in range(len(chunks)) if i not in held)
    assert again.bytes_a_to_b < rest + manifest.size // 4 + 64 * 1024


def _step(link: Link) -> None:
    data = link.a.data_to_send(64 * 1024)
    if data:
        link.bytes_a_to_b += len(data)
        link.eb.receive_data(link.b, data)
    data = link.b.data_to_send(64 * 1024)
    if data:
        link.bytes_b_to_a += len(data)
        link.ea.receive_data(link.a, data)


def test_a_peer_lacking_little_gets_deltas_not_a_snapshot(net: Net) -> None:
    a, b, _c, space = _team(net)
    pump([connect(a, b)])
    disconnect(a, b)
    for k in range(10):
        a.create(space, [rdb.create("t", f"r{k}", {"v": k})], time=5)
    a.replica(space).create_checkpoint(time=6)
    pump([connect(a, b)])
    assert b.replica(space).store.snapshot_parts(space) == (None, {})
    assert b.replica(space).order_digest() == a.replica(space).order_digest()
    assert snapshot.CHUNK_BYTES > 0
