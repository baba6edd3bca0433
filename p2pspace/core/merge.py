"""Where the total order is executed: undo, execute and redo, one transaction per batch.

Theory of operation. Every replica executes every accepted delta in one total order, by order
key ``(block, rank, creator, seq)``; the executed log is kept sorted by that key in the store.
:meth:`TotalOrder.commit` takes a batch of accepted deltas sorted by key:

* if the batch sorts after the log's last key, its deltas are simply executed and appended;
* otherwise the replica *merges*: it undoes executed deltas after the batch's first key
  (latest first, with the undo records stored when each delta executed), then executes the
  newcomers and the undone deltas together in key order, storing fresh undo records.

**Selective undo** (DESIGN §13). A merge undoes only the executed deltas whose *footprints*
(the state keys their commands read or write, declared by each engine's ``footprint``)
conflict with a newcomer sorted before them, or transitively with a delta undone before them.
Walking the executed suffix in key order with the set of keys touched so far by the newcomers
before that point and by what was undone: a delta that touches none of them is left in place.
Such a delta commutes with everything that moves in front of it (the engine contract checks
that disjoint footprints commute, undo records included), so the result -- state, undo records,
order -- is the one a full undo/redo gives. Every delta also reads its creator's role (the
authorisation below), which only members deltas write; a members delta reads the whole
membership (the last-manager rule), so it conflicts with everything after it, as does a command
of an engine that declares no footprint. Role reads therefore need no keys: whenever a members
delta moves, everything after it is undone. Evidence switches and re-execution after a
removal (``redo_from``) undo the whole suffix, and so does ``selective=False`` (the strategy the
tests compare against).

Each log row keeps its delta's footprint as the engines declared it when the delta was
inserted (:func:`pack_keys`; footprints are pure functions of the commands), so the walk reads
those small columns and decodes only the deltas it undoes. Rows without one (stores made before
footprints were kept) are decoded as before. Void and unsupported deltas are no-ops that read
nothing whatever their commands: that part is decided at merge time, from the authority.

One commit is one store transaction covering the log, the undo records, the member grants, the
equivocation evidence, the own dependency vector (for local deltas) and the engine state, so a
crash at any instant leaves a state equal to replaying the committed log. On any failure the
transaction rolls back and :class:`~p2pspace.errors.StorageError` is raised: the caller must
then rebuild everything it keeps in memory from the unchanged store.

Engines see one command at a time through :class:`~p2pspace.core.engine.Engine`; undo records
never leave this endpoint, so they are stored in the local (non-canonical) encoding.

**Authorisation at execution** (DESIGN §8, the second decision): before a delta's commands run,
its creator's role is read from the members state *at that point of the order* and
:func:`~p2pspace.core.membership.authorize` decides. A delta refused there -- its creator was
removed or demoted by a delta sorted before it -- is a *recorded no-op*: nothing runs and its
undo record says why (``{"noop": reason}``), so :meth:`TotalOrder.refusal` can tell the user.
Void deltas (concurrent with their creator's removal, see :mod:`p2pspace.core.authority`) and
deltas this release cannot validate are no-ops too. Undo/redo re-decides every re-executed
delta, so replicas converge on the same no-ops like on any other result.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from p2pspace.core import audit, codec, snapshot
from p2pspace.core.authority import Authority, Dirty
from p2pspace.core.causal import Evidence, Head
from p2pspace.core.checkpoint import (
    BAD_DIGEST,
    NOT_CHECKPOINTER,
    NOT_YET,
    OUT_OF_SEQUENCE,
    Horizon,
    ancestors,
    block_value,
    is_ancestor,
)
from p2pspace.core.delta import Delta, DeltaId, OrderKey, decode_delta
from p2pspace.core.engine import DeltaContext, Engine
from p2pspace.core.kv_state import KVState
from p2pspace.core.membership import INSTANCE as MEMBERS_INSTANCE
from p2pspace.core.membership import (
    NOT_A_MEMBER,
    NOT_ALLOWED,
    MembersView,
    authorize,
    is_checkpoint,
    member_grant,
)
from p2pspace.core.store import Store
from p2pspace.errors import StorageError

VOID = "made concurrently with its creator's removal"
UNSUPPORTED = "made by a newer release: its commands are unknown here"
_WRITERS = frozenset({"participant", "manager"})
_UNKNOWN = "?"
_UNBOUNDED = b"\xff\xff"  # a packed footprint that cannot be bounded
_MAX_KEY = 0xFFFE  # longer keys are not packed: the delta counts as touching everything


def pack_keys(keys: frozenset[bytes] | None) -> bytes:
    """A footprint as a log row keeps it: each key as a 2-byte length and its bytes, in
    sorted order; :data:`_UNBOUNDED` for None (or a key too long to pack)."""
    if keys is None:
        return _UNBOUNDED
    out = bytearray()
    for key in sorted(keys):
        if len(key) > _MAX_KEY:
            return _UNBOUNDED
        out += len(key).to_bytes(2, "big")
        out += key
    return bytes(out)


def unpack_keys(packed: bytes) -> frozenset[bytes] | None:
    """The inverse of :func:`pack_keys`; a malformed value is a :class:`StorageError`."""
    if packed == _UNBOUNDED:
        return None
    keys = []
    index, end = 0, len(packed)
    while index < end:
        size = int.from_bytes(packed[index : index + 2], "big")
        index += 2
        keys.append(packed[index : index + size])
        index += size
    if index != end:
        raise StorageError("corrupt footprint in the log")
    return frozenset(keys)


def _is_noop(undo: bytes | None) -> bool:
    if undo is None:
        return False
    record = codec.decode_stored(undo)
    return type(record) is dict and "noop" in record


@dataclass(slots=True, kw_only=True)
class Entry:
    """One delta as the merge places it: ``new`` deltas are inserted, others were undone."""

    delta: Delta
    wire: bytes
    key: OrderKey
    new: bool = True

    @classmethod
    def of(cls, delta: Delta, wire: bytes) -> Entry:
        return cls(delta=delta, wire=wire, key=delta.order_key)


@dataclass(slots=True, kw_only=True)
class Frontier:
    """What has executed: each creator's last delta, the vector, the top rank, the last key."""

    heads: dict[bytes, Head]
    vector: dict[bytes, int]
    max_rank: int
    last_key: OrderKey | None

    @classmethod
    def load(cls, store: Store, space_id: bytes) -> Frontier:
        heads = {c: Head(*v) for c, v in store.heads(space_id).items()}
        return cls(
            heads=heads,
            vector={c: h.seq for c, h in heads.items()},
            max_rank=max((h.rank for h in heads.values()), default=0),
            last_key=store.last_key(space_id),
        )

    def appends(self, key: OrderKey) -> bool:
        """True if a delta with order key ``key`` would sort after the whole log."""
        return self.last_key is None or key > self.last_key

    def advance(self, executed: Sequence[Entry]) -> None:
        """Record newly executed deltas (committed, in key order)."""
        for entry in executed:
            d = entry.delta
            self.vector[d.creator] = d.seq
            self.heads[d.creator] = Head(d.seq, d.rank, d.hash)
            if d.rank > self.max_rank:
                self.max_rank = d.rank
        if executed and self.appends(executed[-1].key):
            self.last_key = executed[-1].key


class TotalOrder:
    """Executes one space's accepted deltas at their order positions."""

    def __init__(
        self,
        *,
        store: Store,
        space_id: bytes,
        engines: Mapping[str, Engine],
        states: Mapping[str, KVState],
        authority: Authority,
        selective: bool = True,
    ) -> None:
        self.store = store
        self.selective = selective
        self.space_id = space_id
        self.engines = engines
        self.states = states
        self.authority = authority
        self._members = MembersView(states[MEMBERS_INSTANCE])
        self._roles: dict[bytes, str | None] = {}  # creator -> role, until a members delta
        self.horizon = Horizon()
        self.closures = 0  # blocks closed by the last commit
        self.closure_undos = 0  # deltas the last commit's closures undid and redid
        self._closing: DeltaId | None = None  # the checkpoint being executed where it closes
        # Checkpoints found not to close, and why (kept, so a later merge that re-executes
        # one records the same reason; one entry per checkpoint a manager made).
        self._verdicts: dict[DeltaId, str] = {}

    def commit(
        self,
        new: Sequence[Entry],
        *,
        frontier: Frontier,
        evidence: Sequence[Evidence] = (),
        own_deps: dict[bytes, int] | None = None,
        redo_from: OrderKey | None = None,
        dirty: Dirty | None = None,
        switches: Sequence[Entry] = (),
    ) -> list[Entry]:
        """Execute ``new`` (sorted by key) in one transaction and advance ``frontier``.

        ``own_deps`` is given for local deltas: it is stored with them, and the commit is
        synced to disk. ``redo_from``: re-execute every executed delta after this key too (a
        removal made some of them void). ``dirty``: the authority rows to save.
        ``switches``: executed deltas whose row takes another copy (equivocation; each is
        void, and ``redo_from`` covers both copies' keys). Returns the
        already-executed entries that were undone and redone, in key order. Raises
        :class:`StorageError` if the store or an engine fails; nothing is committed then, and
        the engine states' caches must be reset by the caller.
        """
        store = self.store
        space = self.space_id
        undone: list[Entry] = []
        first = new[0].key if new else None
        if redo_from is not None and (first is None or redo_from < first):
            first = redo_from
        self._roles.clear()
        self.closures = self.closure_undos = 0
        horizon = self.horizon
        try:
            with store.transaction(sync=own_deps is not None):
                if first is not None:
                    if not frontier.appends(first):
                        if self.selective and redo_from is None and not switches:
                            undone = self._undo_conflicting(first, new)
                        else:
                            undone = self._undo_suffix(first)
                    if switches:
                        undone = self._switch(undone, switches)
                    self._execute_in_order(new, undone)
                    for entry in new:
                        if is_checkpoint(entry.delta.commands) and self._open_noop(entry.delta):
                            self._close(entry.delta)
                if dirty is not None:
                    self._save(dirty)
                for state in self.states.values():
                    state.flush()
                for ev in evidence:
                    store.add_evidence(
                        space, ev.delta_id.creator, ev.delta_id.seq, ev.kept_hash, ev.other_wire
                    )
                if own_deps is not None:
                    store.set_own_deps(space, codec.encode_trusted(own_deps))
        except StorageError:
            raise
        except Exception as exc:
            # An undecodable stored delta or an engine failing on a validated command: the
            # transaction rolled back.
            self._roles.clear()
            self.horizon = horizon
            raise StorageError(f"execution failed and was rolled back: {exc!r}") from exc
        except BaseException:
            self.horizon = horizon
            raise
        finally:
            self._closing = None
        frontier.advance(new)
        if self.closures:
            frontier.last_key = store.last_key(self.space_id)
        return undone

    # -- closing blocks (p2pspace.core.checkpoint) ------------------------------------------

    def _open_noop(self, delta: Delta) -> bool:
        """True if checkpoint ``delta`` executed in the window as not closed yet, or as void
        (a removal of its creator that is not its ancestor voids nothing at its closed place:
        :meth:`_close` decides)."""
        undo = self.store.undo_of(self.space_id, delta.creator, delta.seq)
        return undo is not None and codec.decode_stored(undo) in ({"noop": NOT_YET}, {"noop": VOID})

    def _close(self, checkpoint: Delta) -> None:
        """Close the block of ``checkpoint`` (executed in the open window as not closed yet),
        or record why it does not close; inside the commit's transaction."""
        store, space = self.store, self.space_id
        horizon = self.horizon
        closed = dict(horizon.closed or {})
        reached = ancestors(checkpoint, closed, lambda c, a, b: store.wires_range(space, c, a, b))
        # The checkpoint itself counts as closed with its ancestors (a concurrent removal of
        # its creator sorts after the block it closes).
        unvoided = self.authority.unvoided_by_closing(
            {**reached, checkpoint.creator: checkpoint.seq}
        )
        rows = store.open_window(space)
        start = len(rows)
        for index, (creator, seq, *_rest) in enumerate(rows):
            if not is_ancestor(reached, creator, seq) or DeltaId(creator, seq) in unvoided:
                start = index
                break
        window = [(decode_delta(wire), undo) for _c, _s, _r, _h, wire, undo in rows[start:]]
        for delta, undo in reversed(window):
            self.undo(delta, undo)
        moved = [d for d, _u in window if is_ancestor(reached, d.creator, d.seq)]
        rest = [d for d, _u in window if not is_ancestor(reached, d.creator, d.seq)]
        void = self.authority.void
        void -= unvoided
        moved_undos = [self.execute(d) for d in moved]
        reason = self._closing_refusal(checkpoint, horizon.number + 1)
        self.closure_undos += len(window)
        if reason is not None:
            # It closes nothing: back to the window's order, the checkpoint a recorded no-op.
            for delta, undo in zip(reversed(moved), reversed(moved_undos), strict=True):
                self.undo(delta, undo)
            void |= unvoided
            self._verdicts[checkpoint.id] = reason
            self._redo([d for d, _u in window])
            return
        # The state its digest attests: what a snapshot of this block carries.
        store.capture_base(space)
        self._closing = checkpoint.id
        store.set_undos([(self.execute(checkpoint), space, checkpoint.creator, checkpoint.seq)])
        self._closing = None
        number = horizon.number + 1
        # Undo records are dropped; a recorded no-op keeps its reason (refusal() still says
        # why it did nothing, a bad checkpoint stays shown).
        blobs = [(c, s, u) for c, s, _r, _h, _w, u in rows[:start]]
        blobs += [(d.creator, d.seq, u) for d, u in zip(moved, moved_undos, strict=True)]
        ids = [(c, s) for c, s, u in blobs if not _is_noop(u)]
        ids.append((checkpoint.creator, checkpoint.seq))
        store.close_block(space, block_value(number), ids)
        store.close_block(
            space, block_value(number), [(c, s) for c, s, u in blobs if _is_noop(u)], keep=True
        )
        if unvoided:
            store.remove_void([(space, d.creator, d.seq) for d in unvoided])
        before = dict(closed)
        for creator, seq in reached.items():
            closed[creator] = max(closed.get(creator, 0), seq)
        closed[checkpoint.creator] = checkpoint.seq
        snapshot.advance_heads(store, space, before, closed)
        self.horizon = Horizon(
            number=number,
            checkpoint=checkpoint.id,
            digest=checkpoint.commands[0].args["digest"],
            time=checkpoint.time,
            closed=closed,
        )
        self.authority.closed = closed
        self.closures += 1
        self._redo([d for d in rest if d.id != checkpoint.id])

    def _redo(self, deltas: Sequence[Delta]) -> None:
        """Execute already-stored ``deltas`` in this order, storing fresh undo records."""
        space = self.space_id
        self.store.set_undos([(self.execute(d), space, d.creator, d.seq) for d in deltas])

    def _closing_refusal(self, checkpoint: Delta, number: int) -> str | None:
        """Why ``checkpoint`` closes no block on the state where it would sit (its ancestors
        executed after the closed blocks), or None: see :mod:`p2pspace.core.checkpoint`."""
        members = self._members
        self._roles.clear()
        if self.authority.enforce:
            reason = authorize(checkpoint.creator, checkpoint.commands, members)
            if reason is not None:
                return reason
        if members.checkpointer() != checkpoint.creator:
            return NOT_CHECKPOINTER
        args = checkpoint.commands[0].args
        if args["number"] != number:
            return OUT_OF_SEQUENCE
        if args["digest"] != self.state_digest():
            return BAD_DIGEST
        return None

    def state_digest(self) -> bytes:
        """The state digest of the space as executed so far (inside the transaction)."""
        for state in self.states.values():
            state.flush()
        return bytes.fromhex(audit.state_digest(self.store, self.space_id))

    def _switch(self, undone: list[Entry], switches: Sequence[Entry]) -> list[Entry]:
        """Replace undone entries (and their rows) by the copies kept; back in key order.

        A switched delta that is not undone sits in a closed block (the walk covers both
        copies' keys in the open window). Its row takes the kept copy too and sorts by that
        copy's rank inside its block, so every replica's block ends the same whichever copy
        it met first: both copies are void, so nothing executes again."""
        by_id = {(e.delta.creator, e.delta.seq): e for e in switches}
        out = []
        for entry in undone:
            kept = by_id.pop((entry.delta.creator, entry.delta.seq), None)
            if kept is None:
                out.append(entry)
                continue
            self._replace_row(kept)
            out.append(Entry(delta=kept.delta, wire=kept.wire, key=kept.key, new=False))
        for kept in by_id.values():
            d = kept.delta
            if self.store.delta_info(self.space_id, d.creator, d.seq) is not None:
                self._replace_row(kept)
        out.sort(key=lambda e: e.key)
        return out

    def _replace_row(self, kept: Entry) -> None:
        d = kept.delta
        self.store.replace_delta(
            self.space_id,
            d.creator,
            d.seq,
            d.rank,
            d.hash,
            kept.wire,
            pack_keys(self.declared_footprint(d)),
        )

    def _save(self, dirty: Dirty) -> None:
        store, space = self.store, self.space_id
        if dirty.vectors:
            store.set_claimed(
                [
                    (space, creator, codec.encode_local(vector), used)
                    for creator, (vector, used) in dirty.vectors.items()
                ]
            )
        if dirty.members_deltas:
            store.add_members_deltas(
                [
                    (
                        space,
                        m.id.creator,
                        m.id.seq,
                        codec.encode_local(m.vector),
                        int(m.unsupported),
                    )
                    for m in dirty.members_deltas
                ]
            )
        if dirty.void:
            store.add_void([(space, d.creator, d.seq) for d in dirty.void])

    def refusal(self, delta_id: DeltaId) -> str | None:
        """Why an executed delta was a no-op (see the module docstring), or None."""
        undo = self.store.undo_of(self.space_id, delta_id.creator, delta_id.seq)
        if undo is None:
            return None
        record = codec.decode_stored(undo)
        return record.get("noop") if type(record) is dict else None

    def _undo_suffix(self, first: OrderKey) -> list[Entry]:
        """Undo every executed delta after ``first``, latest first; return them in key order."""
        undone: list[Entry] = []
        for _c, _s, _r, _h, wire, undo in self.store.suffix_desc(self.space_id, first):
            delta = decode_delta(wire)
            self.undo(delta, undo)
            undone.append(Entry(delta=delta, wire=wire, key=delta.order_key, new=False))
        undone.reverse()
        return undone

    def _undo_conflicting(self, first: OrderKey, new: Sequence[Entry]) -> list[Entry]:
        """Undo the executed deltas after ``first`` that conflict with ``new`` (sorted by key)
        or with one undone before them (see the module docstring), latest first; return them
        in key order. Only the deltas undone (and rows without a recorded footprint) are
        read whole and decoded."""
        store, space = self.store, self.space_id
        authority = self.authority
        void = authority.void if authority.enforce else set()
        unsupported = authority.unsupported if authority.enforce else set()
        footprint = self.footprint
        touched: set[bytes] = set()
        everything = False
        index, count = 0, len(new)
        chosen: list[tuple[Entry, bytes | None]] = []
        unpacked: dict[bytes, frozenset[bytes] | None] = {}  # many deltas edit the same keys
        for row in store.suffix_keys(space, first):
            key, packed = row[:4], row[4]
            if not everything:
                while index < count and new[index].key < key:
                    moved = footprint(new[index].delta)
                    if moved is None:
                        everything = True
                        break
                    touched |= moved
                    index += 1
            creator, seq = row[2], row[3]
            delta = wire = undo = None
            if not everything:
                keys: frozenset[bytes] | None
                if packed is None:  # not recorded: decode the delta to learn its footprint
                    wire, undo = store.wire_and_undo(space, creator, seq)
                    delta = decode_delta(wire)
                    keys = footprint(delta)
                elif (void or unsupported) and (
                    DeltaId(creator, seq) in void or DeltaId(creator, seq) in unsupported
                ):
                    keys = frozenset()  # a recorded no-op that reads nothing
                else:
                    keys = unpacked.get(packed)
                    if keys is None:
                        keys = unpacked[packed] = unpack_keys(packed)
                if keys is None:
                    everything = True
                elif touched.isdisjoint(keys):
                    continue  # commutes with everything that moves in front of it
                else:
                    touched |= keys
            if delta is None:
                wire, undo = store.wire_and_undo(space, creator, seq)
                delta = decode_delta(wire)
            assert wire is not None
            chosen.append((Entry(delta=delta, wire=wire, key=delta.order_key, new=False), undo))
        for entry, undo in reversed(chosen):
            self.undo(entry.delta, undo)
        return [entry for entry, _undo in chosen]

    def footprint(self, delta: Delta) -> frozenset[bytes] | None:
        """The state keys executing ``delta`` here may read or write, each prefixed by its
        engine instance; None if they cannot be bounded (a members delta, an engine without
        footprints)."""
        authority = self.authority
        if authority.enforce and (authority.void or authority.unsupported):
            did = DeltaId(delta.creator, delta.seq)
            if did in authority.void or did in authority.unsupported:
                return frozenset()  # a recorded no-op that reads nothing
        return self.declared_footprint(delta)

    def declared_footprint(self, delta: Delta) -> frozenset[bytes] | None:
        """:meth:`footprint` as the engines declare it, whatever the authority decides (what
        a log row keeps)."""
        keys: set[bytes] = set()
        engines = self.engines
        for command in delta.commands:
            if command.engine == MEMBERS_INSTANCE:
                return None
            engine = engines.get(command.engine)
            if engine is None:
                return None
            try:
                declared = engine.footprint(command)
            except Exception:
                return None  # an engine that cannot say: assume it touches everything
            if declared is None:
                return None
            prefix = command.engine.encode() + b"\0"
            keys.update(prefix + k for k in declared)
        return frozenset(keys)

    def _execute_in_order(self, new: Sequence[Entry], undone: list[Entry]) -> None:
        store = self.store
        space = self.space_id
        inserts = []
        redo_undos = []
        ordered = heapq.merge(undone, new, key=lambda e: e.key) if undone else new
        execute = self.execute
        for item in ordered:
            d = item.delta
            undo_blob = execute(d)
            if not item.new:
                redo_undos.append((undo_blob, space, d.creator, d.seq))
                continue
            inserts.append(
                (
                    space,
                    d.creator,
                    d.seq,
                    d.rank,
                    d.hash,
                    int(d.signature is not None),
                    item.wire,
                    undo_blob,
                    pack_keys(self.declared_footprint(d)),
                )
            )
            unsupported = self.authority.unsupported
            for command in d.commands:
                if command.engine != MEMBERS_INSTANCE or (unsupported and d.id in unsupported):
                    continue
                grant = member_grant(command)
                if grant is not None:
                    store.add_grant(space, grant[0], grant[1], d.creator, d.seq)
        store.insert_deltas(inserts)
        if redo_undos:
            store.set_undos(redo_undos)

    def _refusal(self, delta: Delta) -> str | None:
        """Why ``delta`` must be a no-op at this point of the order, or None (hot path)."""
        authority = self.authority
        if not authority.enforce:
            return self._checkpoint_verdict(delta)
        if authority.void or authority.unsupported:
            did = DeltaId(delta.creator, delta.seq)
            if did in authority.unsupported:
                return UNSUPPORTED
            if did in authority.void:
                return VOID
        for command in delta.commands:
            if command.engine == MEMBERS_INSTANCE:
                verdict = self._checkpoint_verdict(delta)
                if verdict is not None:
                    return verdict
                self._roles.clear()  # the members state may change under this delta
                return authorize(delta.creator, delta.commands, self._members)
        creator = delta.creator
        role = self._roles.get(creator, _UNKNOWN)
        if role == _UNKNOWN:
            role = self._members.role_of(creator)
            self._roles[creator] = role
        if role in _WRITERS:
            return None
        return NOT_A_MEMBER if role is None else NOT_ALLOWED

    def _checkpoint_verdict(self, delta: Delta) -> str | None:
        """For a checkpoint executed anywhere but where it closes: why it is a no-op there."""
        if not is_checkpoint(delta.commands):
            return None
        did = DeltaId(delta.creator, delta.seq)
        if did == self._closing:
            return None
        verdict = self._verdicts.get(did)
        if verdict is None:
            # Re-executed by a merge: it keeps the reason found where it would have closed
            # (still in its row until this merge stores the new undo records).
            verdict = self.refusal(did) or NOT_YET
            self._verdicts[did] = verdict
        return verdict

    def execute(self, delta: Delta) -> bytes:
        """Run ``delta``'s commands; return the encoded undo records (inside a transaction)."""
        reason = self._refusal(delta)
        if reason is not None:
            return codec.encode_local({"noop": reason})
        context = DeltaContext(self.space_id, delta.creator, delta.seq, delta.time)
        engines, states = self.engines, self.states
        records = [engines[c.engine].execute(states[c.engine], c, context) for c in delta.commands]
        # Undo records stay on this endpoint (never hashed or compared): no canonical form needed.
        return codec.encode_local(records)

    def undo(self, delta: Delta, undo_blob: bytes | None) -> None:
        """Reverse ``delta`` with its stored undo records (inside a transaction)."""
        if undo_blob is None:
            raise StorageError(f"no undo record for {delta.id}")
        records = codec.decode_stored(undo_blob)
        if type(records) is dict and "noop" in records:
            return  # a recorded no-op changed nothing
        if any(c.engine == MEMBERS_INSTANCE for c in delta.commands):
            self._roles.clear()
        if type(records) is not list or len(records) != len(delta.commands):
            raise StorageError(f"undo record of {delta.id} does not match its commands")
        for command, record in zip(reversed(delta.commands), reversed(records), strict=True):
            self.engines[command.engine].undo(self.states[command.engine], command, record)
