"""The pending set: received deltas that wait, how much of it each sender and creator may hold,
and which deltas it waits for.

Theory of operation. A pending delta is filed under the pair (sending peer, creator) it arrived
with, in one of two *groups*:

* **members** -- its creator has an accepted grant (a key) here. The whole pending set is
  bounded in count and bytes; when an arrival takes it over the bound, the victim is the oldest
  delta of the largest partition: the sender or the creator holding the most (in the measure
  that is over), and within it the largest (sender, creator) pair. So a peer that floods, or a
  creator whose deltas flood in through many peers, evicts its own deltas and nobody else's
  while it holds more than they do;
* **strangers** -- no grant of its creator is accepted (yet): a grant still on its way, or a
  made-up creator. These are kept within a small bound of their own (:attr:`Bounds.strangers`)
  and room for them is made among them only, never at the members' expense. A grant accepted
  later moves its creator's deltas to the members group.

Each pending delta waits on exactly one *blocker* id. A blocker that no pending delta holds is
*open*: it is what :meth:`PendingSet.missing` asks peers for. Open blockers are kept per creator
(the highest is the end of the creator's range), so the fetch plan costs one step per creator,
not per pending delta, however large the set grows; ranges of creators with a grant come first,
and when more creators wait than one plan may name, the plan turns through them.

Pure bookkeeping: whether a delta is ready, authentic or valid is decided by
:mod:`p2pspace.core.causal`, which owns one :class:`PendingSet`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from p2pspace.core.delta import Delta, DeltaId

Range = tuple[bytes, int, int]
_Key = bytes | None  # a sending peer (None: not told, e.g. the store's own tools)
_Name = TypeVar("_Name", bytes, bytes | None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """A count and a byte bound."""

    count: int
    size: int  # bytes

    def over(self, count: int, size: int) -> bool:
        return count > self.count or size > self.size


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """``total``: every pending delta; ``strangers``: those of creators without a grant (at
    most ``total``: a tighter total wins)."""

    total: Bound
    strangers: Bound


@dataclass(slots=True)
class Pending:
    """One waiting delta, as the causal buffer judges it."""

    delta: Delta
    wire: bytes
    sender: _Key = None
    authentic: bool = False
    blocker: DeltaId | None = None
    unsupported: bool = False


@dataclass(slots=True)
class _Tally:
    """What one sender (or creator) holds in a group, and the pair keys that hold it."""

    count: int = 0
    size: int = 0  # bytes
    pairs: dict[tuple[_Key, bytes], None] = field(default_factory=dict)


@dataclass(slots=True)
class _Pair:
    """The deltas of one (sender, creator) pair, oldest first."""

    ids: OrderedDict[DeltaId, None] = field(default_factory=OrderedDict)
    size: int = 0  # bytes


class _Group:
    """One bounded group of pending deltas, partitioned by sender and by creator."""

    def __init__(self) -> None:
        self.count = 0
        self.size = 0
        self._pairs: dict[tuple[_Key, bytes], _Pair] = {}
        self._senders: dict[_Key, _Tally] = {}
        self._creators: dict[bytes, _Tally] = {}

    def add(self, did: DeltaId, sender: _Key, size: int) -> None:
        key = (sender, did.creator)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair()
        pair.ids[did] = None
        pair.size += size
        for tally in (
            self._senders.setdefault(sender, _Tally()),
            self._creators.setdefault(did.creator, _Tally()),
        ):
            tally.count += 1
            tally.size += size
            tally.pairs[key] = None
        self.count += 1
        self.size += size

    def remove(self, did: DeltaId, sender: _Key, size: int) -> None:
        key = (sender, did.creator)
        pair = self._pairs[key]
        del pair.ids[did]
        pair.size -= size
        emptied = not pair.ids
        if emptied:
            del self._pairs[key]
        _untally(self._senders, sender, key, size, emptied=emptied)
        _untally(self._creators, did.creator, key, size, emptied=emptied)
        self.count -= 1
        self.size -= size

    def of_creator(self, creator: bytes) -> list[DeltaId]:
        tally = self._creators.get(creator)
        if tally is None:
            return []
        return [did for key in tally.pairs for did in self._pairs[key].ids]

    def victim(self, *, by_bytes: bool) -> DeltaId:
        """The oldest delta of the largest (sender, creator) pair within the largest sender or
        creator (the sender on a tie: a relaying peer's flood is its own)."""

        def held(tally: _Tally) -> int:
            return tally.size if by_bytes else tally.count

        def pair_held(key: tuple[_Key, bytes]) -> int:
            pair = self._pairs[key]
            return pair.size if by_bytes else len(pair.ids)

        sender = max(self._senders.values(), key=held)
        creator = max(self._creators.values(), key=held)
        row = sender if held(sender) >= held(creator) else creator
        return next(iter(self._pairs[max(row.pairs, key=pair_held)].ids))


def _untally(
    tallies: dict[_Name, _Tally], name: _Name, key: tuple[_Key, bytes], size: int, *, emptied: bool
) -> None:
    tally = tallies[name]
    tally.count -= 1
    tally.size -= size
    if emptied:
        del tally.pairs[key]
    if not tally.count:
        del tallies[name]


class _Seqs:
    """Open blocker seqs of one creator: membership and the highest, with lazy deletion."""

    __slots__ = ("_heap", "live")

    def __init__(self) -> None:
        self.live: set[int] = set()
        self._heap: list[int] = []  # negated seqs; some no longer live

    def add(self, seq: int) -> None:
        if seq in self.live:
            return
        self.live.add(seq)
        heapq.heappush(self._heap, -seq)
        if len(self._heap) > 2 * len(self.live) + 16:
            self._heap = [-s for s in self.live]
            heapq.heapify(self._heap)

    def top(self) -> int:
        heap = self._heap
        while -heap[0] not in self.live:
            heapq.heappop(heap)
        return -heap[0]


class PendingSet:
    """The pending deltas of one space, their partitions and what they wait for."""

    def __init__(self, bounds: Bounds, *, keyed: Container[bytes]) -> None:
        """``keyed``: the creators with an accepted grant (read live: it grows)."""
        self.bounds = bounds
        self._keyed = keyed
        self._entries: dict[DeltaId, Pending] = {}
        self._members = _Group()
        self._strangers = _Group()
        self._stranger_ids: set[DeltaId] = set()
        self._waiting: dict[DeltaId, list[DeltaId]] = {}
        self._open: dict[bytes, _Seqs] = {}
        self.auth_waiting: set[DeltaId] = set()
        self.dropped = 0
        self._turn = 0

    # -- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._members.size + self._strangers.size

    @property
    def strangers(self) -> int:
        """How many pending deltas have a creator without an accepted grant."""
        return self._strangers.count

    @property
    def stranger_bytes(self) -> int:
        return self._strangers.size

    def get(self, did: DeltaId) -> Pending | None:
        return self._entries.get(did)

    def waits_for(self) -> bool:
        return bool(self._waiting)

    # -- changes ----------------------------------------------------------------------------

    def add(self, did: DeltaId, entry: Pending) -> None:
        """File ``entry`` (not yet held) under its sender and creator; call :meth:`evict`
        once it has been processed."""
        self._entries[did] = entry
        if did.creator in self._keyed:
            self._members.add(did, entry.sender, len(entry.wire))
        else:
            self._strangers.add(did, entry.sender, len(entry.wire))
            self._stranger_ids.add(did)
        self._close(did)  # held now: no longer asked for

    def remove(self, did: DeltaId) -> Pending | None:
        entry = self._entries.pop(did, None)
        if entry is None:
            return None
        size = len(entry.wire)
        if did in self._stranger_ids:
            self._stranger_ids.discard(did)
            self._strangers.remove(did, entry.sender, size)
        else:
            self._members.remove(did, entry.sender, size)
        self._unwait(entry, did)
        self.auth_waiting.discard(did)
        if did in self._waiting:
            self._open_blocker(did)  # others still wait for it: ask for it again
        return entry

    def admit(self, creator: bytes) -> list[DeltaId]:
        """``creator``'s grant was accepted: its pending deltas move to the members group.
        Returns their ids."""
        moved = self._strangers.of_creator(creator)
        for did in moved:
            entry = self._entries[did]
            self._strangers.remove(did, entry.sender, len(entry.wire))
            self._stranger_ids.discard(did)
            self._members.add(did, entry.sender, len(entry.wire))
        return moved

    def evict(self, *, stranger: bool) -> int:
        """Drop pending deltas until the bounds hold again; ``stranger``: the arrival that
        may have taken the set over them had no grant of its creator (room for it is made
        among strangers only). Returns how many were dropped."""
        bounds = self.bounds
        dropped = 0
        strangers = self._strangers
        cap = Bound(
            count=min(bounds.strangers.count, bounds.total.count),
            size=min(bounds.strangers.size, bounds.total.size),
        )
        while strangers.count and cap.over(strangers.count, strangers.size):
            self.remove(strangers.victim(by_bytes=strangers.count <= cap.count))
            dropped += 1
        total = bounds.total
        while self._entries and total.over(len(self._entries), self.size):
            group = strangers if stranger and strangers.count else self._members
            if not group.count:
                group = strangers
            self.remove(group.victim(by_bytes=len(self._entries) <= total.count))
            dropped += 1
        self.dropped += dropped
        return dropped

    # -- what pending deltas wait for -------------------------------------------------------

    def wait(self, did: DeltaId, entry: Pending, blocker: DeltaId) -> None:
        self._unwait(entry, did)
        entry.blocker = blocker
        waiters = self._waiting.get(blocker)
        if waiters is None:
            waiters = self._waiting[blocker] = []
            if blocker not in self._entries:
                self._open_blocker(blocker)
        waiters.append(did)

    def wake(self, did: DeltaId) -> list[DeltaId]:
        """``did`` arrived or was accepted: the ids that waited on it (to be re-examined)."""
        waiters = self._waiting.pop(did, [])
        self._close(did)
        for waiter in waiters:
            entry = self._entries.get(waiter)
            if entry is not None and entry.blocker == did:
                entry.blocker = None
        return waiters

    def _unwait(self, entry: Pending, did: DeltaId) -> None:
        blocker = entry.blocker
        if blocker is None:
            return
        entry.blocker = None
        waiters = self._waiting.get(blocker)
        if waiters is not None:
            if did in waiters:
                waiters.remove(did)
            if not waiters:
                del self._waiting[blocker]
                self._close(blocker)

    def _open_blocker(self, did: DeltaId) -> None:
        seqs = self._open.get(did.creator)
        if seqs is None:
            seqs = self._open[did.creator] = _Seqs()
        seqs.add(did.seq)

    def _close(self, did: DeltaId) -> None:
        seqs = self._open.get(did.creator)
        if seqs is not None and did.seq in seqs.live:
            seqs.live.discard(did.seq)
            if not seqs.live:
                del self._open[did.creator]

    def missing(self, accepted_seq: Callable[[bytes], int], limit: int) -> list[Range]:
        """At most ``limit`` ``(creator, first, last)`` ranges that pending deltas wait for
        and nobody supplied: creators with a grant first; when more wait than ``limit``, each
        call starts one creator further on, so every creator's range is asked for in turn."""
        wanted: dict[bytes, tuple[int, int]] = {}
        for creator, seqs in self._open.items():
            first = accepted_seq(creator) + 1
            last = seqs.top()
            if last >= first:
                wanted[creator] = (first, last)
        for creator, seq in self.auth_waiting:
            # Unsigned and deps-ready: fetch it again with its chain up to a signed successor.
            lo, hi = wanted.get(creator, (seq, seq + 1))
            wanted[creator] = (min(lo, seq), max(hi, seq + 1))
        keyed = sorted(c for c in wanted if c in self._keyed)
        others = sorted(c for c in wanted if c not in self._keyed)
        if len(keyed) + len(others) > limit:
            self._turn += 1
        order = [*_turned(keyed, self._turn), *_turned(others, self._turn)][:limit]
        return [(c, *wanted[c]) for c in order]

    def ids(self) -> Iterable[DeltaId]:
        return self._entries.keys()


def _turned(items: list[bytes], turn: int) -> list[bytes]:
    if not items:
        return items
    start = turn % len(items)
    return items[start:] + items[:start]


__all__ = ["Bound", "Bounds", "Pending", "PendingSet", "Range"]
