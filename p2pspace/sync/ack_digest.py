"""The heads digest an Ack carries, computed once per replica state for every link of an endpoint.

An endpoint acknowledges the same executed vector to each of its peers; the digest over the
deltas that vector names (:func:`p2pspace.sync.divergence.heads_digest`, one store lookup per
creator) is the same on each link. :class:`AckDigests` keeps the last one per space, so that 50
peers cost one computation, not 50. It is an optimisation only: a miss computes afresh.
"""

from __future__ import annotations

from p2pspace.sync import divergence
from p2pspace.sync.messages import Vector
from p2pspace.sync.space_link import SpaceLink


class AckDigests:
    """Per space, the last ``(vector, evidence digest, heads digest)`` any link computed."""

    def __init__(self) -> None:
        self._last: dict[bytes, tuple[Vector, bytes, bytes]] = {}

    def prime(self, space: bytes, link: SpaceLink, vector: Vector) -> None:
        """Give ``link`` the digest at ``vector`` if another link computed it for the same
        state (what :func:`~p2pspace.sync.divergence.link_digest` then returns)."""
        last = self._last.get(space)
        if (
            last is not None
            and last[0] == vector
            and link.digest[0] != vector
            and last[1] == link.replica.evidence_digest()
        ):
            link.digest = last

    def digest(self, space: bytes, link: SpaceLink, vector: Vector) -> bytes:
        """The heads digest of ``link``'s replica at ``vector`` (shared across links)."""
        self.prime(space, link, vector)
        value = divergence.link_digest(link, vector)
        self._last[space] = link.digest
        return value


__all__ = ["AckDigests"]
