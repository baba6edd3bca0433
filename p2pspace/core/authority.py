"""Who may create what, decided on a delta's causal past: roles, removals and quotas.

Theory of operation. DESIGN §8 decides authorisation twice. This module is the first decision,
*before storage*: the creator of a delta must hold a role that allows every command of the delta
in the membership that the delta's **causal past** builds -- the members deltas its dependency
vector covers, applied in order-key order with the rules of
:func:`~p2pspace.core.membership.authorize`. Because the causal past is fixed by the delta
itself, every replica decides the same, whenever the delta arrives.

What is kept, per space, in memory and in the store (rows written with each commit):

* the *claimed vector* of each creator's last accepted delta (its dependency vector made whole,
  including itself): the causal past of the creator's next delta is that vector grown by the
  next delta's diff-encoded dependencies;
* the bytes of delta bodies each creator has created so far (a creator's chain is linear, so
  "bytes up to this delta" is the same on every replica; the quota is checked on it);
* every accepted *members delta* (a delta with a command for the members engine) with its
  claimed vector, so the membership of any causal past can be replayed (members deltas are few;
  replays are cached by the set of members deltas they cover);
* the *void* deltas (below).

**Removal voids concurrent deltas.** A removed endpoint cannot create a delta whose causal past
holds its removal (it is not a member there). It can still create deltas that do not depend on
the removal -- made before it learnt of it, or on purpose, with an old dependency vector and a
low rank so they sort early. Refusing those would split the space (a member that accepted one
before the removal arrived may have built on it), so they are accepted, stored and relayed but
*void*: executed as no-ops on every replica. A delta of creator C is void when an accepted,
authorised removal R of C does not cover it (its seq is beyond R's vector entry for C) and it
does not cover R. Every replica that holds both decides the same; a replica that executed such
a delta before R arrived re-executes it as a no-op by undo/redo. The same rule, restricted to a
causal past, is used when that past is replayed.

This module has no I/O: the replica loads its rows from the store and saves what
:meth:`Authority.take_dirty` returns in the commit that executes the deltas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from p2pspace.core.delta import Command, Delta, DeltaId, OrderKey
from p2pspace.core.membership import (
    INSTANCE,
    NOT_A_MEMBER,
    MemberTable,
    authorize,
)
from p2pspace.errors import NotAuthorizedError, NotMemberError, QuotaExceededError

MAX_CACHED_REPLAYS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class MembersDelta:
    """An accepted delta with members commands, and the causal past it claims."""

    id: DeltaId
    key: OrderKey
    commands: tuple[Command, ...]
    vector: dict[bytes, int]  # its causal past, itself excluded
    unsupported: bool = False

    def counters(self, remover: bytes) -> bool:
        """True if this delta removes or demotes ``remover``: a counter-move to a concurrent
        removal by ``remover``, left to the total order (the first executes)."""
        return counters_removal(self.commands, remover) and not self.unsupported

    def removes(self) -> list[bytes]:
        if self.unsupported:
            return []
        return [c.args["id"] for c in self.commands if c.engine == INSTANCE and c.name == "remove"]


def counters_removal(commands: Sequence[Command], remover: bytes) -> bool:
    """True if ``commands`` remove or demote ``remover`` (see :meth:`MembersDelta.counters`)."""
    for c in commands:
        if c.engine != INSTANCE or type(c.args) is not dict or c.args.get("id") != remover:
            continue
        if c.name == "remove" or (c.name == "role" and c.args.get("role") != "manager"):
            return True
    return False


@dataclass(slots=True, kw_only=True)
class Dirty:
    """What changed since the last commit: rows for the store."""

    vectors: dict[bytes, tuple[dict[bytes, int], int]] = field(default_factory=dict)
    members_deltas: list[MembersDelta] = field(default_factory=list)
    void: set[DeltaId] = field(default_factory=set)


class Authority:
    """The causal-past membership of one space (see the module docstring)."""

    def __init__(
        self,
        *,
        vectors: dict[bytes, dict[bytes, int]],
        used: dict[bytes, int],
        members_deltas: Iterable[MembersDelta],
        void: Iterable[DeltaId],
        unsupported: Iterable[DeltaId] = (),
        forks: dict[bytes, int] | None = None,
        enforce: bool = True,
    ) -> None:
        forks = forks or {}
        self.enforce = enforce
        self._vectors = vectors
        self._used = used
        self._mdeltas: list[MembersDelta] = sorted(members_deltas, key=lambda m: m.key)
        self._m_frontier: dict[bytes, int] = {}
        self._removals: list[tuple[MembersDelta, bytes]] = []
        for m in self._mdeltas:
            self._note_frontier(m)
            self._removals.extend((m, target) for target in m.removes())
        self.void: set[DeltaId] = set(void)
        self.unsupported: set[DeltaId] = set(unsupported)
        self.forks: dict[bytes, int] = dict(forks)
        self._replays: dict[frozenset[DeltaId], MemberTable] = {}
        self._full: MemberTable | None = None
        self._dirty = Dirty()
        self.closed: dict[bytes, int] = {}  # each creator's last delta in a closed block

    # -- queries ----------------------------------------------------------------------------

    def claimed_vector(self, creator: bytes) -> dict[bytes, int]:
        """The causal past of ``creator``'s last accepted delta, itself included (a copy)."""
        return dict(self._vectors.get(creator, {}))

    def used(self, creator: bytes) -> int:
        return self._used.get(creator, 0)

    def members_deltas(self) -> Sequence[MembersDelta]:
        return self._mdeltas

    def table(self) -> MemberTable:
        """The membership every accepted members delta builds (callers must not modify it)."""
        return self._full_table()

    # -- the decision -----------------------------------------------------------------------

    def check(self, delta: Delta, *, unsupported: bool = False) -> bool:
        """Decide ``delta`` (causally ready, authentic) on its causal past. Returns True if it
        is accepted but void (see the module docstring).

        Raises :class:`NotMemberError` if its creator is not a member there,
        :class:`NotAuthorizedError` if the creator's role does not allow a command,
        :class:`QuotaExceededError` if it takes the creator over the space's quota. An
        ``unsupported`` delta (commands this release cannot validate) is judged on its
        creator's membership and role only.
        """
        if not self.enforce:
            return False
        creator, seq = delta.creator, delta.seq
        base = self._vectors.get(creator) if seq > 1 else None
        deps = dict(delta.deps)
        table = self._table_for(creator, seq, base, deps)
        if self.forked(creator, seq):
            unsupported = True  # void whatever it holds: judge the creator's membership only
        reason = authorize(creator, () if unsupported else delta.commands, table)
        if reason is None and unsupported and table.role_of(creator) == "guest":
            reason = "not allowed for this role"
        if reason == NOT_A_MEMBER:
            raise NotMemberError("the creator is not a member in the delta's causal past")
        if reason is not None:
            raise NotAuthorizedError(f"refused in the delta's causal past: {reason}")
        if self.used(creator) + len(delta.body) > table.quota:
            raise QuotaExceededError(
                f"the creator's deltas would exceed the space's quota of {table.quota} bytes"
            )
        if self.forked(creator, seq):
            return True
        return self._voided_by_removal(creator, seq, base, deps, delta.commands)

    def may_write_void(self, delta: Delta) -> bool:
        """True if ``delta``'s creator is a member above guest in ``delta``'s causal past: how
        a forked creator's copy is judged (:meth:`check` on membership alone), without the
        quota, which counts whatever copies this replica happened to accept."""
        if not self.enforce:
            return True
        creator, seq = delta.creator, delta.seq
        base = self._vectors.get(creator) if seq > 1 else None
        role = self._table_for(creator, seq, base, dict(delta.deps)).role_of(creator)
        return role is not None and role != "guest"

    def accept(self, delta: Delta, *, void: bool, unsupported: bool = False) -> set[DeltaId]:
        """Record an accepted delta (checked by :meth:`check`, or created here). Returns the
        already-accepted deltas it makes void (a removal arriving after its victim's deltas)."""
        creator, seq = delta.creator, delta.seq
        vector = self._vectors.get(creator) if seq > 1 else None
        if vector is None:
            vector = {}
            self._vectors[creator] = vector
        for endpoint, dep_seq in delta.deps:
            if dep_seq > vector.get(endpoint, 0):
                vector[endpoint] = dep_seq
        members = unsupported or any(c.engine == INSTANCE for c in delta.commands)
        if members:
            past = dict(vector)
            past.pop(creator, None)
            if seq > 1:
                past[creator] = seq - 1
        vector[creator] = seq
        used = self._used.get(creator, 0) + len(delta.body)
        self._used[creator] = used
        self._dirty.vectors[creator] = (vector, used)
        newly: set[DeltaId] = set()
        if void:
            self.void.add(delta.id)
            newly.add(delta.id)
        if unsupported:
            self.unsupported.add(delta.id)
        if members:
            record = MembersDelta(
                id=delta.id,
                key=delta.order_key,
                commands=delta.commands,
                vector=past,
                unsupported=unsupported,
            )
            self._insert(record)
            self._dirty.members_deltas.append(record)
            if not void:
                newly |= self._void_victims(record)
        self._dirty.void |= newly
        return newly

    def note_chain(self, delta: Delta) -> None:
        """Rebuild a creator's claimed vector and bytes from its stored deltas, in seq order
        (members deltas and void marks are loaded apart)."""
        creator = delta.creator
        vector = self._vectors.get(creator) if delta.seq > 1 else None
        if vector is None:
            vector = {}
            self._vectors[creator] = vector
        for endpoint, dep_seq in delta.deps:
            if dep_seq > vector.get(endpoint, 0):
                vector[endpoint] = dep_seq
        vector[creator] = delta.seq
        self._used[creator] = self._used.get(creator, 0) + len(delta.body)
        self._dirty.vectors[creator] = (vector, self._used[creator])

    def forked(self, creator: bytes, seq: int) -> bool:
        """True if ``creator`` equivocated at or before ``seq``: the delta is void."""
        fork = self.forks.get(creator)
        return fork is not None and seq >= fork

    def fork(self, creator: bytes, seq: int) -> set[DeltaId]:
        """Record that ``creator`` signed two different deltas at ``seq``: every delta of it
        from ``seq`` on is void, on every replica that holds the evidence (it is relayed).
        Returns the accepted deltas this makes void."""
        fork = self.forks.get(creator)
        if fork is not None and fork <= seq:
            return set()
        self.forks[creator] = seq
        head = self._vectors.get(creator, {}).get(creator, 0)
        out = {DeltaId(creator, s) for s in range(seq, head + 1)} - self.void
        self.void |= out
        self._dirty.void |= out
        return out

    def take_dirty(self) -> Dirty:
        out, self._dirty = self._dirty, Dirty()
        return out

    # -- internals --------------------------------------------------------------------------

    def _insert(self, record: MembersDelta) -> None:
        mdeltas = self._mdeltas
        index = len(mdeltas)
        while index > 0 and mdeltas[index - 1].key > record.key:
            index -= 1
        mdeltas.insert(index, record)
        self._note_frontier(record)
        self._removals.extend((record, target) for target in record.removes())
        self._full = None

    def _note_frontier(self, record: MembersDelta) -> None:
        creator, seq = record.id
        if seq > self._m_frontier.get(creator, 0):
            self._m_frontier[creator] = seq

    def _table_for(
        self, creator: bytes, seq: int, base: dict[bytes, int] | None, deps: dict[bytes, int]
    ) -> MemberTable:
        def covers(endpoint: bytes, at: int) -> bool:
            if endpoint == creator and seq - 1 >= at:
                return True
            return deps.get(endpoint, 0) >= at or (base is not None and base.get(endpoint, 0) >= at)

        if all(covers(c, s) for c, s in self._m_frontier.items()):
            return self._full_table()  # the common case: every members delta is in the past
        included = frozenset(m.id for m in self._mdeltas if covers(m.id.creator, m.id.seq))
        table = self._replays.get(included)
        if table is None:
            table = self._replay([m for m in self._mdeltas if m.id in included])
            if len(self._replays) >= MAX_CACHED_REPLAYS:
                self._replays.clear()
            self._replays[included] = table
        return table

    def _full_table(self) -> MemberTable:
        if self._full is None:
            self._full = self._replay(self._mdeltas)
        return self._full

    @staticmethod
    def _replay(records: Sequence[MembersDelta]) -> MemberTable:
        """The membership ``records`` (a causal past's members deltas, in key order) build."""
        table = MemberTable()
        removals = [(m, target) for m in records for target in m.removes()]
        for record in records:
            if record.unsupported:
                continue
            creator, seq = record.id
            if any(
                target == creator
                and removal.id != record.id
                and removal.vector.get(creator, 0) < seq
                and record.vector.get(removal.id.creator, 0) < removal.id.seq
                and not record.counters(removal.id.creator)
                for removal, target in removals
            ):
                continue  # void in this causal past: concurrent with the creator's removal
            table.apply(creator, seq, record.commands)
        return table

    def _voided_by_removal(
        self,
        creator: bytes,
        seq: int,
        base: dict[bytes, int] | None,
        deps: dict[bytes, int],
        commands: Sequence[Command],
    ) -> bool:
        for record, target in self._removals:
            if target != creator or record.id in self.void:
                continue
            if counters_removal(commands, record.id.creator):
                continue  # a concurrent counter-removal: the total order decides
            if record.vector.get(creator, 0) >= seq:
                continue  # the removal covers this delta
            remover, at = record.id
            covered = (
                deps.get(remover, 0) >= at
                or (base is not None and base.get(remover, 0) >= at)
                or (remover == creator and seq - 1 >= at)
            )
            if not covered:
                return True
        return False

    def unvoided_by_closing(self, reached: Mapping[bytes, int]) -> set[DeltaId]:
        """The void deltas that a checkpoint with open-window ancestors ``reached`` (see
        :func:`~p2pspace.core.checkpoint.ancestors`) makes valid again: its ancestors voided
        only by removals that are not its ancestors (those sort after the block it closes).
        Forked creators' deltas stay void. Nothing is changed here."""
        out: set[DeltaId] = set()
        for did in self.void:
            if did.seq > reached.get(did.creator, 0) or self.forked(*did):
                continue
            kept = any(
                target == did.creator
                and record.id.seq <= reached.get(record.id.creator, 0)
                and record.vector.get(did.creator, 0) < did.seq
                for record, target in self._removals
            )
            if not kept:
                out.add(did)
        return out

    def _void_victims(self, record: MembersDelta) -> set[DeltaId]:
        """Accepted deltas that the removals in ``record`` make void: the victim's deltas
        beyond the removal's vector (accepted before it, so none of them covers it), except
        those in a closed block (the removal sorts after it)."""
        out: set[DeltaId] = set()
        remover = record.id.creator
        counters = {m.id for m in self._mdeltas if m.counters(remover)}
        for target in record.removes():
            head = self._vectors.get(target, {}).get(target, 0)
            start = max(record.vector.get(target, 0), self.closed.get(target, 0)) + 1
            for seq in range(start, head + 1):
                did = DeltaId(target, seq)
                if did != record.id and did not in self.void and did not in counters:
                    out.add(did)
        self.void |= out
        return out
