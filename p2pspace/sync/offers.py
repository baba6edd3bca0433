"""Which spaces a connection syncs: what each side offered in its Hellos, and what is common.

Theory of operation. Each side's ``Hello`` names the spaces it will sync with the other -- those
where the other is a current member (:meth:`~p2pspace.sync.endpoint.Endpoint.spaces_for`) -- and
the connection syncs the intersection. What the *peer* offered only grows while a connection
lives (a late, stale Hello on a lossy link must not shrink it) and counts only spaces this
endpoint holds, so its size is bounded by our spaces, not by what a peer sends. What *we* offer
follows our view of the membership: it grows when the peer becomes a member of one more space
(a new Hello says so) and shrinks when the peer is removed (the link of that space closes; the
peer learns of its removal from the delta that removed it). When this endpoint itself is
removed, what peers offered of that space is forgotten: only a sponsor's fresh offer -- the
inviter of a new invitation -- links it again. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass


@dataclass(slots=True, kw_only=True)
class Offers:
    """The spaces each side named in its Hellos, and the ticks spent waiting for them."""

    ours: tuple[bytes, ...] = ()
    theirs: tuple[bytes, ...] = ()  # only spaces this endpoint holds; grows (see forget)
    ticks_awaiting: int = 0
    ticks: int = 0

    def hear(self, spaces: Iterable[bytes], held: Container[bytes]) -> None:
        """The peer's Hello offered ``spaces``; keep those this endpoint ``held``."""
        offered = {space for space in spaces if space in held}
        if not offered <= set(self.theirs):
            self.theirs = tuple(sorted(set(self.theirs) | offered))

    def forget(self, spaces: Iterable[bytes]) -> None:
        """Drop ``spaces`` from what the peer offered (the one way it shrinks: this endpoint
        was removed from them, so the peer's earlier offers of them are stale)."""
        gone = set(spaces)
        self.theirs = tuple(space for space in self.theirs if space not in gone)

    def follow(self, offered: Sequence[bytes]) -> tuple[set[bytes], bool]:
        """We would now offer ``offered``. Drops what we no longer offer and returns it, with
        whether we would offer more than we did (a new Hello must say so)."""
        lost = set(self.ours) - set(offered)
        if lost:
            self.ours = tuple(space for space in self.ours if space not in lost)
        return lost, bool(set(offered) - set(self.ours))

    def common(self) -> set[bytes]:
        """The spaces both sides offered."""
        return set(self.ours) & set(self.theirs)


__all__ = ["Offers"]
