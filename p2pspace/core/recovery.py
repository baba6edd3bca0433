"""Whether this endpoint's store is older than its own history, and what it must get back.

Theory of operation. A store restored from a backup (or a VM snapshot, or an empty store under an
existing identity) lacks deltas this endpoint made after the copy was taken, which its peers
still hold. Creating anything before getting them back would sign new deltas under sequence
numbers already used: an equivocation, by accident (DESIGN §8). So each peer's claim of how many
of our own deltas it holds (from its revision or acks) is kept while its session lasts; while
any claim runs ahead of what we accepted, the replica fetches the difference and creates nothing.
One log line says what happened -- when a claim first runs ahead, or when a peer first sends back
one of our deltas that the store lacked. A claim the peer withdraws before backing it with the
deltas (its session gave up the repairs) is an untrue one: that peer's claims are ignored from
then on. Pure; the replica asks it questions.
"""

from __future__ import annotations

import logging

_log = logging.getLogger(__name__)


class OwnRecovery:
    """Peers' claims to hold this endpoint's own deltas, for one space."""

    def __init__(self, space_name: str) -> None:
        self._name = space_name
        self._claims: dict[bytes, int] = {}  # peer -> how many of our deltas it holds
        self._unbacked: set[bytes] = set()  # peers that claimed ours and withdrew unbacked
        self._told = False  # the one line saying the store was older is logged

    def behind(self, have: int) -> int:
        """How many of our own deltas peers hold beyond ``have`` (what we accepted)."""
        if not self._claims:
            return 0
        return max(0, max(self._claims.values()) - have)

    def note_claim(self, peer: bytes, theirs: int, have: int) -> None:
        """``peer`` says it holds ``theirs`` of our deltas; we accepted ``have``.

        A peer whose claim was withdrawn before we got what it claimed (the session gave up
        repairs nobody answered) never holds our creation back again: a member that keeps
        claiming our deltas, reconnecting each time, must not stop us from writing."""
        before = self._claims.get(peer, 0)
        if before > max(theirs, have):
            self._unbacked.add(peer)
        if theirs <= have or peer in self._unbacked:
            self._claims.pop(peer, None)
            return
        if not self.behind(have):
            self._tell(
                "space %r: peers hold %d change(s) this endpoint made that its store lacks (a "
                "restored backup?); recovering them before making new ones",
                theirs - have,
            )
        self._claims[peer] = theirs

    def note_returned(self, count: int) -> None:
        """Peers sent back ``count`` of our own deltas that the store lacked."""
        if count:
            self._tell(
                "space %r: peers sent back %d change(s) this endpoint made that its store "
                "lacked (a restored backup?); recovering them",
                count,
            )

    def forget(self, peer: bytes) -> None:
        self._claims.pop(peer, None)

    def _tell(self, message: str, count: int) -> None:
        if not self._told:
            self._told = True
            _log.warning(message, self._name, count)


__all__ = ["OwnRecovery"]
