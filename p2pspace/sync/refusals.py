"""Which refused deltas close a session, and what the others leave behind.

Theory of operation. When the endpoint applies deltas a peer sent, the replica may refuse some,
each with a typed error. Whose fault it is decides what happens (``blames_sender`` on every
:class:`~p2pspace.errors.RemoteProtocolError`):

* bytes that prove the *peer* misbehaved -- malformed, forged, a broken chain -- fail the
  session (:meth:`RefusalLog.judge` returns the error);
* an authentic delta that breaks a rule of the space -- its creator is not a member or lacks the
  role, is over its quota, equivocated, runs too far ahead -- is its creator's fault: the peer
  that relayed it may merely have decided differently (an older release) or not hold yet what
  we hold. So is a delta of an equivocating creator that chains to the *other* copy, or is an
  unsigned part of it (a broken chain, an unauthenticated copy then prove nothing against the
  relay: :func:`~p2pspace.sync.divergence.follows_equivocation`). The session stays open.

A refusal of the second kind must not turn into a loop: the link remembers the first refused
seq of that creator and neither gap repair nor fetches ask this peer for it again (its verdict
depends only on its causal past, so it would not change -- unless evidence shows its creator
equivocated at or before it: the link then forgets it). The peer holds what it relayed, so it
may hold that evidence while we do not: the link asks it for its proofs (a Revision, answered
with them; a few times, backing off). Copies refused as equivocations and
deltas too far ahead are not remembered: another copy wins, or the gap closes. Refusals are
counted per (space, error type) in a :class:`RefusalLog` that the driver drains to report them
-- once per kind and interval, not once per frame. Pure; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from p2pspace.core.causal import Rejection
from p2pspace.core.delta import DeltaId
from p2pspace.core.replica import ReceiveResult
from p2pspace.errors import EquivocationError, RemoteProtocolError, TooFarAheadError
from p2pspace.sync import divergence
from p2pspace.sync.space_link import SpaceLink

MAX_KINDS = 64  # kinds of refusal kept between two drains (spaces x error types)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """``count`` deltas of ``space`` the peer sent (``late``: made ready) that were refused
    with ``error``'s type, without blaming the peer; ``error`` and ``delta_id`` are the first
    one's."""

    space: bytes
    error: RemoteProtocolError
    delta_id: DeltaId | None
    late: bool = False
    count: int = 1


class RefusalLog:
    """The refusals of one session since the driver last took them, one entry per kind."""

    def __init__(self) -> None:
        self._kinds: dict[tuple[bytes, type, bool], Refusal] = {}
        self.total = 0  # every refusal of the session's lifetime

    def note(self, space: bytes, rejection: Rejection, *, late: bool) -> None:
        self.total += 1
        key = (space, type(rejection.error), late)
        known = self._kinds.get(key)
        if known is not None:
            self._kinds[key] = replace(known, count=known.count + 1)
        elif len(self._kinds) < MAX_KINDS:
            self._kinds[key] = Refusal(
                space=space, error=rejection.error, delta_id=rejection.delta_id, late=late
            )

    def take(self) -> list[Refusal]:
        out = list(self._kinds.values())
        self._kinds.clear()
        return out

    def judge(
        self, space: bytes, link: SpaceLink, result: ReceiveResult
    ) -> RemoteProtocolError | None:
        """Go through ``result``'s rejections of deltas the peer sent on ``link``. Returns the
        first that proves the peer misbehaved (the caller fails the session), else None; every
        other one is noted, and remembered on the link when its verdict is final."""
        link.equivocators |= divergence.equivocators(result.rejected)
        for rejection in result.rejected:
            excused = divergence.follows_equivocation(rejection, link.equivocators)
            if rejection.error.blames_sender and not excused:
                return rejection.error
            if not excused and not isinstance(rejection.error, _PASSING):
                did = rejection.delta_id
                if did is not None:
                    link.refuse(did.creator, did.seq)
                    link.refused_relay()
            self.note(space, rejection, late=False)
        for rejection in result.late_rejected:
            self.note(space, rejection, late=True)
        return None


# Refusals whose verdict can change: another copy wins, or the gap closes.
_PASSING = (EquivocationError, TooFarAheadError)


__all__ = ["MAX_KINDS", "Refusal", "RefusalLog"]
