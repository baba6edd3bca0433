"""Snapshot transfer on one space link (protocol v4; see :mod:`p2pspace.core.snapshot`).

Theory of operation. A peer's ``Revision`` shows what it lacks. When it lacks at least
:data:`SNAPSHOT_MIN_LACK` closed deltas and speaks v4 (what it holds beyond our closed blocks it
keeps, and executes again on top of the snapshot),
we answer with an ``offer`` of the snapshot at our last checkpoint instead of streaming the
closed history (the stream that follows is empty: ``Synced`` at once). The peer asks for the
chunks it lacks one ``get`` at a time (so it paces the transfer), checks each against the
manifest and keeps it in its store; a broken connection resumes where it stopped, with any
member offering the same snapshot. Once all chunks are in, the session hands the snapshot to
its endpoint (:class:`~p2pspace.sync.session_events.SnapshotReceived`), which verifies and
installs it and asks again with a fresh ``Revision``: the stream then brings the open window.

A chunk that does not match its manifest, or a snapshot that does not verify, is refused with
:class:`~p2pspace.errors.SnapshotError`; the receiver drops what it kept and ``decline``\\ s the
offer, and the sender then streams the deltas instead. Nothing here changes a replica.
"""

from __future__ import annotations

import hashlib

from p2pspace.core import snapshot
from p2pspace.errors import MalformedError, RemoteProtocolError, SnapshotError
from p2pspace.sync.messages import Snapshot
from p2pspace.sync.session_events import SnapshotReceived
from p2pspace.sync.space_link import SpaceLink

SNAPSHOT_MIN_LACK = 256  # closed deltas a peer must lack before a snapshot is offered
SNAPSHOTS_FROM = 4  # the protocol version that carries snapshots


def offer(link: SpaceLink, vector: dict[bytes, int], protocol: int) -> Snapshot | None:
    """The offer to send instead of a catch-up stream for a peer holding ``vector``, or None.

    A peer that lacks deltas this replica compacted (:mod:`p2pspace.core.history`) is offered
    the snapshot however little it lacks: the deltas are not here to send."""
    replica = link.replica
    horizon = replica.horizon()
    if protocol < SNAPSHOTS_FROM or horizon.number == 0 or not horizon.closed:
        return None
    closed = horizon.closed
    lack = 0
    # Deltas the peer holds beyond our closed blocks do not stop it: it keeps them and
    # receives them again on top of the snapshot (Replica.install_snapshot).
    for creator, seq in closed.items():
        lack += max(0, seq - vector.get(creator, 0))
    if lack < SNAPSHOT_MIN_LACK and not replica.lacks_compacted(vector):
        return None
    manifest, _chunks = replica.snapshot()
    encoded = manifest.encode()
    if hashlib.sha256(encoded).digest() in link.declined:
        return None
    return Snapshot(space=replica.space_id, part="offer", index=0, data=encoded)


def held_part(link: SpaceLink, vector: dict[bytes, int]) -> dict[bytes, int]:
    """The vector to stream to a peer holding ``vector`` that takes no snapshot: what this
    replica compacted counts as held (it is not here to send; the peer gets it from a member
    that keeps it, or joins again from a snapshot)."""
    compacted = link.replica.compacted()
    if not compacted:
        return vector
    lifted = dict(vector)
    for creator, seq in compacted.items():
        if seq > lifted.get(creator, 0):
            lifted[creator] = seq
    return lifted


def on_message(link: SpaceLink, message: Snapshot) -> Snapshot | SnapshotReceived | None:
    """Handle a Snapshot message on ``link``: what to send back, or the finished snapshot."""
    replica = link.replica
    store, space = replica.store, replica.space_id
    if message.part == "offer":
        try:
            manifest = snapshot.Manifest.decode(message.data)
        except MalformedError as exc:
            raise SnapshotError(f"snapshot offer: {exc}") from None
        if manifest.space != space:
            raise SnapshotError("snapshot offer for another space")
        if manifest.number <= replica.horizon().number:
            return None  # we hold that block already: the revision we sent was old
        link.snapshot_offer = message.data
        with store.transaction(sync=False):
            held, _parts = store.snapshot_parts(space)
            if held is not None and held != message.data:
                store.drop_snapshot_parts(space)
        return _next(link, manifest)
    if message.part == "get":
        manifest, chunks = replica.snapshot()
        if hashlib.sha256(manifest.encode()).digest() != message.data:
            return None  # an older snapshot: the peer gets our new offer with its next revision
        if message.index >= len(chunks):
            raise RemoteProtocolError("snapshot chunk index beyond the manifest")
        return Snapshot(space=space, part="chunk", index=message.index, data=chunks[message.index])
    if message.part == "decline":
        link.declined.add(message.data)
        return None
    # A chunk of the offer under way.
    if link.snapshot_offer is None:
        return None  # not asked for (a lossy link's late duplicate)
    manifest = snapshot.Manifest.decode(link.snapshot_offer)
    snapshot.check_chunk(manifest, message.index, message.data)
    with store.transaction(sync=False):
        store.add_snapshot_part(space, link.snapshot_offer, message.index, message.data)
    return _next(link, manifest)


def _next(link: SpaceLink, manifest: snapshot.Manifest) -> Snapshot | SnapshotReceived:
    replica = link.replica
    _held, parts = replica.store.snapshot_parts(replica.space_id)
    for index in range(len(manifest.chunks)):
        if index not in parts:
            return Snapshot(
                space=replica.space_id,
                part="get",
                index=index,
                data=hashlib.sha256(manifest.encode()).digest(),
            )
    link.snapshot_offer = None
    return SnapshotReceived(
        space=replica.space_id,
        replica=replica,
        manifest=manifest,
        chunks=tuple(parts[i] for i in range(len(manifest.chunks))),
    )


def decline(link: SpaceLink, manifest: snapshot.Manifest) -> Snapshot:
    """What to send after the snapshot of ``manifest`` failed to verify (its parts dropped)."""
    replica = link.replica
    with replica.store.transaction(sync=False):
        replica.store.drop_snapshot_parts(replica.space_id)
    link.snapshot_offer = None
    digest = hashlib.sha256(manifest.encode()).digest()
    return Snapshot(space=replica.space_id, part="decline", index=0, data=digest)
