"""Serving peers: catch-up streams and fetches answer exactly what is lacking, bounded."""

from __future__ import annotations

from collections.abc import Callable

from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from tests.helpers.replicas import assert_same, set_command, wires_of


def test_fetch_extends_to_next_signed(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    me = a.endpoint_id
    single = a.create(set_command(0, "a"), time=3)  # seq 3, signed
    chain = a.create_many([set_command(i, "c") for i in range(4)], time=4)  # seq 4..7, 7 signed
    after = a.create(set_command(1, "a"), time=5)  # seq 8, signed
    wire = {d.seq: d.wire() for d in [single, *chain, after]}
    assert a.fetch([(me, 3, 3)], max_count=10) == [wire[3]]
    assert a.fetch([(me, 4, 4)], max_count=10) == [wire[s] for s in range(4, 8)]
    assert a.fetch([(me, 5, 6)], max_count=10) == [wire[s] for s in range(5, 8)]
    assert a.fetch([(me, 7, 7)], max_count=10) == [wire[7]]
    assert a.fetch([(me, 3, 8)], max_count=10) == [wire[s] for s in range(3, 9)]
    assert a.fetch([(me, 5, 4)], max_count=10) == []
    assert a.fetch([(me, 9, 12)], max_count=10) == []
    assert a.fetch([(b"\x00" * 16, 1, 1)], max_count=10) == []
    # Several ranges of one creator answer in seq order (causal order), overlaps merged once.
    assert a.fetch([(me, 8, 8), (me, 3, 3)], max_count=10) == [wire[3], wire[8]]
    assert a.fetch([(me, 3, 4)] * 50, max_count=10) == [wire[s] for s in range(3, 8)]
    # The whole answer is capped (a chain in progress is finished to its signed delta).
    assert a.fetch([(me, 3, 8)], max_count=2) == [wire[s] for s in range(3, 8)]


def _lacking(replica: Replica, vector: dict[bytes, int]) -> list[bytes]:
    return [w for c, s, _r, w in replica.store.iter_log(replica.space_id) if s > vector.get(c, 0)]


def _stream(
    replica: Replica, vector: dict[bytes, int], *, max_count: int, max_bytes: int
) -> list[list[bytes]]:
    chunks: list[list[bytes]] = []
    cursor = replica.catch_up_start(vector)
    while cursor is not None:
        rows, cursor = replica.catch_up_chunk(
            vector, cursor, max_count=max_count, max_bytes=max_bytes
        )
        chunks.append([w for _c, _s, w in rows])
        assert len(chunks) < 1000
    return chunks


def test_catch_up_streams_exactly_what_is_lacking(
    space_pair: tuple[Replica, Replica],
    make_store: Callable[[str], Store],
    identities: list[Identity],
) -> None:
    a, b = space_pair
    for i in range(5):
        a.create(set_command(i, "a"), time=3 + i)
    b.receive(wires_of(a)[:4])
    for i in range(4):
        b.create(set_command(i, "b"), time=3 + i)
    b_vector = b.accepted_vector()  # lacks some of a's deltas, has b's own
    a.receive(wires_of(b))
    a.create_many([set_command(i, "c") for i in range(70)], time=20)  # more than one log page
    for i in range(3):
        a.create(set_command(i, "z"), time=30 + i)

    assert a.catch_up_start(a.vector) is None
    for vector in (b_vector, {}, {a.endpoint_id: 2}, {a.endpoint_id: 30, b.endpoint_id: 4}):
        expected = _lacking(a, vector)
        for max_count, max_bytes in ((3, 10**9), (1000, 10**9), (50, 1)):
            chunks = _stream(a, vector, max_count=max_count, max_bytes=max_bytes)
            assert [w for chunk in chunks for w in chunk] == expected
            assert all(len(chunk) <= max_count for chunk in chunks)
            if max_bytes == 1:
                assert all(len(chunk) == 1 for chunk in chunks)
            assert all(chunks[:-1]), "only the last chunk may be empty"

    # A replica holding exactly b's vector, fed the stream, ends equal to a.
    b_chunks = _stream(a, b_vector, max_count=7, max_bytes=10**9)
    c = Replica.join(make_store("c"), identities[2], a.genesis.wire())
    c.receive(wires_of(b))
    assert c.vector == b_vector
    for chunk in b_chunks:
        assert not c.receive(chunk).rejected
    assert_same(a, c)
