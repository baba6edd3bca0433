"""The causal buffer: which received deltas may be accepted, and when.

Theory of operation. A replica *accepts* a delta once it is

1. **causally ready** -- the accepted vector holds ``creator: seq - 1`` and covers every entry of
   the delta's dependency diff (entries the diff does not name were covered by the creator's
   previous delta, already accepted);
2. **authentic** -- its signature verifies against the creator's key, or, when unsigned, the
   ``prev`` hashes of the creator's following deltas chain it to one whose signature verifies
   (the rules are in :mod:`p2pspace.core.authenticity`);
3. **valid in its causal past** -- ``prev`` equals the hash of the creator's accepted previous
   delta; ``rank`` is 1 + the highest rank among its dependency heads (the creator's previous
   delta and every diff entry; entries not in the diff are heads of the previous delta, whose
   ranks are lower); and the creator's role in the membership its causal past builds allows
   every command, within the space's quota (:mod:`p2pspace.core.authority`).

Deltas that are not yet ready wait in the *pending* set (:mod:`p2pspace.core.pending`), filed
under the peer that sent them and their creator and bounded in count and bytes: over the bound
the oldest deltas of whoever holds the most are dropped (they are fetched again later, never a
crash), and deltas of creators without an accepted grant are kept only within a small bound of
their own. Each pending delta waits on exactly one *blocker* id; when that id arrives or is
accepted the delta is re-examined. A delta whose dependencies run more than ``max_gap`` beyond
the accepted vector is refused outright (:class:`~p2pspace.errors.TooFarAheadError`): a causal
stream delivers those later, in order.

Accepting never executes: :meth:`CausalBuffer.take_accepted` hands accepted deltas, in causal
order, to the replica, which places them in the total order. This module has no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from p2pspace.core.authenticity import MAX_CHAIN, chains_to, check_signature, signature_verifies
from p2pspace.core.authority import Authority
from p2pspace.core.delta import Delta, DeltaId
from p2pspace.core.membership import INSTANCE as MEMBERS_INSTANCE
from p2pspace.core.membership import Membership, member_grant
from p2pspace.core.pending import Bound, Bounds, Pending, PendingSet
from p2pspace.errors import (
    BrokenChainError,
    EquivocationError,
    ForgedDeltaError,
    InvalidDeltaError,
    NotAuthorizedError,
    NotMemberError,
    RankError,
    RemoteProtocolError,
    TooFarAheadError,
    WrongSpaceError,
)


class Head(NamedTuple):
    seq: int
    rank: int
    hash: bytes


MAX_REFUSED_COPIES = 256  # authentic refused copies remembered to find equivocations
MAX_REFUSED_COPY_BYTES = 4 * 1024 * 1024  # ... and their bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds of the pending set. ``max_stranger_*``: deltas of creators without an accepted
    grant, within the totals."""

    max_pending: int = 20_000
    max_pending_bytes: int = 32 * 1024 * 1024
    max_stranger_pending: int = 64
    max_stranger_pending_bytes: int = 1024 * 1024
    max_gap: int = 1_000_000
    max_fetch_ranges: int = 64
    enforce_roles: bool = True  # False only to measure what authorisation costs (the bench)
    selective_undo: bool = True  # False: a merge undoes the whole suffix (tests compare both)
    # Protocol v3 fan-out: relayed deltas are announced by acks and fetched, not pushed (False:
    # every delta relayed in full, as in v2). A peer that refused what another relayed asks it
    # for its proofs of equivocation (:mod:`p2pspace.sync.refusals`), so it need not be offered
    # the delta again to accept it once the proof allows it.
    announce_relays: bool = True

    def pending_bounds(self) -> Bounds:
        return Bounds(
            total=Bound(count=self.max_pending, size=self.max_pending_bytes),
            strangers=Bound(count=self.max_stranger_pending, size=self.max_stranger_pending_bytes),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A delta that was refused, with the typed error saying why."""

    delta_id: DeltaId | None
    error: RemoteProtocolError
    delta_hash: bytes = b""  # which copy was refused (two copies may share an id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Two authentic, different deltas with one id: the first was kept."""

    delta_id: DeltaId
    kept_hash: bytes
    other_wire: bytes


class CausalBuffer:
    """Pending deltas of one space and the accepted frontier (vector and heads)."""

    def __init__(
        self,
        *,
        space: bytes,
        heads: dict[bytes, Head],
        membership: Membership,
        authority: Authority,
        lookup: Callable[[bytes, int], tuple[int, bytes] | None],
        limits: Limits = Limits(),
        compacted: Callable[[bytes, int], bool] | None = None,
        compacted_rank: Callable[[bytes, int], int | None] | None = None,
        compacted_through: Callable[[bytes], int] | None = None,
    ) -> None:
        self.space = space
        self.heads = heads
        self.membership = membership
        self.authority = authority
        self.limits = limits
        self._lookup = lookup
        # Deltas below a compacted horizon (p2pspace.core.history): held, but only their rank.
        self._compacted = compacted or (lambda _c, _s: False)
        self._compacted_rank = compacted_rank or (lambda _c, _s: None)
        self._compacted_through = compacted_through or (lambda _c: 0)
        self._pending = PendingSet(limits.pending_bounds(), keyed=membership.keys)
        self._offered: dict[bytes, int] = {}  # member -> the highest seq of it offered here
        self._accepted: list[tuple[Delta, bytes]] = []
        self._accepted_info: dict[DeltaId, tuple[int, bytes]] = {}
        self.rejections: list[Rejection] = []
        self.evidence: list[Evidence] = []
        self.newly_void: set[DeltaId] = set()
        self.switches: list[tuple[Delta, bytes]] = []  # accepted copies replaced (equivocation)
        # Authentic copies refused after their signature checked out: a second, different
        # copy of one of them proves an equivocation even though neither is held.
        self._refused_copies: dict[DeltaId, tuple[bytes, bytes]] = {}  # id -> (hash, wire)
        self._refused_bytes = 0

    # -- queries ----------------------------------------------------------------------------

    def accepted_seq(self, creator: bytes) -> int:
        head = self.heads.get(creator)
        return head.seq if head is not None else 0

    def vector(self) -> dict[bytes, int]:
        return {c: h.seq for c, h in self.heads.items()}

    def seen_seq(self, creator: bytes) -> int:
        """The highest seq of ``creator`` (a member) accepted or ever offered here: what it
        can be shown to have created."""
        return max(self.accepted_seq(creator), self._offered.get(creator, 0))

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending.size

    @property
    def dropped(self) -> int:
        """Pending deltas dropped to keep the bounds."""
        return self._pending.dropped

    @property
    def stranger_count(self) -> int:
        """Pending deltas of creators without an accepted grant."""
        return self._pending.strangers

    @property
    def stranger_bytes(self) -> int:
        return self._pending.stranger_bytes

    @property
    def pending(self) -> PendingSet:
        """The pending set itself (read it; only this buffer changes it)."""
        return self._pending

    def missing(self) -> list[tuple[bytes, int, int]]:
        """``(creator, first, last)`` ranges that pending deltas wait for and nobody supplied
        (at most ``max_fetch_ranges``; creators with an accepted grant first, then in turn).
        Costs one step per waiting creator, not per pending delta."""
        return self._pending.missing(self.accepted_seq, self.limits.max_fetch_ranges)

    # -- input ------------------------------------------------------------------------------

    def offer(
        self,
        delta: Delta,
        wire: bytes,
        *,
        authentic: bool = False,
        unsupported: bool = False,
        sender: bytes | None = None,
    ) -> bool:
        """Add a received delta. Returns False for a duplicate of one already seen.

        ``unsupported``: this release cannot validate its commands (a newer release made it);
        it is judged on its creator's membership alone, kept, relayed and never executed.
        ``sender``: the peer it came from (None: not told); while it waits it counts towards
        that peer's share of the pending set.

        Raises :class:`InvalidDeltaError` subclasses when the delta is refused at once (wrong
        space, too far ahead, equivocation, conflicting copy); nothing is changed then.
        """
        if delta.space != self.space:
            raise WrongSpaceError("delta belongs to another space")
        did = delta.id
        accepted = self.accepted_seq(delta.creator)
        if delta.seq <= accepted:
            known = self._known(delta.creator, delta.seq)
            if known is not None and known[1] == delta.hash:
                return False
            if known is None and self._compacted(delta.creator, delta.seq):
                return False  # compacted here: a copy cannot be compared, only dropped
            self._conflict(delta, wire, known[1] if known else b"", authentic=authentic)
        existing = self._pending.get(did)
        if existing is not None:
            if existing.delta.hash == delta.hash:
                return False
            if not existing.authentic and (authentic or self._can_authenticate_now(delta)):
                self._remove(did)  # the held copy was never authenticated: this one wins
            elif not existing.authentic:
                # Two unauthenticated copies: neither is evidence against the other. Keep the
                # first; if the signed successor names the other, it is fetched again.
                return False
            else:
                self._conflict(delta, wire, existing.delta.hash, authentic=authentic)
        gap = self.limits.max_gap
        if delta.seq - accepted > gap or any(q - self.accepted_seq(e) > gap for e, q in delta.deps):
            raise TooFarAheadError(f"delta {did} depends on deltas too far ahead to buffer")
        if authentic and self._blocker(delta) is None:
            # Fast path (in-order streams): ready and authentic, so accepted without queuing.
            while True:
                try:
                    self._check_causal_past(delta, wire)
                    void = self.authority.check(delta, unsupported=unsupported)
                    break
                except InvalidDeltaError as exc:
                    if self._refused_twin(delta, wire, exc):
                        continue  # judged again: its creator is known to have forked
                    self.rejections.append(
                        Rejection(delta_id=did, error=exc, delta_hash=delta.hash)
                    )
                    return True
            woken: deque[DeltaId] = deque()
            self._accept(delta, wire, did, woken, void=void, unsupported=unsupported)
            if woken:
                self._process(woken)
            return True
        entry = Pending(
            delta=delta, wire=wire, sender=sender, authentic=authentic, unsupported=unsupported
        )
        work: deque[DeltaId] = deque([did])
        if not authentic:
            if delta.signature is not None:
                key = self.membership.keys.get(delta.creator)
                if key is not None:
                    self._verify(entry, key)  # raises ForgedDeltaError; nothing is kept then
            else:
                successor = self._pending.get(DeltaId(delta.creator, delta.seq + 1))
                if successor is not None and successor.authentic:
                    entry.authentic = chains_to(delta, successor.delta)
        self._pending.add(did, entry)
        if delta.creator in self.membership.keys and delta.seq > self._offered.get(
            delta.creator, 0
        ):
            self._offered[delta.creator] = delta.seq
        if entry.authentic:
            work.extend(self._propagate(entry))
        work.extend(self._wake(did))
        self._process(work)
        # After processing: an arrival that completed a chain takes no one's room.
        self._pending.evict(stranger=delta.creator not in self.membership.keys)
        return True

    def _can_authenticate_now(self, delta: Delta) -> bool:
        if delta.signature is not None:
            return signature_verifies(self.membership.keys.get(delta.creator), delta)
        successor = self._pending.get(DeltaId(delta.creator, delta.seq + 1))
        return successor is not None and successor.authentic and chains_to(delta, successor.delta)

    def take_accepted(self) -> list[tuple[Delta, bytes]]:
        """Deltas accepted since the last call, in causal (acceptance) order."""
        out, self._accepted = self._accepted, []
        self._accepted_info.clear()
        return out

    def take_rejections(self) -> list[Rejection]:
        out, self.rejections = self.rejections, []
        return out

    def take_switches(self) -> list[tuple[Delta, bytes]]:
        out, self.switches = self.switches, []
        return out

    def take_evidence(self) -> list[Evidence]:
        out, self.evidence = self.evidence, []
        return out

    def note_local(self, delta: Delta) -> None:
        """Record a delta this endpoint created (already authentic and valid). Pending deltas
        it unblocks are processed; any accepted go to :meth:`take_accepted`."""
        self.heads[delta.creator] = Head(delta.seq, delta.rank, delta.hash)
        self.newly_void |= self.authority.accept(delta, void=False)
        work: deque[DeltaId] = deque()
        if any(c.engine == MEMBERS_INSTANCE for c in delta.commands):
            work.extend(self._grant(delta))
        if self._pending.waits_for():
            work.extend(self._wake(delta.id))
        if work:
            self._process(work)

    # -- internals --------------------------------------------------------------------------

    def _known(self, creator: bytes, seq: int) -> tuple[int, bytes] | None:
        """``(rank, hash)`` of an accepted delta (just accepted, staged or stored)."""
        info = self._accepted_info.get(DeltaId(creator, seq))
        return info if info is not None else self._lookup(creator, seq)

    def _conflict(self, delta: Delta, wire: bytes, kept_hash: bytes, *, authentic: bool) -> None:
        """Two authentic copies of one id met: record the evidence, make the creator's deltas
        from there void, and keep the copy that sorts first by ``(rank, hash)`` -- the same
        choice on every replica. Always raises: EquivocationError (the creator's fault, not the
        sender's) or ForgedDeltaError for an unauthenticated copy."""
        if not (authentic or signature_verifies(self.membership.keys.get(delta.creator), delta)):
            raise ForgedDeltaError(f"unauthenticated copy of {delta.id} differs from the one held")
        self.evidence.append(Evidence(delta_id=delta.id, kept_hash=kept_hash, other_wire=wire))
        self.newly_void |= self.authority.fork(delta.creator, delta.seq)
        before = self._known(delta.creator, delta.seq - 1) if delta.seq > 1 else None
        if before is not None and before[1] != delta.prev:
            # It is built on another copy of the previous delta too: the histories split
            # there, whichever copies a replica happened to meet (the same rule as a broken
            # chain in _check_causal_past).
            previous = DeltaId(delta.creator, delta.seq - 1)
            self.evidence.append(Evidence(delta_id=previous, kept_hash=before[1], other_wire=wire))
            self.newly_void |= self.authority.fork(delta.creator, delta.seq - 1)
        known = self._known(delta.creator, delta.seq)
        held = self._pending.get(delta.id)
        if known is None and held is not None:
            # The copy met first is still pending: it may be dropped below or refused later,
            # and then never stored. Its wire is kept in the evidence too, so both copies can
            # be sent to peers that must meet the same proof.
            self.evidence.append(
                Evidence(delta_id=delta.id, kept_hash=delta.hash, other_wire=held.wire)
            )
        held_key = (known[0], known[1]) if known is not None else None
        if held_key is None and held is not None:
            held_key = (held.delta.rank, held.delta.hash)
        if held_key is not None and (delta.rank, delta.hash) < held_key and self._rank_valid(delta):
            if known is not None:
                self.switches.append((delta, wire))
                self._accepted_info[delta.id] = (delta.rank, delta.hash)
                head = self.heads.get(delta.creator)
                if head is not None and head.seq == delta.seq:
                    self.heads[delta.creator] = Head(delta.seq, delta.rank, delta.hash)
            elif held is not None:
                self._remove(delta.id)
                self._pending.add(
                    delta.id, Pending(delta=delta, wire=wire, sender=held.sender, authentic=True)
                )
                self._process(deque([delta.id]))
        raise EquivocationError(
            f"{delta.id} was signed twice with different contents: its creator equivocated"
        )

    def _refused_twin(self, delta: Delta, wire: bytes, error: InvalidDeltaError) -> bool:
        """``delta`` (authentic) is being refused for ``error``. True if it is refused by
        role and another authentic copy of its id was refused by role before: that proves its
        creator equivocated (neither copy is held, so :meth:`_conflict` never saw them meet),
        and the proof is recorded, with both wires, so that its verdict -- now on membership
        alone -- is decided again. Otherwise a copy refused by role is remembered (bounded by
        :data:`MAX_REFUSED_COPIES` and bytes, oldest dropped). Only role refusals count: they
        are what a proof of equivocation can overturn (a forked creator's deltas are judged on
        membership alone). A copy refused for its rank or chain is malformed wherever it
        arrives, so it never stands against a copy another replica executed."""
        if not isinstance(error, NotAuthorizedError | NotMemberError):
            return False
        did = delta.id
        other = self._refused_copies.get(did)
        if other is None:
            if len(wire) > MAX_REFUSED_COPY_BYTES:
                return False  # never kept: it must not push the others out first
            copies = self._refused_copies
            while copies and (
                len(copies) >= MAX_REFUSED_COPIES
                or self._refused_bytes + len(wire) > MAX_REFUSED_COPY_BYTES
            ):
                _hash, dropped = copies.pop(next(iter(copies)))
                self._refused_bytes -= len(dropped)
            copies[did] = (delta.hash, wire)
            self._refused_bytes += len(wire)
            return False
        if other[0] == delta.hash or self.authority.forked(delta.creator, delta.seq):
            return False
        self.evidence.append(Evidence(delta_id=did, kept_hash=delta.hash, other_wire=other[1]))
        self.evidence.append(Evidence(delta_id=did, kept_hash=other[0], other_wire=wire))
        self.newly_void |= self.authority.fork(delta.creator, delta.seq)
        return True

    def _rank_valid(self, delta: Delta) -> bool:
        """True if ``delta`` (a copy of a forked creator's delta) can be checked here, sorts
        after every dependency head (the relaxed rule of :meth:`_check_causal_past`) and would
        be accepted on its own (its creator a member above guest in its causal past: a forked
        creator's copies are judged on membership alone). A copy that would be refused never
        replaces one that was accepted, however low its rank."""
        try:
            known = [self._rank_of(delta.creator, delta.seq - 1)] if delta.seq > 1 else []
            known += [self._rank_of(endpoint, seq) for endpoint, seq in delta.deps]
        except RankError:
            return False
        if delta.rank <= max((rank for rank in known if rank is not None), default=0):
            return False
        return self.authority.may_write_void(delta)

    def _remove(self, did: DeltaId) -> Pending | None:
        return self._pending.remove(did)

    def _reject(self, did: DeltaId, error: InvalidDeltaError) -> None:
        entry = self._remove(did)
        digest = entry.delta.hash if entry is not None else b""
        self.rejections.append(Rejection(delta_id=did, error=error, delta_hash=digest))

    def _wake(self, did: DeltaId) -> list[DeltaId]:
        return self._pending.wake(did)

    def _blocker(self, delta: Delta) -> DeltaId | None:
        if self.accepted_seq(delta.creator) < delta.seq - 1:
            return DeltaId(delta.creator, delta.seq - 1)
        for endpoint, seq in delta.deps:
            if self.accepted_seq(endpoint) < seq:
                return DeltaId(endpoint, seq)
        return None

    def _process(self, work: deque[DeltaId]) -> None:
        while work:
            did = work.popleft()
            entry = self._pending.get(did)
            if entry is None:
                continue
            delta = entry.delta
            if self.accepted_seq(delta.creator) >= delta.seq:
                # Accepted meanwhile through another copy; the offer-time check covers conflicts.
                self._remove(did)
                continue
            blocker = self._blocker(delta)
            if blocker is not None:
                self._pending.wait(did, entry, blocker)
                continue
            try:
                key = self.membership.keys.get(delta.creator)
                if key is None:
                    # No grant of this creator is accepted although its dependencies are:
                    # none is in its causal past, so it is not a member there.
                    raise NotMemberError("the creator is not a member in the delta's causal past")
                if not entry.authentic:
                    if delta.signature is None:
                        # Authenticated later, when a signed successor chains back to it.
                        self._pending.auth_waiting.add(did)
                        continue
                    self._verify(entry, key)
                    work.extend(self._propagate(entry))
                self._check_causal_past(delta, entry.wire)
                void = self.authority.check(delta, unsupported=entry.unsupported)
            except InvalidDeltaError as exc:
                if entry.authentic and self._refused_twin(delta, entry.wire, exc):
                    work.appendleft(did)  # judged again: its creator is known to have forked
                    continue
                self._reject(did, exc)
                continue
            self._remove(did)
            self._accept(delta, entry.wire, did, work, void=void, unsupported=entry.unsupported)

    def _accept(
        self,
        delta: Delta,
        wire: bytes,
        did: DeltaId,
        work: deque[DeltaId],
        *,
        void: bool = False,
        unsupported: bool = False,
    ) -> None:
        self.heads[delta.creator] = Head(delta.seq, delta.rank, delta.hash)
        self.newly_void |= self.authority.accept(delta, void=void, unsupported=unsupported)
        if unsupported:
            self._accepted.append((delta, wire))
            self._accepted_info[did] = (delta.rank, delta.hash)
            work.extend(self._wake(did))
            return
        self._accepted.append((delta, wire))
        self._accepted_info[did] = (delta.rank, delta.hash)
        work.extend(self._grant(delta))
        work.extend(self._wake(did))

    def _grant(self, delta: Delta) -> list[DeltaId]:
        """Record member grants of an accepted delta; authenticate what the new keys sign."""
        woken: list[DeltaId] = []
        for command in delta.commands:
            grant = member_grant(command)
            if grant is None:
                continue
            member, key = grant
            known = member in self.membership.keys
            self.membership.add(member, key, delta.id)
            if known:
                continue
            for did in self._pending.admit(member):
                entry = self._pending.get(did)
                if entry is not None and entry.delta.signature is not None and not entry.authentic:
                    try:
                        self._verify(entry, key)
                    except InvalidDeltaError as exc:
                        self._reject(did, exc)
                        continue
                    woken.extend(self._propagate(entry))
        return woken

    def _verify(self, entry: Pending, key: bytes) -> None:
        check_signature(key, entry.delta)  # raises ForgedDeltaError; the entry stays unproven
        entry.authentic = True

    def _propagate(self, entry: Pending) -> list[DeltaId]:
        """Authenticate the unsigned predecessors that ``entry`` (authentic) chains back to.

        Returns the ids among them that were waiting only for authentication.
        """
        ready: list[DeltaId] = []
        current = entry
        for _ in range(MAX_CHAIN):
            prev_id = DeltaId(current.delta.creator, current.delta.seq - 1)
            prev = self._pending.get(prev_id)
            if prev is None or prev.authentic or not chains_to(prev.delta, current.delta):
                # A signed predecessor is authenticated by its own signature only; an unsigned
                # one whose hash is not the one signed for stays unauthenticated.
                break
            prev.authentic = True
            if prev_id in self._pending.auth_waiting:
                self._pending.auth_waiting.discard(prev_id)
                ready.append(prev_id)
            current = prev
        return ready

    def _check_causal_past(self, delta: Delta, wire: bytes | None = None) -> None:
        forked = self.authority.forked(delta.creator, delta.seq)
        if delta.seq > 1:
            head = self.heads[delta.creator]
            if delta.prev != head.hash and not forked:
                if wire is None:
                    raise BrokenChainError("prev hash does not match the creator's previous delta")
                # Authentic, yet built on another copy of the creator's previous delta: the
                # creator signed two histories (a byzantine member, or a restored backup).
                # This delta is the evidence; the creator's deltas from the fork on are void.
                self.evidence.append(
                    Evidence(
                        delta_id=DeltaId(delta.creator, delta.seq - 1),
                        kept_hash=head.hash,
                        other_wire=wire,
                    )
                )
                self.newly_void |= self.authority.fork(delta.creator, delta.seq - 1)
                forked = True
            top = head.rank
        else:
            top = 0
        relaxed = forked
        # The most an unknown rank below a snapshot can be: one less than the rank of its
        # creator's last delta at that snapshot (held, with its rank; ranks grow along a chain).
        ceiling = 0
        for endpoint, seq in delta.deps:
            if not relaxed and self.authority.forked(endpoint, seq):
                relaxed = True
            rank = self._rank_of(endpoint, seq)
            if rank is None:
                ceiling = max(ceiling, self._installed_head_rank(endpoint) - 1)
                continue
            if rank > top:
                top = rank
        if ceiling > top and not relaxed:
            # A dependency below the snapshot this replica was installed from, whose rank it
            # never received: the rank is only bounded, the same way on every replica installed
            # from that snapshot. Such a delta sorts after the closed block whatever its rank.
            if not top < delta.rank <= ceiling + 1:
                raise RankError(f"rank {delta.rank} should be in {top + 1}..{ceiling + 1}")
            return
        if delta.rank != top + 1 and not (relaxed and delta.rank > top):
            # A delta that depends on an equivocator's void delta may rank above its heads
            # (it was built on a copy of it that we do not keep), and so may the equivocator's
            # own; it must still sort after everything it depends on.
            if forked and delta.seq > 1 and delta.prev != self.heads[delta.creator].hash:
                # Built on the other copy of its creator's previous delta, which may rank
                # lower than the copy held here: judged once that copy is kept (it is the
                # one every replica keeps if it sorts first), so not refused for good.
                raise EquivocationError(
                    f"{delta.id} is built on a copy of its creator's previous delta that "
                    "this replica does not hold"
                )
            raise RankError(f"rank {delta.rank} should be {top + 1}")

    def _installed_head_rank(self, creator: bytes) -> int:
        """The rank of ``creator``'s last delta below the snapshot this replica was installed
        from (held: a snapshot carries each creator's last closed delta)."""
        info = self._known(creator, self._compacted_through(creator))
        if info is None:
            raise RankError(f"the last closed delta of {creator.hex()} is not held")
        return info[0]

    def _rank_of(self, creator: bytes, seq: int) -> int | None:
        """The rank of an accepted delta; None for one below the snapshot this replica was
        installed from (held as state, its rank not received)."""
        head = self.heads.get(creator)
        if head is not None and head.seq == seq:
            return head.rank
        info = self._known(creator, seq)
        if info is None:
            rank = self._compacted_rank(creator, seq)
            if rank is not None:
                return rank
            if head is not None and seq < self._compacted_through(creator):
                return None
            raise RankError(f"dependency {creator.hex()}:{seq} is not accepted")
        return info[0]

    def pending_ids(self) -> Iterable[DeltaId]:
        return self._pending.ids()
