"""A replica of one space on one endpoint: total order, undo/redo, and local creation.

Theory of operation. Every replica executes every accepted delta in one total order, by order
key ``(block, rank, creator, seq)``. The executed log is kept sorted by that key in the store.
When accepted deltas belong at the end of the log they are simply executed. When one belongs
before deltas already executed, the replica *merges*: it undoes the executed suffix after the
earliest newcomer (latest first, with the undo records stored at execution), then executes the
newcomers and the undone deltas together in key order, storing fresh undo records. One merge is
one store transaction covering the log, undo records, vectors (derived from the log) and engine
state, so a crash at any instant leaves a state equal to replaying the committed log.

While a catch-up from a peer is in progress the caller may ``defer`` execution: accepted deltas
that do not simply append are *staged* in memory and merged once, when the catch-up ends (or the
stage reaches its bound) -- never one undo/redo pass per arriving batch.

Local deltas always append: their rank is 1 + the highest executed rank, and their dependency
vector is the whole executed vector. ``create_many`` is group commit: one transaction and one
signature per chain of up to :data:`~p2pspace.core.causal.MAX_CHAIN` deltas; the earlier deltas of
the chain are authenticated by the ``prev`` hashes leading to the signed one.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from p2pspace.core import codec
from p2pspace.core.causal import MAX_CHAIN, CausalBuffer, Head, Limits, Membership, Rejection
from p2pspace.core.delta import (
    Command,
    Delta,
    DeltaId,
    OrderKey,
    decode_delta,
    diff_vector,
    make_body,
    space_id_of,
)
from p2pspace.core.engine import DeltaContext, Engine
from p2pspace.core.identity import Identity, verify_signature
from p2pspace.core.registry import ENGINE_KINDS
from p2pspace.core.store import KVState, Store
from p2pspace.engines import members as members_engine
from p2pspace.engines.members import MembersView
from p2pspace.engines.rdb import RdbView
from p2pspace.errors import (
    CommandError,
    ForgedDeltaError,
    LocalProtocolError,
    MalformedError,
    RemoteProtocolError,
    StorageError,
    WrongSpaceError,
)

_log = logging.getLogger("p2pspace.core.replica")

DEFAULT_ENGINES = {"db": "rdb"}
MAX_STAGED = 200_000
MAX_STAGED_BYTES = 64 * 1024 * 1024
APPEND_BATCH = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveResult:
    """What one call to :meth:`Replica.receive` or :meth:`Replica.release` did."""

    executed: tuple[Delta, ...] = ()
    seen: tuple[DeltaId, ...] = ()
    duplicates: int = 0
    rejected: tuple[Rejection, ...] = ()
    late_rejected: tuple[Rejection, ...] = ()  # refused now, but offered by an earlier call
    staged: int = 0
    undone: int = 0
    redone: int = 0


@dataclass(slots=True, kw_only=True)
class ReplicaStats:
    executed: int = 0
    undone: int = 0
    redone: int = 0
    merges: int = 0
    rejected: int = 0
    duplicates: int = 0


ExecutedListener = Callable[["Replica", Sequence[tuple[Delta, bytes]]], None]


@dataclass(slots=True, kw_only=True)
class _Executed:
    delta: Delta
    wire: bytes
    key: OrderKey
    new: bool = True


def validate_genesis(genesis: Delta) -> tuple[bytes, dict[str, str]]:
    """Check a genesis delta; return ``(space id, engine instances)``.

    Raises :class:`InvalidDeltaError` subclasses: a genesis must be rank 1, seq 1, hold exactly
    one valid ``members.genesis`` command naming its creator, and be signed by that creator.
    """
    if not genesis.is_genesis:
        raise WrongSpaceError("not a genesis delta")
    if len(genesis.commands) != 1:
        raise CommandError("a genesis delta holds exactly one members.genesis command")
    command = genesis.commands[0]
    if command.engine != members_engine.INSTANCE or command.name != "genesis":
        raise CommandError("a genesis delta holds exactly one members.genesis command")
    members_engine.MembersEngine().validate(command)
    member = command.args["member"]
    if member["id"] != genesis.creator:
        raise CommandError("the genesis member must be its creator")
    engines = dict(command.args["engines"])
    for kind in engines.values():
        if kind not in ENGINE_KINDS or kind == members_engine.MembersEngine.kind:
            raise CommandError(f"unknown engine kind {kind!r}")
    if genesis.signature is None:
        raise ForgedDeltaError("a genesis delta must be signed")
    try:
        verify_signature(member["key"], genesis.signature, genesis.body)
    except RemoteProtocolError:
        raise ForgedDeltaError("genesis signature does not verify") from None
    return space_id_of(genesis), engines


class Replica:
    """One space's replica. Driven by one owner; every method is synchronous."""

    def __init__(
        self,
        *,
        store: Store,
        identity: Identity,
        genesis: Delta,
        limits: Limits = Limits(),
        max_staged: int = MAX_STAGED,
    ) -> None:
        space_id, instances = validate_genesis(genesis)
        self.store = store
        self.identity = identity
        self.space_id = space_id
        self.genesis = genesis
        self.name: str = genesis.commands[0].args["name"]
        self.engines: dict[str, Engine] = {
            members_engine.INSTANCE: members_engine.MembersEngine(),
            **{inst: ENGINE_KINDS[kind]() for inst, kind in instances.items()},
        }
        self._states = {inst: KVState(store, space_id, inst) for inst in self.engines}
        self.max_staged = max_staged
        self.append_batch = APPEND_BATCH
        self.stats = ReplicaStats()
        self.listeners: list[ExecutedListener] = []
        self.undo_listener: Callable[[Sequence[DeltaId]], None] | None = None
        self._limits = limits
        self._staged: dict[DeltaId, tuple[Delta, bytes]] = {}
        self._staged_min: OrderKey | None = None
        self._staged_bytes = 0
        self._pending_evidence: list[tuple[DeltaId, bytes, bytes]] = []
        self._load()
        self.buffer: CausalBuffer
        self._make_buffer()

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def create_space(
        cls,
        store: Store,
        identity: Identity,
        *,
        name: str,
        time: int,
        engines: dict[str, str] | None = None,
        member_name: str = "",
        nonce: bytes | None = None,
        limits: Limits = Limits(),
    ) -> Replica:
        """Make a new space whose genesis names this endpoint as manager."""
        command = members_engine.genesis_command(
            name=name,
            nonce=nonce if nonce is not None else os.urandom(16),
            engines=dict(DEFAULT_ENGINES if engines is None else engines),
            member_id=identity.endpoint_id,
            key=identity.public_key,
            member_name=member_name,
        )
        try:
            members_engine.MembersEngine().validate(command)
        except CommandError as exc:
            raise LocalProtocolError(str(exc)) from None
        unsigned = make_body(
            space=b"",
            creator=identity.endpoint_id,
            seq=1,
            rank=1,
            deps={},
            prev=b"",
            time=time,
            commands=[command],
        )
        genesis = unsigned.with_signature(identity.sign(unsigned.body))
        return cls.join(store, identity, genesis.wire(), limits=limits)

    @classmethod
    def join(
        cls, store: Store, identity: Identity, genesis_wire: bytes, *, limits: Limits = Limits()
    ) -> Replica:
        """Start a replica of the space that ``genesis_wire`` founds (verifying it first)."""
        genesis = decode_delta(genesis_wire)
        space_id, _ = validate_genesis(genesis)
        if store.has_space(space_id):
            return cls(store=store, identity=identity, genesis=genesis, limits=limits)
        with store.transaction():
            store.add_space(space_id, genesis_wire)
            context = DeltaContext(
                space=space_id, creator=genesis.creator, seq=1, time=genesis.time
            )
            state = KVState(store, space_id, members_engine.INSTANCE)
            undo = members_engine.MembersEngine().execute(state, genesis.commands[0], context)
            state.flush()
            store.insert_delta(
                space_id,
                genesis.creator,
                1,
                1,
                genesis.hash,
                True,
                genesis_wire,
                codec.encode_trusted([undo]),
            )
            member = genesis.commands[0].args["member"]
            store.add_grant(space_id, member["id"], member["key"], genesis.creator, 1)
        return cls(store=store, identity=identity, genesis=genesis, limits=limits)

    @classmethod
    def open(
        cls, store: Store, identity: Identity, space_id: bytes, *, limits: Limits = Limits()
    ) -> Replica:
        for sid, genesis_wire in store.spaces():
            if sid == space_id:
                return cls(
                    store=store,
                    identity=identity,
                    genesis=decode_delta(genesis_wire),
                    limits=limits,
                )
        raise LocalProtocolError(f"no space {space_id.hex()} in this store")

    def _load(self) -> None:
        stored = self.store.heads(self.space_id)
        self._heads: dict[bytes, Head] = {c: Head(*v) for c, v in stored.items()}
        self.vector: dict[bytes, int] = {c: h.seq for c, h in self._heads.items()}
        self._max_rank = max((h.rank for h in self._heads.values()), default=0)
        last = self.store.last_key(self.space_id)
        self._last_key: OrderKey | None = last
        own = self.store.own_deps(self.space_id)
        self._own_deps: dict[bytes, int] = dict(codec.decode(own)) if own is not None else {}
        self._membership = Membership()
        for member, key, creator, seq in self.store.grants(self.space_id):
            self._membership.add(member, key, DeltaId(creator, seq))

    def _make_buffer(self) -> None:
        self.buffer = CausalBuffer(
            space=self.space_id,
            heads=dict(self._heads),
            membership=self._membership,
            lookup=self._lookup,
            limits=self._limits,
        )

    def _lookup(self, creator: bytes, seq: int) -> tuple[int, bytes] | None:
        staged = self._staged.get(DeltaId(creator, seq))
        if staged is not None:
            return staged[0].rank, staged[0].hash
        if creator == self.genesis.creator and seq == 1:
            return 1, self.genesis.hash
        return self.store.delta_info(self.space_id, creator, seq)

    def _reload(self) -> None:
        """Rebuild memory from the store after a failed write (pending deltas are dropped)."""
        for state in self._states.values():
            state.reset()
        self._staged.clear()
        self._staged_min = None
        self._staged_bytes = 0
        self._load()
        self._make_buffer()

    # -- views ------------------------------------------------------------------------------

    @property
    def endpoint_id(self) -> bytes:
        return self.identity.endpoint_id

    def state(self, instance: str) -> KVState:
        if instance not in self._states:
            raise LocalProtocolError(f"space has no engine instance {instance!r}")
        return self._states[instance]

    def members(self) -> MembersView:
        return MembersView(self._states[members_engine.INSTANCE])

    def rdb(self, instance: str = "db") -> RdbView:
        if not isinstance(self.engines.get(instance), ENGINE_KINDS["rdb"]):
            raise LocalProtocolError(f"{instance!r} is not an rdb instance of this space")
        return RdbView(self._states[instance])

    def is_member(self, endpoint_id: bytes) -> bool:
        return endpoint_id in self._membership.keys

    def can_create(self) -> bool:
        """True once a delta granting this endpoint membership has *executed* here: a new
        delta depends on the executed vector, so the grant must be in it (accepted but staged
        is not enough)."""
        vector = self.vector
        return any(
            vector.get(creator, 0) >= seq
            for creator, seq in self._membership.grants.get(self.identity.endpoint_id, ())
        )

    def member_ids(self) -> list[bytes]:
        return sorted(self._membership.keys)

    @property
    def staged_count(self) -> int:
        return len(self._staged)

    @property
    def pending_count(self) -> int:
        return self.buffer.pending_count

    def accepted_vector(self) -> dict[bytes, int]:
        return self.buffer.vector()

    def missing(self) -> list[tuple[bytes, int, int]]:
        return self.buffer.missing()

    def executed_count(self) -> int:
        return sum(self.vector.values())

    # -- validation -------------------------------------------------------------------------

    def _validate_commands(self, delta: Delta) -> None:
        for command in delta.commands:
            engine = self.engines.get(command.engine)
            if engine is None:
                raise CommandError(f"space has no engine instance {command.engine!r}")
            if command.engine == members_engine.INSTANCE and command.name == "genesis":
                raise CommandError("members.genesis is only valid in a genesis delta")
            engine.validate(command)

    # -- local creation ---------------------------------------------------------------------

    def create(self, commands: Sequence[Command], *, time: int) -> Delta:
        """Create, execute and durably commit one signed delta of ``commands``."""
        return self.create_many([commands], time=time)[0]

    def create_many(self, batches: Sequence[Sequence[Command]], *, time: int) -> list[Delta]:
        """Group commit: one delta per entry of ``batches``, one transaction, chained signatures.

        Raises :class:`LocalProtocolError` if a command is not valid for its engine; nothing is
        changed then. :class:`StorageError` if the store fails (nothing is committed).
        """
        if not batches:
            return []
        me = self.identity.endpoint_id
        if not self.can_create():
            raise LocalProtocolError(
                "this endpoint is not (yet) a member of the space: the delta granting membership "
                "has not reached it"
            )
        head = self._heads.get(me)
        seq = head.seq if head is not None else 0
        prev = head.hash if head is not None else b""
        rank = self._max_rank
        vector = dict(self.vector)
        vector.pop(me, None)
        own_deps = self._own_deps
        made: list[_Executed] = []
        try:
            for i, commands in enumerate(batches):
                seq += 1
                rank += 1
                delta = make_body(
                    space=self.space_id,
                    creator=me,
                    seq=seq,
                    rank=rank,
                    deps=diff_vector(own_deps, vector) if i == 0 else {},
                    prev=prev,
                    time=time,
                    commands=list(commands),
                )
                self._validate_commands(delta)
                if i == len(batches) - 1 or i % MAX_CHAIN == MAX_CHAIN - 1:
                    delta = delta.with_signature(self.identity.sign(delta.body))
                made.append(_Executed(delta=delta, wire=delta.wire(), key=delta.order_key))
                prev = delta.hash
        except (MalformedError, CommandError) as exc:
            raise LocalProtocolError(f"invalid command: {exc}") from None
        self._commit(made, own_deps=vector)
        # A local delta may unblock pending ones (a re-sent copy of our own lost delta, say);
        # only then is anything staged executed here (a catch-up's staged merge stays put).
        unblocked = self.buffer.take_accepted()
        if unblocked:
            for delta, wire in unblocked:
                self._staged[delta.id] = (delta, wire)
                self._staged_bytes += len(wire)
            self._staged_min = min(d.order_key for d, _w in self._staged.values())
            self._run_staged(False)
        return [m.delta for m in made]

    # -- receiving --------------------------------------------------------------------------

    def receive(self, wires: Iterable[bytes], *, defer: bool = False) -> ReceiveResult:
        """Verify and buffer received deltas; execute those that became ready.

        Invalid deltas are reported in ``rejected`` with their typed errors and change nothing.
        With ``defer``, ready deltas that would reorder already-executed ones are staged until
        :meth:`release` (or until the stage is full). Raises :class:`StorageError` only.
        """
        rejected: list[Rejection] = []
        seen: list[DeltaId] = []
        duplicates = 0
        decoded: list[tuple[Delta, bytes]] = []
        for wire in wires:
            delta: Delta | None = None
            try:
                delta = decode_delta(wire)
                if delta.is_genesis:
                    if delta.hash == self.genesis.hash:
                        duplicates += 1
                        continue
                    raise WrongSpaceError("genesis of another space")
                self._validate_commands(delta)
                decoded.append((delta, wire))
            except RemoteProtocolError as exc:
                rejected.append(Rejection(delta_id=None if delta is None else delta.id, error=exc))
        authentic = self._authenticate_batch(decoded)
        offer = self.buffer.offer
        for index, (delta, wire) in enumerate(decoded):
            seen.append(delta.id)
            try:
                if not offer(delta, wire, authentic=index in authentic):
                    duplicates += 1
            except RemoteProtocolError as exc:
                rejected.append(Rejection(delta_id=delta.id, error=exc, delta_hash=delta.hash))
        # Deltas refused now may have been offered earlier by another peer (they waited in
        # the pending set): those are reported apart, so no one blames this call's sender.
        offered_now = {(d.id, d.hash) for d, _w in decoded}
        late: list[Rejection] = []
        for rejection in self.buffer.take_rejections():
            mine = (rejection.delta_id, rejection.delta_hash) in offered_now
            (rejected if mine else late).append(rejection)
        for ev in self.buffer.take_evidence():
            self._pending_evidence.append((ev.delta_id, ev.kept_hash, ev.other_wire))
        for delta, wire in self.buffer.take_accepted():
            self._staged[delta.id] = (delta, wire)
            self._staged_bytes += len(wire)
            key = delta.order_key
            if self._staged_min is None or key < self._staged_min:
                self._staged_min = key
        self.stats.rejected += len(rejected) + len(late)
        self.stats.duplicates += duplicates
        result = self._run_staged(defer)
        return ReceiveResult(
            executed=result.executed,
            seen=tuple(seen),
            duplicates=duplicates,
            rejected=tuple(rejected),
            late_rejected=tuple(late),
            staged=len(self._staged),
            undone=result.undone,
            redone=result.redone,
        )

    def _authenticate_batch(self, batch: Sequence[tuple[Delta, bytes]]) -> set[int]:
        """Indexes of deltas in ``batch`` proven authentic by signatures within the batch.

        Walking backward, a verified signature authenticates its delta, and each *unsigned*
        delta whose hash is the ``prev`` of an authenticated successor (same creator, next seq)
        is authentic too. A signed delta is only ever authenticated by its own signature, so a
        relay cannot pass on a chain with replaced signatures. A bad signature leaves its chain
        unauthenticated here; the causal buffer then refuses it with the typed error.
        """
        authentic: set[int] = set()
        expect: dict[bytes, tuple[int, bytes]] = {}  # creator -> (seq, hash) the chain needs
        keys = self._membership.keys
        accepted = self.buffer.accepted_seq
        for index in range(len(batch) - 1, -1, -1):
            delta = batch[index][0]
            creator = delta.creator
            want = expect.get(creator)
            if delta.signature is None and want is not None and want == (delta.seq, delta.hash):
                authentic.add(index)  # unsigned: authenticated by its signed successor's chain
            elif delta.seq <= accepted(creator):
                expect.pop(creator, None)  # a duplicate (or a conflict the buffer will judge)
                continue
            elif delta.signature is not None and creator in keys:
                try:
                    verify_signature(keys[creator], delta.signature, delta.body)
                except RemoteProtocolError:
                    expect.pop(creator, None)
                    continue
                authentic.add(index)
            else:
                expect.pop(creator, None)
                continue
            if delta.seq > 1:
                expect[creator] = (delta.seq - 1, delta.prev)
            else:
                expect.pop(creator, None)
        return authentic

    def release(self) -> ReceiveResult:
        """Execute every staged delta now (one merge)."""
        return self._run_staged(False)

    def _run_staged(self, defer: bool) -> ReceiveResult:
        if not self._staged and not self._pending_evidence:
            return ReceiveResult()
        if defer and self._staged:
            # While catching up, deltas that reorder wait for one merge; deltas that append are
            # committed in groups of ``append_batch`` (one fsync per group, not per frame).
            first = self._staged_min
            appends = self._last_key is None or (first is not None and first > self._last_key)
            limit = self.append_batch if appends else self.max_staged
            if len(self._staged) < limit and self._staged_bytes < MAX_STAGED_BYTES:
                return ReceiveResult(staged=len(self._staged))
        entries = sorted(
            (_Executed(delta=d, wire=w, key=d.order_key) for d, w in self._staged.values()),
            key=lambda e: e.key,
        )
        self._staged.clear()
        self._staged_min = None
        self._staged_bytes = 0
        undone = self._commit(entries, own_deps=None)
        return ReceiveResult(executed=tuple(e.delta for e in entries), undone=undone, redone=undone)

    # -- execution --------------------------------------------------------------------------

    def _commit(self, new: list[_Executed], *, own_deps: dict[bytes, int] | None) -> int:
        """Execute ``new`` (sorted by key) at their order positions in one transaction."""
        store = self.store
        space = self.space_id
        undone_rows: list[_Executed] = []
        try:
            with store.transaction(sync=own_deps is not None):
                if new:
                    first = new[0].key
                    if self._last_key is not None and first < self._last_key:
                        for row in store.suffix_desc(space, first):
                            _c, _s, _r, _h, wire, undo = row
                            delta = decode_delta(wire)
                            self._undo(delta, undo)
                            undone_rows.append(
                                _Executed(delta=delta, wire=wire, key=delta.order_key, new=False)
                            )
                        undone_rows.reverse()
                    inserts = []
                    redo_undos = []
                    ordered = (
                        heapq.merge(undone_rows, new, key=lambda e: e.key) if undone_rows else new
                    )
                    execute = self._execute
                    members_instance = members_engine.INSTANCE
                    for item in ordered:
                        d = item.delta
                        undo_blob = execute(d)
                        if item.new:
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
                                )
                            )
                            for command in d.commands:
                                if command.engine != members_instance:
                                    continue
                                grant = members_engine.member_grant(command)
                                if grant is not None:
                                    store.add_grant(space, grant[0], grant[1], d.creator, d.seq)
                        else:
                            redo_undos.append((undo_blob, space, d.creator, d.seq))
                    store.insert_deltas(inserts)
                    if redo_undos:
                        store.set_undos(redo_undos)
                for state in self._states.values():
                    state.flush()
                for did, kept, other in self._pending_evidence:
                    store.add_evidence(space, did.creator, did.seq, kept, other)
                if own_deps is not None:
                    store.set_own_deps(space, codec.encode_trusted(own_deps))
        except StorageError:
            self._reload()
            raise
        except Exception as exc:
            # An undecodable stored delta or an engine failing on a validated command: the
            # transaction rolled back, so memory is rebuilt from the unchanged store.
            self._reload()
            raise StorageError(f"execution failed and was rolled back: {exc!r}") from exc
        self._pending_evidence.clear()
        if own_deps is not None:
            self._own_deps = own_deps
        for item in new:
            d = item.delta
            self.vector[d.creator] = d.seq
            head = Head(d.seq, d.rank, d.hash)
            self._heads[d.creator] = head
            if d.rank > self._max_rank:
                self._max_rank = d.rank
            if d.creator == self.identity.endpoint_id:
                self.buffer.note_local(d)
        if new and (self._last_key is None or new[-1].key > self._last_key):
            self._last_key = new[-1].key
        undone = len(undone_rows)
        self.stats.executed += len(new)
        if undone:
            self.stats.undone += undone
            self.stats.redone += undone
            self.stats.merges += 1
            if self.undo_listener is not None:
                self.undo_listener([r.delta.id for r in undone_rows])
        if new:
            executed = [(item.delta, item.wire) for item in new]
            for listener in list(self.listeners):
                # The batch is committed: a failing listener must neither make the caller
                # believe it was not, nor keep the other listeners from hearing of it.
                try:
                    listener(self, executed)
                except Exception:
                    _log.exception("listener %r failed on executed deltas", listener)
        return undone

    def _execute(self, delta: Delta) -> bytes:
        context = DeltaContext(self.space_id, delta.creator, delta.seq, delta.time)
        engines, states = self.engines, self._states
        records = [engines[c.engine].execute(states[c.engine], c, context) for c in delta.commands]
        # Undo records stay on this endpoint (never hashed or compared): no canonical form needed.
        return codec.encode_local(records)

    def _undo(self, delta: Delta, undo_blob: bytes | None) -> None:
        if undo_blob is None:
            raise StorageError(f"no undo record for {delta.id}")
        records = codec.decode_stored(undo_blob)
        if type(records) is not list or len(records) != len(delta.commands):
            raise StorageError(f"undo record of {delta.id} does not match its commands")
        for command, record in zip(reversed(delta.commands), reversed(records), strict=True):
            self.engines[command.engine].undo(self._states[command.engine], command, record)

    # -- serving peers ----------------------------------------------------------------------

    def catch_up_start(self, peer_vector: dict[bytes, int]) -> OrderKey | None:
        """Order key just before the first executed delta ``peer_vector`` lacks, or None."""
        start: int | None = None
        for creator, head in self._heads.items():
            have = peer_vector.get(creator, 0)
            if head.seq > have:
                info = self._lookup(creator, have + 1)
                rank = info[0] if info is not None else 1
                start = rank if start is None else min(start, rank)
        if start is None:
            return None
        return (0, start - 1, b"\xff" * 16, 2**62)

    def catch_up_chunk(
        self,
        peer_vector: dict[bytes, int],
        after: OrderKey,
        *,
        max_count: int,
        max_bytes: int,
    ) -> tuple[list[tuple[bytes, int, bytes]], OrderKey | None]:
        """Next executed deltas ``peer_vector`` lacks, in log order, after ``after``.

        Returns ``([(creator, seq, wire)], cursor)``; ``cursor`` is None when the stream is
        complete.
        """
        wires: list[tuple[bytes, int, bytes]] = []
        size = 0
        cursor = after
        while True:
            rows = self.store.log_after(self.space_id, cursor, max(64, max_count))
            for creator, seq, rank, wire in rows:
                cursor = (0, rank, creator, seq)
                if seq <= peer_vector.get(creator, 0):
                    continue
                wires.append((creator, seq, wire))
                size += len(wire)
                if len(wires) >= max_count or size >= max_bytes:
                    more = self.store.log_after(self.space_id, cursor, 1)
                    return wires, (cursor if more else None)
            if len(rows) < max(64, max_count):
                return wires, None

    def fetch(
        self,
        ranges: Iterable[tuple[bytes, int, int]],
        *,
        max_count: int,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> list[bytes]:
        """Executed deltas in the requested ``(creator, first, last)`` ranges, each extended to
        the creator's next signed delta so that unsigned ones arrive with their chain.

        Overlapping ranges are merged. The answer stops, at a signed delta, once it holds
        ``max_count`` deltas or ``max_bytes`` bytes; the asker fetches the rest later.
        """
        size = 0
        merged: dict[bytes, list[tuple[int, int]]] = {}
        for creator, first, last in ranges:
            if last >= first:
                merged.setdefault(creator, []).append((first, last))
        out: list[bytes] = []
        for creator in sorted(merged):
            spans = sorted(merged[creator])
            joined: list[tuple[int, int]] = []
            for first, last in spans:
                if joined and first <= joined[-1][1] + 1:
                    joined[-1] = (joined[-1][0], max(joined[-1][1], last))
                else:
                    joined.append((first, last))
            for first, last in joined:
                if len(out) >= max_count or size >= max_bytes:
                    return out
                last = min(last, first + max_count - len(out) - 1)
                rows = self.store.wires_range(self.space_id, creator, first, last + MAX_CHAIN)
                for seq, signed, wire in rows:
                    out.append(wire)
                    size += len(wire)
                    if signed and (seq >= last or size >= max_bytes):
                        break
        return out

    # -- digests and dumps ------------------------------------------------------------------

    def order_digest(self) -> str:
        h = hashlib.sha256()
        for creator, seq, _rank, _wire in self.store.iter_log(self.space_id):
            h.update(creator)
            h.update(seq.to_bytes(8, "big"))
        return h.hexdigest()

    def state_digest(self) -> str:
        h = hashlib.sha256()
        for instance, key, value in self.store.state_rows(self.space_id):
            for part in (instance.encode(), key, value):
                h.update(len(part).to_bytes(4, "big"))
                h.update(part)
        return h.hexdigest()

    def dump_order(self) -> list[dict[str, Any]]:
        """The executed order with each delta's full dependency vector (hex creator ids)."""
        running: dict[bytes, dict[bytes, int]] = {}
        out: list[dict[str, Any]] = []
        for creator, seq, rank, wire in self.store.iter_log(self.space_id):
            delta = decode_delta(wire)
            full = dict(running.get(creator, {}))
            for endpoint, dep in delta.deps:
                if dep > full.get(endpoint, 0):
                    full[endpoint] = dep
            running[creator] = full
            deps = dict(full)
            if seq > 1:
                deps[creator] = seq - 1
            out.append(
                {
                    "creator": creator.hex(),
                    "seq": seq,
                    "rank": rank,
                    "deps": {e.hex(): s for e, s in sorted(deps.items())},
                }
            )
        return out
