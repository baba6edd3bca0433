"""An endpoint: one identity, one store, its replicas and its peer sessions (sans-IO).

Theory of operation. The endpoint is the hub the simulator and the trio node both drive. It owns
the replicas of every space in its store and the :class:`~p2pspace.sync.session.Session` of every
connected peer, and it is the one place where what a session received is applied:
:meth:`Endpoint.receive_data` feeds a session, pulls its events, applies each
:class:`~p2pspace.sync.session.DeltasReceived` to its replica and tells the session what it saw.

When a replica executes deltas -- created here, received from any session, or released from the
stage -- the endpoint hands them to every session (:meth:`Session.push`), which sends its peer
those the peer lacks: all of them to an old peer, only those created here to a peer that fetches
what acks announce (protocol v3). While an event is being applied the hand-out waits until the
session that delivered the deltas has recorded what its peer has, so nothing is echoed back to
its sender.

Relaying. A peer's Ack announces what it holds; on each tick the endpoint asks for what peers
announced and no replica accepted yet (:meth:`Session.claimed_ahead`), each range from one peer
that announced it, once a tick has passed since it was heard (the creator's own push, under way,
usually brings it first). That is how deltas cross peers that are not directly connected, each
reaching each peer about once. The same backoff as for pending deltas' fetches applies, and a
peer whose announcements stay unbacked is asked no more (its link gave up on its claims).

Membership decides whom a space is synced with: only current members
(:meth:`Endpoint.spaces_for`), and nobody once this endpoint itself was removed. When executed
deltas change the members of a space, every session follows *after* the hand-out, so that a peer
just removed still gets the delta that removed it (and nothing after it, :meth:`Session.push`)
before its link closes.

While any session still expects a catch-up stream for a space, received deltas for that space are
executed with ``defer`` so that concurrent histories merge in one undo/redo pass; the stage is
released when the last catch-up's ``Synced`` has been received (before the session acknowledges
it), when the session holding it back fails, or by the next :meth:`Endpoint.tick` -- never from a
connection's teardown.

The endpoint never reads a clock: callers pass ``time`` (milliseconds) when creating deltas.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from p2pspace.core import membership
from p2pspace.core import snapshot as snapshots
from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command, Delta
from p2pspace.core.identity import Identity
from p2pspace.core.replica import ReceiveResult, Replica
from p2pspace.core.store import Store
from p2pspace.errors import LocalProtocolError, NotFoundError, RemoteProtocolError, SnapshotError
from p2pspace.sync.ack_digest import AckDigests
from p2pspace.sync.session import ACK_EVERY_TICKS, DeltasReceived, Session
from p2pspace.sync.session_events import SnapshotReceived

MAX_FETCH_WAIT = 16  # ticks between two fetches of a range nobody answered, at most
ACK_PEERS = 4  # peers up to which each grown vector is acknowledged every ACK_EVERY_TICKS
ANNOUNCE_GRACE = 1  # ticks an announced range waits before it is fetched (its push may be near)

_log = logging.getLogger("p2pspace.sync.endpoint")


class Endpoint:
    """One endpoint's replicas and sessions. Single-threaded; every call is synchronous."""

    def __init__(
        self, identity: Identity, store: Store, *, limits: Limits = Limits(), name: str = ""
    ) -> None:
        """Load every replica in ``store`` for ``identity`` (the endpoint owns the store from
        now on and closes it in :meth:`close`). :func:`p2pspace.node.home.open_endpoint`
        opens one kept in a home folder."""
        self.name = name
        self.identity = identity
        self.store = store
        self.limits = limits
        self.replicas: dict[bytes, Replica] = {}
        self._told_unsupported: set[tuple[bytes, bytes]] = set()  # (space, creator) logged
        # Fetches of deltas pending replicas lack: (space, creator, first) -> (ticks to wait,
        # the wait after the next try). A range nobody answers -- a member that sent a delta
        # but never what it depends on -- is asked for ever less often, not every tick.
        self._fetch_waits: dict[tuple[bytes, bytes, int], tuple[int, int]] = {}
        self._fetch_round = 0  # rotates which peer a range goes to, try after try
        self.sessions: list[Session] = []
        self.ack_digests = AckDigests()  # what every session's acks of one state share
        # Sessions handed deltas since take_handed(), in the order they were (a dict: drivers
        # that flush them must do so in a reproducible order).
        self._handed: dict[Session, None] = {}
        self._executed: list[tuple[bytes, Sequence[tuple[Delta, bytes]]]] = []
        self._applying = 0  # > 0 while received deltas are being applied
        self._members_moved = False  # executed members commands: sessions follow after hand-out
        # Per space not yet joined (no grant received): the peers trusted to sync it with us.
        self.sponsors: dict[bytes, set[bytes]] = {}
        for space_id, peer in self.store.sponsors():
            self.sponsors.setdefault(space_id, set()).add(peer)
        for space_id, _genesis in self.store.spaces():
            self._adopt(Replica.open(self.store, self.identity, space_id, limits=limits))
        self._removed = self._spaces_removed_from()

    @property
    def endpoint_id(self) -> bytes:
        return self.identity.endpoint_id

    def close(self) -> None:
        for session in list(self.sessions):
            session.close()
        self.sessions.clear()
        self.store.close()

    # -- spaces -------------------------------------------------------------------------------

    def _adopt(self, replica: Replica) -> Replica:
        self.replicas[replica.space_id] = replica
        replica.listeners.append(self._on_executed)
        return replica

    def create_space(
        self,
        name: str,
        *,
        time: int,
        engines: dict[str, str] | None = None,
        nonce: bytes | None = None,
    ) -> Replica:
        replica = Replica.create_space(
            self.store,
            self.identity,
            name=name,
            time=time,
            engines=engines,
            member_name=self.name,
            nonce=nonce,
            limits=self.limits,
        )
        self._adopt(replica)
        self._refresh_sessions()
        return replica

    def join_space(self, genesis_wire: bytes, *, sponsors: Iterable[bytes] = ()) -> Replica:
        """Start replicating the space founded by ``genesis_wire`` (verified first).

        Until the delta granting this endpoint membership arrives, the space is synced only
        with its creator and ``sponsors`` (e.g. the inviter, authenticated by the transport):
        anyone else could be a stranger who merely knows the space id.
        """
        replica = Replica.join(self.store, self.identity, genesis_wire, limits=self.limits)
        trusted = {replica.genesis.creator, *sponsors} - {self.endpoint_id}
        known = self.sponsors.setdefault(replica.space_id, set())
        if trusted - known:
            with self.store.transaction():
                self.store.add_sponsors(replica.space_id, sorted(trusted - known))
            known |= trusted
        if replica.space_id in self.replicas:
            self._refresh_sessions()
            return self.replicas[replica.space_id]
        self._adopt(replica)
        self._refresh_sessions()
        for session in self.sessions:
            if session.peer in trusted:
                # A sponsor may have offered the space before we held it; ask again.
                session.ask_offers()
        return replica

    def replica(self, space_id: bytes) -> Replica:
        try:
            return self.replicas[space_id]
        except KeyError:
            raise NotFoundError(f"this endpoint has no space {space_id.hex()}") from None

    def spaces_for(self, peer: bytes, peer_offered: Iterable[bytes] = ()) -> list[bytes]:
        """Spaces this endpoint will sync with ``peer``.

        Those where ``peer`` is a current member (none once this endpoint itself was
        removed); and, while this endpoint is not a member itself -- it has not yet received the
        delta granting its membership, or it was removed and is being admitted again -- those
        that ``peer`` offered first if ``peer`` is a sponsor of the join (the space's creator or
        the inviter): the sponsor offered them because it counts this endpoint as a member. A
        stranger who offers a space id gets nothing. A removed member that still offers the
        space (it was away when it was removed) is linked once more, to be streamed history up
        to the delta that removed it and nothing after (the link then closes).
        """
        me = self.endpoint_id
        offered = set(peer_offered)
        return sorted(
            sid
            for sid, r in self.replicas.items()
            if (r.is_member(peer) and not was_removed(r, me))
            or (sid in offered and not r.is_member(me) and peer in self.sponsors.get(sid, ()))
            or (sid in offered and was_removed(r, peer) and r.is_member(me))
        )

    def removed_from(self, space_id: bytes) -> bool:
        """True once this endpoint's replica of the space shows this endpoint removed."""
        replica = self.replicas.get(space_id)
        return replica is not None and was_removed(replica, self.endpoint_id)

    # -- local changes ------------------------------------------------------------------------

    def create(self, space_id: bytes, commands: Sequence[Command], *, time: int) -> Delta:
        return self.create_many(space_id, [commands], time=time)[0]

    def create_many(
        self, space_id: bytes, batches: Sequence[Sequence[Command]], *, time: int
    ) -> list[Delta]:
        return self.replica(space_id).create_many(batches, time=time)

    # -- sessions -----------------------------------------------------------------------------

    def open_session(self, *, expected_peer: bytes | None = None, lossy: bool = False) -> Session:
        session = Session(self, expected_peer=expected_peer, lossy=lossy)
        self.sessions.append(session)
        return session

    def close_session(self, session: Session) -> None:
        session.close()
        self._handed.pop(session, None)
        if session in self.sessions:
            self.sessions.remove(session)
        if session.peer is not None:
            for replica in self.replicas.values():
                replica.peer_gone(session.peer)

    def receive_data(self, session: Session, data: bytes) -> None:
        """Bytes ``session``'s peer sent: let the session handle them and apply what it
        received. Raises what the session raises (:class:`RemoteProtocolError`: the peer
        misbehaved; the session has failed and queued an Error frame) and
        :class:`StorageError` if the store failed."""
        session.receive_data(data)
        self._applying += 1
        try:
            try:
                while (event := session.next_event()) is not None:
                    if isinstance(event, DeltasReceived):
                        result = self.receive(event.replica, event.wires, sender=session.peer)
                        session.deltas_applied(event, result)
                    elif isinstance(event, SnapshotReceived):
                        session.snapshot_done(event, self._install_snapshot(event))
                    else:
                        # The merge the finished stream held back runs before the session
                        # answers its Synced, so that the Ack covers it.
                        self.release_ready()
                        self._hand_out()
                        session.catch_up_ended(event)
                    self._hand_out()
            finally:
                self._applying -= 1
                self._hand_out()
        except RemoteProtocolError:
            # The session failed and holds no catch-up back any more: merge what it held.
            self.release_ready()
            raise
        self._note_own_deltas(session)
        self.release_ready()

    def _install_snapshot(self, event: SnapshotReceived) -> Exception | None:
        """Verify and install a received snapshot; the error that refused it, or None."""
        replica = event.replica
        try:
            replica.install_snapshot(
                snapshots.verify(event.manifest, event.chunks, replica.genesis)
            )
        except (SnapshotError, LocalProtocolError) as exc:
            _log.warning("refused a snapshot of %r: %s", replica.name, exc)
            return exc
        _log.info(
            "took the snapshot of %r at checkpoint %d (%d bytes)",
            replica.name,
            event.manifest.number,
            event.manifest.size,
        )
        return None

    def _note_own_deltas(self, session: Session) -> None:
        """Tell each replica how many of this endpoint's own deltas the peer holds: more than
        our store means it is older than our history (a restored backup), and the replica
        recovers them before it creates anything."""
        peer = session.peer
        if peer is None:
            return
        me = self.endpoint_id
        for space_id, replica in self.replicas.items():
            link = session.link(space_id)
            if link is not None:
                # What the peer still claims (a claim no repair backed is dropped): even 0
                # counts, so that a withdrawn claim stops holding creation back.
                replica.note_peer_vector(peer, {me: link.claims.get(me, 0)})

    def take_handed(self) -> list[Session]:
        """The sessions handed executed deltas to send since the last call: besides the
        session it fed, what a driver that flushes only the sessions with news must flush
        (everything else a session queues answers its own input, or waits for a tick)."""
        handed, self._handed = list(self._handed), {}
        return handed

    def receive(
        self, replica: Replica, wires: Iterable[bytes], *, sender: bytes | None = None
    ) -> ReceiveResult:
        """Offer received deltas to ``replica`` (staged while a catch-up for its space runs);
        ``sender``: the peer they came from (its share of the pending set holds them)."""
        defer = self.catching_up(replica.space_id)
        result = replica.receive(wires, defer=defer, sender=sender)
        proof = replica.take_evidence_wires()
        if proof:
            for session in self.sessions:
                session.send_evidence(replica.space_id, proof)
        for delta_id in result.unsupported:
            key = (replica.space_id, delta_id.creator)
            if key not in self._told_unsupported:
                self._told_unsupported.add(key)
                _log.warning(
                    "space %r: a newer p2pspace created changes this release cannot apply "
                    "(kept and passed on, not shown); upgrade p2pspace to see them",
                    replica.name,
                )
        return result

    @staticmethod
    def _announced(
        sessions: Sequence[Session], space_id: bytes, missing: Sequence[tuple[bytes, int, int]]
    ) -> list[tuple[bytes, int, int]]:
        """The ranges peers announced that the replica lacks, one per creator (the longest),
        except creators a pending delta already has a range of (``missing``)."""
        longest: dict[bytes, tuple[int, int]] = {}
        for session in sessions:
            for creator, first, last in session.claimed_ahead(space_id):
                if last > longest.get(creator, (first, 0))[1]:
                    longest[creator] = (first, last)
        for creator, _first, _last in missing:
            longest.pop(creator, None)
        return [(creator, first, last) for creator, (first, last) in sorted(longest.items())]

    def catching_up(self, space_id: bytes) -> bool:
        """True while some session still expects a catch-up stream for the space."""
        return any(s.holds_merges(space_id) for s in self.sessions)

    def release_ready(self) -> None:
        """Merge staged deltas of spaces no catch-up holds back any more."""
        for space_id, replica in self.replicas.items():
            if replica.staged_count and not self.catching_up(space_id):
                replica.release()

    def _on_executed(self, replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
        self._executed.append((replica.space_id, executed))
        if not self._members_moved:
            self._members_moved = any(
                c.engine == membership.INSTANCE for d, _w in executed for c in d.commands
            )
        if not self._applying:
            self._hand_out()

    def _hand_out(self) -> None:
        while self._executed:
            space_id, executed = self._executed.pop(0)
            for session in self.sessions:
                if session.push(space_id, executed):
                    self._handed[session] = None
        if self._members_moved:
            # After the push: a peer removed by these deltas got the removal before its link
            # closes; one added may now be offered the space.
            self._members_moved = False
            self._refresh_sessions()

    def _spaces_removed_from(self) -> set[bytes]:
        return {sid for sid, r in self.replicas.items() if was_removed(r, self.endpoint_id)}

    def _refresh_sessions(self) -> None:
        removed = self._spaces_removed_from()
        # What peers offered of a space before this endpoint was removed from it is stale:
        # only a sponsor's fresh offer (a re-admission) may link it again.
        newly, self._removed = removed - self._removed, removed
        for session in self.sessions:
            if newly:
                session.forget_offers(newly)
            session.refresh_spaces()

    def tick(self) -> None:
        """Periodic duties of every session, and fetches for deltas pending replicas lack."""
        self.sessions = [s for s in self.sessions if not s.closed]
        for session in [s for s in self._handed if s.closed]:
            del self._handed[session]
        # Acks announce what we relay; with many peers -- a mesh, where each delta came from
        # its creator directly -- announcing a grown vector less often keeps the acks an
        # endpoint sends per tick about constant instead of growing with its peers.
        ack_every = ACK_EVERY_TICKS * max(1, len(self.sessions) // ACK_PEERS)
        for session in self.sessions:
            session.tick(ack_every=ack_every)
        self._fetch_round += 1
        wanted: set[tuple[bytes, bytes, int]] = set()
        for space_id, replica in self.replicas.items():
            candidates = [s for s in self.sessions if s.syncs(space_id)]
            missing = replica.missing()
            announced = self._announced(candidates, space_id, missing)
            wanted.update((space_id, creator, first) for creator, first, _last in missing)
            wanted.update((space_id, creator, first) for creator, first, _last in announced)
            if not candidates or not (missing or announced):
                continue
            by_session: dict[int, list[tuple[bytes, int, int]]] = {}
            # A catch-up stream under way will bring what its peer has: fetching that too
            # would only get it twice (chunks end anywhere, so their unsigned tails wait a
            # moment for the next chunk's signed delta).
            for i, (creator, first, last) in enumerate(missing + announced):
                if any(s.stream_brings(space_id, creator, last) for s in candidates):
                    continue
                key = (space_id, creator, first)
                grace = ANNOUNCE_GRACE if i >= len(missing) else 0
                wait, after = self._fetch_waits.get(key, (grace, 1))
                if wait > 0:
                    self._fetch_waits[key] = (wait - 1, after)
                    continue
                self._fetch_waits[key] = (after, min(2 * after, MAX_FETCH_WAIT))
                holders = [
                    s
                    for s in candidates
                    if s.peer_has(space_id, creator, first)
                    or s.claims_hold(space_id, creator, first)
                ]
                pool = holders or candidates
                chosen = pool[(i + self._fetch_round) % len(pool)]
                by_session.setdefault(id(chosen), []).append((creator, first, last))
            for session in candidates:
                ranges = by_session.get(id(session))
                if ranges:
                    session.send_fetch(space_id, ranges)
        for key in self._fetch_waits.keys() - wanted:
            del self._fetch_waits[key]  # arrived (or no longer wanted): a later gap starts afresh
        self.release_ready()


def was_removed(replica: Replica, endpoint_id: bytes) -> bool:
    """True if ``replica``'s executed members state shows ``endpoint_id`` removed (not merely
    not yet admitted)."""
    member = replica.members().get(endpoint_id)
    return member is not None and not member.current
