"""Checkpoints close blocks (DESIGN §12): what a block holds and how a replica closes one.

Theory of operation. The order key is ``(block, rank, creator, seq)``. Every delta enters the
*open window*, block 0. A **checkpoint** -- a delta whose one command is ``members.checkpoint
{number, digest}`` (see :mod:`p2pspace.core.membership`) -- closes block ``number``: the deltas
of the open window in its causal past (its *ancestors*) move, in their order, into closed block
``CLOSED_BASE + number``, below block 0, and the checkpoint sorts last in it. Every other delta
of the window stays in block 0 and so sorts after the block, whatever its rank. This respects
causality: whatever an ancestor depends on is an ancestor too, or closed already.

Which checkpoints close (decided where the checkpoint would sit, on the state that the closed
blocks and its ancestors build -- the same on every replica, whatever arrives later, because
nothing that is not an ancestor can sort before it once it closes):

* its creator is a manager there and the space's *checkpointer* (the founder until a handover;
  one endpoint at a time, handed over in its own chain, so two checkpoints can never compete
  for one block);
* its ``number`` is one more than the last closed block's;
* its ``digest`` equals the state digest there. A mismatch is evidence against the creator: the
  checkpoint is a recorded no-op whose reason says so (:data:`BAD_DIGEST`), on every honest
  replica alike.

A checkpoint that does not close is a recorded no-op in the open window, like any refused
delta. Where one closes, the undo records of its block are dropped in the same transaction:
nothing in a closed block is ever undone again, so a late delta reorders at most the window.

Removals and closed blocks: a delta inside a closed block stays as it executed there. A removal
that is not an ancestor of the checkpoint sorts after the block, so it makes nothing in the
block void (:meth:`~p2pspace.core.authority.Authority.close` un-voids such deltas where the
removal arrived first, and ignores them for removals that arrive later).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from p2pspace.core.delta import Delta, DeltaId, decode_delta
from p2pspace.errors import StorageError

CLOSED_BASE = -(2**62)  # block values of closed blocks: CLOSED_BASE + number, all below 0
OPEN_BLOCK = 0

NOT_CHECKPOINTER = "a checkpoint by an endpoint that is not the space's checkpointer"
OUT_OF_SEQUENCE = "a checkpoint whose number does not follow the last closed block"
BAD_DIGEST = "a checkpoint whose state digest does not match this space's state"
NOT_YET = "a checkpoint not closed yet"

WiresOf = Callable[[bytes, int, int], list[tuple[int, bool, bytes]]]


def block_value(number: int) -> int:
    """The ``block`` of closed block ``number`` in the order key."""
    return CLOSED_BASE + number


@dataclass(frozen=True, slots=True, kw_only=True)
class Horizon:
    """What this replica has closed: the last checkpoint (its number, id, digest and time),
    and each creator's last closed seq."""

    number: int = 0
    checkpoint: DeltaId | None = None
    digest: bytes = b""
    time: int = 0  # ms; the founding time until the first checkpoint
    closed: Mapping[bytes, int] | None = None

    def is_closed(self, creator: bytes, seq: int) -> bool:
        return self.closed is not None and seq <= self.closed.get(creator, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointPolicy:
    """When the checkpointer closes the open window by itself: once it holds more than
    ``max_count`` deltas or ``max_bytes`` bytes, or is older than ``max_age_ms`` -- and every
    other current member has acknowledged all of it (the members' part of DESIGN §12, so
    that closing changes no outcome a member has already seen), unless the window has grown
    past ``force`` times a bound: then a silent member no longer holds history back, and its
    unsent deltas sort after the block when it returns."""

    max_count: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    max_age_ms: int = 24 * 3600 * 1000
    force: int = 4

    def due(
        self,
        *,
        count: int,
        size: int,
        age_ms: int,
        vector: Mapping[bytes, int],
        acked: Mapping[bytes, Mapping[bytes, int]],
        members: Sequence[bytes],
    ) -> bool:
        """True if a window of ``count`` deltas, ``size`` bytes and ``age_ms`` should close
        now. ``vector``: what the checkpoint would close (the executed vector); ``acked``:
        each peer's acknowledged vector; ``members``: the other current members."""
        if count == 0:
            return False
        if count >= self.max_count * self.force or size >= self.max_bytes * self.force:
            return True
        if count < self.max_count and size < self.max_bytes and age_ms < self.max_age_ms:
            return False
        for member in members:
            seen = acked.get(member, {})
            if any(seen.get(creator, 0) < seq for creator, seq in vector.items()):
                return False
        return True


def ancestors(delta: Delta, closed: Mapping[bytes, int], wires_of: WiresOf) -> dict[bytes, int]:
    """Per creator, the last seq of ``delta``'s causal past that is not closed yet: its
    ancestors in the open window are each creator's seqs ``closed[c] + 1 .. result[c]``.

    Walks immediate dependencies (the creator's previous delta and the diff-encoded entries);
    each delta of the window is decoded at most once. ``wires_of(creator, first, last)`` reads
    executed deltas; :class:`StorageError` if one of the past is missing (it must have
    executed before the checkpoint could)."""
    reached: dict[bytes, int] = {}
    stack: list[tuple[bytes, int]] = list(delta.deps)
    if delta.seq > 1:
        stack.append((delta.creator, delta.seq - 1))
    while stack:
        creator, seq = stack.pop()
        low = max(closed.get(creator, 0), reached.get(creator, 0))
        if seq <= low:
            continue
        reached[creator] = seq
        rows = wires_of(creator, low + 1, seq)
        if len(rows) != seq - low:
            raise StorageError(f"the causal past of checkpoint {delta.id} is not all executed")
        for _seq, _signed, wire in rows:
            stack.extend(decode_delta(wire).deps)
    return reached


def is_ancestor(reached: Mapping[bytes, int], creator: bytes, seq: int) -> bool:
    return seq <= reached.get(creator, 0)
