"""Whether a delta really comes from its creator: signatures and per-creator hash chains.

Theory of operation. A delta is *authentic* when either its own Ed25519 signature verifies
against its creator's key, or it is unsigned and the ``prev`` hash of its creator's next delta
-- itself authentic -- is this delta's hash. Group commit signs one delta in every chain of at
most :data:`MAX_CHAIN` (the last of a batch, and every :data:`MAX_CHAIN`-th), so an unsigned
delta is always at most :data:`MAX_CHAIN` links from a signature.

A signed delta is only ever authenticated by its own signature, never by a successor's chain:
otherwise a relay could replace the signature of one delta in a chain and still pass the chain
on. Keys come from the member grants accepted so far (:class:`~p2pspace.core.membership
.Membership`); a delta whose creator has no known key cannot be authenticated yet and waits.

This module decides; the causal buffer (:mod:`p2pspace.core.causal`) applies the decisions to
the deltas it holds. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from p2pspace.core.delta import Delta
from p2pspace.core.identity import verify_signature
from p2pspace.errors import AuthenticationError, ForgedDeltaError

MAX_CHAIN = 1024


def signature_verifies(key: bytes | None, delta: Delta) -> bool:
    """True if ``delta`` is signed and its signature verifies against ``key``."""
    if key is None or delta.signature is None:
        return False
    try:
        verify_signature(key, delta.signature, delta.body)
    except AuthenticationError:
        return False
    return True


def check_signature(key: bytes, delta: Delta) -> None:
    """Raise :class:`ForgedDeltaError` (the peer relayed a forgery) unless ``delta``'s signature
    verifies against ``key``. ``delta`` must be signed."""
    if delta.signature is None:
        raise ForgedDeltaError(f"{delta.id} carries no signature")
    try:
        verify_signature(key, delta.signature, delta.body)
    except AuthenticationError:
        raise ForgedDeltaError(f"signature of {delta.id} does not verify") from None


def chains_to(predecessor: Delta, successor: Delta) -> bool:
    """True if unsigned ``predecessor`` is authenticated by ``successor`` (if that is authentic):
    same creator, the next seq, and ``successor.prev`` is ``predecessor``'s hash."""
    return (
        predecessor.signature is None
        and successor.creator == predecessor.creator
        and successor.seq == predecessor.seq + 1
        and successor.prev == predecessor.hash
    )


def authenticate_batch(
    batch: Sequence[tuple[Delta, bytes]],
    keys: Mapping[bytes, bytes],
    accepted_seq: Callable[[bytes], int],
) -> set[int]:
    """Indexes of deltas in ``batch`` proven authentic by signatures within the batch.

    Walking backward, a verified signature authenticates its delta, and each *unsigned* delta
    whose hash is the ``prev`` of an authenticated successor (same creator, next seq) is
    authentic too. Deltas at or below ``accepted_seq(creator)`` are duplicates or conflicts that
    the causal buffer judges itself; they are skipped. A bad signature leaves its chain
    unauthenticated here; the causal buffer then refuses it with the typed error.
    """
    authentic: set[int] = set()
    expect: dict[bytes, tuple[int, bytes]] = {}  # creator -> (seq, hash) the chain needs
    for index in range(len(batch) - 1, -1, -1):
        delta = batch[index][0]
        creator = delta.creator
        want = expect.get(creator)
        if delta.signature is None and want is not None and want == (delta.seq, delta.hash):
            authentic.add(index)  # unsigned: authenticated by its signed successor's chain
        elif delta.seq <= accepted_seq(creator):
            expect.pop(creator, None)
            continue
        elif delta.signature is not None and signature_verifies(keys.get(creator), delta):
            authentic.add(index)
        else:
            expect.pop(creator, None)
            continue
        if delta.seq > 1:
            expect[creator] = (delta.seq - 1, delta.prev)
        else:
            expect.pop(creator, None)
    return authentic
