"""What a peer gets from our log: catch-up streams and fetches of specific deltas.

Theory of operation. A peer that sends its vector (its "client revision", after RPC Manager)
gets exactly the executed deltas it lacks, in log order, in bounded chunks:
:func:`catch_up_start` finds where in the order key space the first lacking delta can be (just
before the lowest rank among the first deltas it lacks of each creator), and
:func:`catch_up_chunk` walks the log from a cursor, skipping what the vector covers. Log order
respects causality, so the peer receives one causal stream.

A peer missing specific deltas asks for ``(creator, first, last)`` ranges; :func:`fetch`
answers with the creator-signed originals, each range extended to the creator's next signed
delta so that unsigned deltas arrive with the chain that authenticates them
(:mod:`p2pspace.core.authenticity`). Every answer is bounded in count and bytes; the asker asks
again for the rest. Everything here only reads the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from p2pspace.core import authenticity
from p2pspace.core.causal import Head
from p2pspace.core.delta import OrderKey
from p2pspace.core.store import Store

MIN_PAGE = 64
FIRST_KEY: OrderKey = (-(2**63), 0, b"", 0)  # before every delta, closed blocks included


def catch_up_start(
    heads: Mapping[bytes, Head],
    peer_vector: Mapping[bytes, int],
    lookup: Callable[[bytes, int], tuple[int, bytes] | None],
    closed: Mapping[bytes, int] | None = None,
) -> OrderKey | None:
    """Order key just before the first executed delta ``peer_vector`` lacks, or None.

    ``heads`` are the executed heads; ``lookup(creator, seq)`` gives an executed delta's
    ``(rank, hash)``; ``closed``: each creator's last delta in a closed block (a peer lacking
    one of those is streamed from the first block).
    """
    start: int | None = None
    for creator, head in heads.items():
        have = peer_vector.get(creator, 0)
        if closed and have < closed.get(creator, 0):
            return FIRST_KEY
        if head.seq > have:
            info = lookup(creator, have + 1)
            rank = info[0] if info is not None else 1
            start = rank if start is None else min(start, rank)
    if start is None:
        return None
    return (0, start - 1, b"\xff" * 16, 2**62)


def catch_up_chunk(
    store: Store,
    space_id: bytes,
    peer_vector: Mapping[bytes, int],
    after: OrderKey,
    *,
    max_count: int,
    max_bytes: int,
    until: OrderKey | None = None,
) -> tuple[list[tuple[bytes, int, bytes]], OrderKey | None]:
    """Next executed deltas ``peer_vector`` lacks, in log order, after ``after`` (and up to
    ``until``, included, when given).

    Returns ``([(creator, seq, wire)], cursor)``; ``cursor`` is None when the stream is
    complete.
    """
    wires: list[tuple[bytes, int, bytes]] = []
    size = 0
    cursor = after
    page = max(MIN_PAGE, max_count)
    while True:
        rows = store.log_after(space_id, cursor, page)
        for block, creator, seq, rank, wire in rows:
            cursor = (block, rank, creator, seq)
            if until is not None and cursor > until:
                return wires, None
            if seq <= peer_vector.get(creator, 0):
                continue
            wires.append((creator, seq, wire))
            size += len(wire)
            if len(wires) >= max_count or size >= max_bytes:
                more = store.log_after(space_id, cursor, 1)
                return wires, (cursor if more else None)
        if len(rows) < page:
            return wires, None


def fetch(
    store: Store,
    space_id: bytes,
    ranges: Iterable[tuple[bytes, int, int]],
    *,
    max_count: int,
    max_bytes: int,
) -> list[bytes]:
    """Executed deltas in the requested ``(creator, first, last)`` ranges, each extended to
    the creator's next signed delta so that unsigned ones arrive with their chain.

    Overlapping ranges are merged. The answer stops, at a signed delta, once it holds
    ``max_count`` deltas or ``max_bytes`` bytes; the asker fetches the rest later.
    """
    size = 0
    merged: dict[bytes, list[tuple[int, int]]] = {}
    for creator, first, last in ranges:
        if last >= first:
            merged.setdefault(creator, []).append((first, last))
    out: list[bytes] = []
    for creator in sorted(merged):
        joined: list[tuple[int, int]] = []
        for first, last in sorted(merged[creator]):
            if joined and first <= joined[-1][1] + 1:
                joined[-1] = (joined[-1][0], max(joined[-1][1], last))
            else:
                joined.append((first, last))
        for first, last in joined:
            if len(out) >= max_count or size >= max_bytes:
                return out
            last = min(last, first + max_count - len(out) - 1)
            rows = store.wires_range(space_id, creator, first, last + authenticity.MAX_CHAIN)
            for seq, signed, wire in rows:
                out.append(wire)
                size += len(wire)
                if signed and (seq >= last or size >= max_bytes):
                    break
    return out
