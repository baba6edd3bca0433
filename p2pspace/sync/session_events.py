"""What a session hands its driver, and what it may ask of it.

A :class:`~p2pspace.sync.session.Session` never calls the endpoint that drives it: it returns
events from :meth:`~p2pspace.sync.session.Session.next_event` -- a frame whose effect needs the
endpoint -- and waits for the answer before it parses further; the only calls it makes go the
other way, side-effect-free questions through :class:`SessionHost`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from p2pspace.core.replica import Replica
from p2pspace.core.snapshot import Manifest
from p2pspace.sync.ack_digest import AckDigests


class SessionHost(Protocol):
    """What a session may ask of the endpoint it runs for (queries only, no side effects)."""

    @property
    def endpoint_id(self) -> bytes: ...

    @property
    def replicas(self) -> Mapping[bytes, Replica]: ...

    def spaces_for(self, peer: bytes, peer_offered: Iterable[bytes] = ()) -> list[bytes]: ...

    @property
    def ack_digests(self) -> AckDigests: ...  # shared by its sessions (a cache only)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeltasReceived:
    """The peer sent deltas for ``space``: apply them, then call
    :meth:`Session.deltas_applied` with the result."""

    space: bytes
    replica: Replica
    wires: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUpEnded:
    """The peer's catch-up stream for ``space`` is complete (its Synced arrived, bringing us up
    to ``vector``): merge what waited for it, then call :meth:`Session.catch_up_ended`."""

    space: bytes
    vector: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotReceived:
    """Every chunk of a snapshot for ``space`` is in (:mod:`p2pspace.sync.snapshot_link`):
    verify and install it, then call :meth:`Session.snapshot_done`."""

    space: bytes
    replica: Replica
    manifest: Manifest
    chunks: tuple[bytes, ...]


Event = DeltasReceived | CatchUpEnded | SnapshotReceived


__all__ = ["CatchUpEnded", "DeltasReceived", "Event", "SessionHost", "SnapshotReceived"]
