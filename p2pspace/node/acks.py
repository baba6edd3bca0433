"""What each peer acknowledged executing, per space, kept across restarts.

Theory of operation. A peer's ``Ack`` frames say which deltas it has executed (a vector per
space). The session keeps the latest for its own use while the connection lasts; the
:class:`AckBook` keeps the union over every connection and every run, because the discussion
tool shows "delivered to k of n" even for peers that are offline now. What it is given is what
a session's link shows as acknowledged: each entry already cut to what existed when the peer
claimed it (:func:`p2pspace.sync.space_link.plausible`), so a peer claiming everything once is
not counted, now or after a restart, as holding deltas made later. Vectors only grow: an entry
below what is known is ignored. Changes are written to the store in batches (one
transaction per :meth:`AckBook.flush`, called by the node's ticker and at shutdown), not on
every frame. An entry that does not decode at load is skipped -- it is only a cache of what
peers said.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from p2pspace.core import codec
from p2pspace.core.store import Store
from p2pspace.errors import P2PSpaceError, StorageError

log = logging.getLogger("p2pspace.node")


class AckBook:
    """Peers' acknowledged vectors: space -> peer -> {creator: seq}."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._acks: dict[bytes, dict[bytes, dict[bytes, int]]] = {}
        self._dirty: set[tuple[bytes, bytes]] = set()
        for space, peer, raw in store.peer_acks():
            try:
                vector = dict(codec.decode_stored(raw))
            except (P2PSpaceError, TypeError, ValueError):
                continue
            self._acks.setdefault(space, {})[peer] = vector

    def acked(self, space: bytes) -> dict[bytes, dict[bytes, int]]:
        """The latest vector each peer acknowledged for ``space``."""
        return self._acks.get(space, {})

    def note(self, space: bytes, peer: bytes, acked: Mapping[bytes, int]) -> bool:
        """Merge what ``peer`` acknowledged; True if that grew what is known."""
        known = self._acks.setdefault(space, {}).setdefault(peer, {})
        grew = False
        for creator, seq in acked.items():
            if seq > known.get(creator, 0):
                known[creator] = seq
                grew = True
        if grew:
            self._dirty.add((space, peer))
        return grew

    def flush(self) -> None:
        """Write what changed since the last flush. A store failure is logged, not raised:
        the acknowledgements come again on the next connection."""
        if not self._dirty:
            return
        rows = [
            (space, peer, codec.encode_local(sorted(self._acks[space][peer].items())))
            for space, peer in sorted(self._dirty)
        ]
        self._dirty.clear()
        try:
            with self._store.transaction(sync=False):
                self._store.set_peer_acks(rows)
        except StorageError as exc:
            log.warning("cannot record acknowledgements: %s", exc)


__all__ = ["AckBook"]
