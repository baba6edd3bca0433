"""How two replicas find out they hold different copies of one delta, and make the copies meet.

Theory of operation. A vector says *how many* deltas of each creator a replica holds, not
*which*: a creator that signed two different deltas under one id (equivocation -- or an endpoint
restored from an old backup that re-created seqs its peers already hold) leaves two replicas
with equal vectors and different content, each syncing happily with the other. Protocol v2
compares content as well:

* a ``Revision`` carries, per creator, the hash of the delta its vector names
  (:func:`revision_heads`). The receiver compares each with its own copy at that seq and, where
  they differ, sends its copies of that creator's last :data:`WINDOW` deltas up to that seq
  (:func:`diverging_ranges`, answered like a fetch, so unsigned deltas come with the signed one
  that authenticates them);
* an ``Ack`` carries a digest of the deltas its vector names (:func:`heads_digest`). A peer at
  the same vector with another digest asks for a Revision, so a divergence that arises while a
  connection is live is found too, not only when a connection opens;
* the digest covers the equivocation proofs each side holds too, and every Revision is followed
  by the copies those proofs name (:meth:`Replica.evidence_wires`): a replica that missed a
  proof -- a frame lost, a crash before it was relayed -- meets it on the next connection, or
  as soon as the digests differ;
* the receiver refuses each differing copy as an equivocation, which keeps the evidence; when
  even the oldest copy of a creator it got differs, the divergence may start earlier, and it
  asks for the window before, twice as long as what it got (:func:`walk_back`), until a copy
  matches or seq 1 is reached. A delta chained to the other copy cannot chain to ours: it is
  refused, but it is not the relaying peer's fault (:func:`follows_equivocation`).

Which copy stays is the core's decision, the same everywhere; this module only makes both copies
meet, in a bounded number of deltas per round. Pure functions over a replica's queries; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from p2pspace.core.authenticity import MAX_CHAIN
from p2pspace.core.causal import Rejection
from p2pspace.core.delta import DeltaId
from p2pspace.core.replica import Replica
from p2pspace.errors import EquivocationError, ForgedDeltaError
from p2pspace.sync.messages import Ack, Heads, Vector, vector_of
from p2pspace.sync.space_link import RecvState, SpaceLink

WINDOW = 4  # deltas of a creator sent back when its head differs; the walk back doubles it
_DIGEST_CONTEXT = b"p2pspace-heads-v1\0"

Range = tuple[bytes, int, int]


def revision_heads(replica: Replica, vector: Mapping[bytes, int]) -> Heads:
    """Per creator of ``vector`` (the accepted vector), the hash of the delta it names."""
    heads = replica.buffer.heads
    return tuple(
        sorted((c, h.hash) for c, h in heads.items() if h.seq > 0 and vector.get(c) == h.seq)
    )


def _executed_hash(replica: Replica, creator: bytes, seq: int) -> bytes | None:
    return replica.executed_hash(creator, seq)


def diverging_ranges(
    replica: Replica, vector: Mapping[bytes, int], heads: Iterable[tuple[bytes, bytes]]
) -> list[Range]:
    """The ``(creator, first, last)`` ranges of our copies to send a peer whose Revision named
    ``vector`` and ``heads``: for each creator whose delta at the peer's seq we hold executed
    under another hash, the last :data:`WINDOW` deltas up to that seq -- once a signed delta at
    or after it is executed too (an unsigned copy the peer cannot authenticate proves nothing;
    it is sent once the signature that covers it is here)."""
    executed = replica.vector
    ranges: list[Range] = []
    for creator, digest in heads:
        seq = vector.get(creator, 0)
        if seq < 1 or executed.get(creator, 0) < seq:
            continue  # we do not hold that seq (yet): the peer compares from its side
        ours = _executed_hash(replica, creator, seq)
        if ours is not None and ours != digest and _signed_from(replica, creator, seq):
            ranges.append((creator, max(1, seq - WINDOW + 1), seq))
    return ranges


def _signed_from(replica: Replica, creator: bytes, seq: int) -> bool:
    rows = replica.store.wires_range(replica.space_id, creator, seq, seq + MAX_CHAIN)
    return any(signed for _seq, signed, _wire in rows)


def heads_digest(replica: Replica, vector: Mapping[bytes, int]) -> bytes:
    """A digest of the executed deltas ``vector`` names (creator, seq, hash each) and of the
    equivocation proofs held (:meth:`Replica.evidence_digest`), or b"" if one of those deltas
    is not executed here. Equal vectors with different digests: some copy differs, or one side
    holds proofs the other lacks."""
    digest = hashlib.sha256(_DIGEST_CONTEXT)
    for creator, seq in sorted(vector.items()):
        if seq < 1:
            continue
        ours = _executed_hash(replica, creator, seq)
        if ours is None:
            return b""
        digest.update(creator + seq.to_bytes(8, "big") + ours)
    digest.update(replica.evidence_digest())
    return digest.digest()


def answer(
    link: SpaceLink, vector: Mapping[bytes, int], heads: Heads, *, again: bool = False
) -> list[Range]:
    """The ranges of our copies to send the peer of ``link`` for its Revision of ``vector``
    and ``heads``: each divergence once per link (``again``: every time, for links that lose
    frames)."""
    named = dict(heads)
    return [
        (creator, first, last)
        for creator, first, last in diverging_ranges(link.replica, vector, heads)
        if again or link.remember_answer(creator, last, named[creator])
    ]


def link_digest(link: SpaceLink, vector: Vector) -> bytes:
    """:func:`heads_digest` of ``link``'s replica at ``vector``, cached on the link."""
    proofs = link.replica.evidence_digest()
    if link.digest[0] != vector or link.digest[1] != proofs or not link.digest[2]:
        link.digest = (vector, proofs, heads_digest(link.replica, dict(vector)))
    return link.digest[2]


def asks_revision(link: SpaceLink, ack: Ack) -> bool:
    """True if the peer's ``ack`` shows it at our executed vector with another digest -- some
    copy differs -- and we have not acted on that yet: send it a Revision with our heads, so
    that it sends its copies."""
    ours = vector_of(link.replica.vector)
    if not ack.digest or ack.vector != ours or link.mismatch == (ack.vector, ack.digest):
        return False
    digest = link_digest(link, ours)
    if not digest or digest == ack.digest or link.recv is not RecvState.SYNCED:
        return False
    link.mismatch = (ack.vector, ack.digest)
    return True


def equivocators(rejected: Iterable[Rejection]) -> set[bytes]:
    """Creators of which a differing copy was just refused as an equivocation."""
    return {
        r.delta_id.creator
        for r in rejected
        if isinstance(r.error, EquivocationError) and r.delta_id is not None
    }


def follows_equivocation(rejection: Rejection, equivocating: set[bytes]) -> bool:
    """True for a delta of an equivocating creator refused as not chaining to our copy, or as
    an unauthenticated differing copy (the unsigned part of the other history): the creator is
    at fault, not the peer that relayed it."""
    return (
        isinstance(rejection.error, ForgedDeltaError)
        and rejection.delta_id is not None
        and rejection.delta_id.creator in equivocating
    )


def walk_back(seen: Sequence[DeltaId], rejected: Sequence[Rejection]) -> list[Range]:
    """Ranges to fetch after a batch of deltas ``seen``: for each creator whose *oldest* copy
    in the batch was refused as differing, the window just before it, twice as long as the
    creator's part of the batch (at least :data:`WINDOW`)."""
    equivocating = equivocators(rejected)
    differing: dict[bytes, set[int]] = {}
    for rejection in rejected:
        other = isinstance(rejection.error, EquivocationError) or follows_equivocation(
            rejection, equivocating
        )
        if other and rejection.delta_id is not None:
            creator, seq = rejection.delta_id
            differing.setdefault(creator, set()).add(seq)
    if not differing:
        return []
    oldest: dict[bytes, int] = {}
    count: dict[bytes, int] = {}
    for creator, seq in seen:
        if creator in differing:
            oldest[creator] = min(seq, oldest.get(creator, seq))
            count[creator] = count.get(creator, 0) + 1
    ranges: list[Range] = []
    for creator, seqs in sorted(differing.items()):
        first = oldest.get(creator, 0)
        if first > 1 and first in seqs:
            span = max(WINDOW, 2 * count[creator])
            ranges.append((creator, max(1, first - span), first - 1))
    return ranges


__all__ = [
    "WINDOW",
    "answer",
    "asks_revision",
    "diverging_ranges",
    "equivocators",
    "follows_equivocation",
    "heads_digest",
    "link_digest",
    "revision_heads",
    "walk_back",
]
