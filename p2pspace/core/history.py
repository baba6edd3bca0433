"""What a replica keeps of its closed history (DESIGN §12, purge).

Theory of operation. Below the last checkpoint nothing is ever undone again, so a replica may
*compact* its closed blocks: :func:`compact` deletes every closed delta except what the replica
still needs to go on without them -- each creator's last closed delta (what later deltas chain
to and rank above, ``base_heads``) and the members deltas (the keys and causal-past
memberships later deltas are judged on) -- the same rows a snapshot carries
(:mod:`p2pspace.core.snapshot`). Storage is then O(state + open window), not O(history).

Two facts about a compacted delta are still asked for:

* its **rank**, when a late delta depends on it directly (a delta made before its creator had
  heard of the checkpoint): the rank rule of :mod:`p2pspace.core.causal` is exact, so a replica
  that could not check it would refuse what every other replica accepts. Before deleting,
  :func:`compact` writes each creator's ranks as packed ``(seq, rank)`` differences in chunks of
  :data:`RANKS_PER_CHUNK` (two or three bytes a delta), looked up by :meth:`History.rank`.
* whether it is **held**: a copy of a compacted delta arriving again is a duplicate, not a
  second history (its hash cannot be compared any more; equivocation below the horizon is no
  longer detectable here, and every member has passed it by the time automatic compaction runs).

:class:`History` is a replica's view: ``purged`` (per creator, the last seq compacted; a
replica installed from a snapshot holds no closed history at all, and no ranks), whether the
space keeps its history (``keep``: ``p2pspace space compact --keep-history``), and the rank
lookup. A peer lacking compacted deltas is answered with the snapshot
(:mod:`p2pspace.sync.snapshot_link`); the deltas it would need are not sent, since they are
not held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from p2pspace.core import codec
from p2pspace.core.store import Store
from p2pspace.errors import LocalProtocolError, StorageError

RANKS_PER_CHUNK = 4096


@dataclass
class History:
    """One space's closed history as held here."""

    store: Store
    space: bytes
    purged: dict[bytes, int] = field(default_factory=dict)
    keep: bool = False
    _chunks: dict[tuple[bytes, int], list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, space: bytes) -> History:
        blob, keep = store.history(space)
        purged = {} if blob is None else {bytes(c): int(s) for c, s in codec.decode_stored(blob)}
        return cls(store=store, space=space, purged=purged, keep=keep)

    def compacted(self, creator: bytes, seq: int) -> bool:
        """True if ``creator``'s delta ``seq`` is below what this replica compacted."""
        return seq <= self.purged.get(creator, 0)

    def through(self, creator: bytes) -> int:
        """The last seq of ``creator`` compacted here (0: none); that delta itself is held."""
        return self.purged.get(creator, 0)

    def lacks(self, vector: Mapping[bytes, int]) -> bool:
        """True if a peer holding ``vector`` lacks deltas this replica no longer holds."""
        return any(vector.get(c, 0) < s for c, s in self.purged.items())

    def rank(self, creator: bytes, seq: int) -> int | None:
        """The rank of a compacted delta, or None (not compacted, or installed from a snapshot
        without its history)."""
        if not self.compacted(creator, seq):
            return None
        found = self.store.purged_ranks(self.space, creator, seq)
        if found is None:
            return None
        first, data = found
        key = (creator, first)
        pairs = self._chunks.get(key)
        if pairs is None:
            if len(self._chunks) >= 16:
                self._chunks.clear()  # a few chunks cached: late deltas come in bursts
            pairs = self._chunks[key] = unpack_ranks(data)
        for s, r in pairs:
            if s == seq:
                return r
        return None


def compact(store: Store, history: History) -> int:
    """Delete the closed deltas ``history``'s replica no longer needs (inside a transaction),
    keeping their ranks; returns how many were deleted. :class:`LocalProtocolError` if the
    space keeps its history or no checkpoint has closed a block."""
    space = history.space
    if history.keep:
        raise LocalProtocolError("this space keeps its history (--keep-history)")
    closed = store.closed_vector(space)
    if not closed or not store.base_heads(space):
        raise LocalProtocolError("no checkpoint has closed a block of this space yet")
    indexed = store.purged_ranks_through(space)
    rows: list[tuple[bytes, bytes, int, int, bytes]] = []
    creator: bytes | None = None
    pairs: list[tuple[int, int]] = []
    for c, seq, rank in store.closed_ranks(space):  # streamed: bounded memory at any size
        if seq <= indexed.get(c, 0):
            continue  # a kept row whose rank an earlier compaction packed
        if pairs and (c != creator or len(pairs) >= RANKS_PER_CHUNK):
            assert creator is not None
            rows.append((space, creator, pairs[0][0], pairs[-1][0], pack_ranks(pairs)))
            pairs = []
        creator = c
        pairs.append((seq, rank))
    if pairs and creator is not None:
        rows.append((space, creator, pairs[0][0], pairs[-1][0], pack_ranks(pairs)))
    store.add_purged_ranks(rows)
    deleted = store.delete_closed(space)
    purged = dict(history.purged)
    for creator, seq in closed.items():
        purged[creator] = max(purged.get(creator, 0), seq)
    store.set_history(space, _encode(purged), keep=False)
    history.purged = purged
    return deleted


def installed(store: Store, history: History, closed: Mapping[bytes, int]) -> None:
    """A snapshot closing at ``closed`` replaced the space's content (inside its transaction):
    nothing below it is held, and no ranks of it."""
    store.drop_purged_ranks(history.space)
    history.purged = dict(closed)
    store.set_history(history.space, _encode(history.purged), keep=history.keep)


def set_keep(store: Store, history: History, keep: bool) -> None:
    """Record whether the space keeps its history (inside a transaction)."""
    store.set_history(history.space, _encode(history.purged), keep=keep)
    history.keep = keep


def _encode(purged: Mapping[bytes, int]) -> bytes:
    return codec.encode_local(sorted([c, s] for c, s in purged.items()))


def pack_ranks(pairs: Iterable[tuple[int, int]]) -> bytes:
    """``(seq, rank)`` pairs in seq order as varint differences (rank's zigzag-coded)."""
    out = bytearray()
    last_seq = last_rank = 0
    for seq, rank in pairs:
        if seq <= last_seq:
            raise LocalProtocolError("ranks are packed in increasing seq order")
        _varint(out, seq - last_seq)
        step = rank - last_rank
        _varint(out, step * 2 if step >= 0 else -step * 2 - 1)
        last_seq, last_rank = seq, rank
    return bytes(out)


def unpack_ranks(data: bytes) -> list[tuple[int, int]]:
    pairs = []
    seq = rank = 0
    values = _varints(data)
    if len(values) % 2:
        raise StorageError("a packed rank chunk is truncated")
    for index in range(0, len(values), 2):
        seq += values[index]
        zig = values[index + 1]
        rank += zig // 2 if zig % 2 == 0 else -(zig + 1) // 2
        pairs.append((seq, rank))
    return pairs


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _varints(data: bytes) -> list[int]:
    values = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise StorageError("a packed rank chunk holds an oversized number")
        else:
            values.append(value)
            value = shift = 0
    if shift:
        raise StorageError("a packed rank chunk is truncated")
    return values


__all__ = ["RANKS_PER_CHUNK", "History", "compact", "installed", "pack_ranks", "unpack_ranks"]
