"""A replica of one space on one endpoint: the facade over the core's decisions.

Theory of operation. A replica holds one space's log, engine state and accepted frontier. Its
owner (an endpoint, the simulator, a test) drives it synchronously; every call runs to
completion and then tells ``listeners`` what executed. Each responsibility lives in a module
named for the decision it makes:

* :mod:`~p2pspace.core.genesis` -- what founds a space, and which engines it runs;
* :mod:`~p2pspace.core.authenticity` and :mod:`~p2pspace.core.causal` -- which received deltas
  are authentic, valid in their causal past and ready (the causal buffer);
* :mod:`~p2pspace.core.staging` -- which accepted deltas wait during a catch-up;
* :mod:`~p2pspace.core.merge` -- where the total order is executed (undo/redo in one
  transaction);
* :mod:`~p2pspace.core.serving` -- what a peer gets from our log;
* :mod:`~p2pspace.core.authoring` -- how this endpoint's own deltas are written (they always
  append; :meth:`Replica.create_many` is group commit: one transaction, one signature a chain);
* :mod:`~p2pspace.core.audit` -- digests and dumps for comparing replicas.

Listeners run after the transaction that executed their deltas has committed, once per call,
with every ``(delta, wire)`` the call executed in execution order; the same pairs are in
:attr:`ReceiveResult.executed_wires`. A failing listener is logged and does not affect the
others or the caller: the deltas are committed either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from p2pspace.core import audit, codec, history, membership, serving
from p2pspace.core import snapshot as snapshots
from p2pspace.core.authenticity import authenticate_batch
from p2pspace.core.authoring import write_chain
from p2pspace.core.authority import Authority, MembersDelta
from p2pspace.core.causal import CausalBuffer, Evidence, Limits, Rejection
from p2pspace.core.checkpoint import BAD_DIGEST, CheckpointPolicy, Horizon
from p2pspace.core.delta import Command, Delta, DeltaId, OrderKey, decode_delta
from p2pspace.core.engine import DeltaContext, Engine
from p2pspace.core.evidence import EvidenceLedger
from p2pspace.core.genesis import found_space, make_genesis, space_engines, validate_genesis
from p2pspace.core.history import History
from p2pspace.core.identity import Identity
from p2pspace.core.kv_state import KVState
from p2pspace.core.membership import Membership, MembersView, authorize
from p2pspace.core.merge import Entry, Frontier, TotalOrder
from p2pspace.core.recovery import OwnRecovery
from p2pspace.core.staging import MAX_STAGED, Stage
from p2pspace.core.store import Store
from p2pspace.errors import (
    CommandError,
    InvalidDeltaError,
    LocalProtocolError,
    PermissionDeniedError,
    RemoteProtocolError,
    StorageError,
    WrongSpaceError,
)

_log = logging.getLogger("p2pspace.core.replica")

FETCH_MAX_BYTES = 4 * 1024 * 1024

Executed = tuple[tuple[Delta, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveResult:
    """What one call to :meth:`Replica.receive` or :meth:`Replica.release` did.

    ``executed`` and ``executed_wires`` list the same deltas in execution order (the latter
    with the wire each was received as, ready to relay).
    """

    executed: tuple[Delta, ...] = ()
    executed_wires: Executed = ()
    seen: tuple[DeltaId, ...] = ()
    duplicates: int = 0
    rejected: tuple[Rejection, ...] = ()
    late_rejected: tuple[Rejection, ...] = ()  # refused now, but offered by an earlier call
    unsupported: tuple[DeltaId, ...] = ()  # kept and relayed, not executable by this release
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
    closed: int = 0  # blocks closed by checkpoints executed here
    snapshots: int = 0  # snapshots installed here (each replaced the whole state)


ExecutedListener = Callable[["Replica", Sequence[tuple[Delta, bytes]]], None]


class Replica:
    """One space's replica. Driven by one owner; every method is synchronous.

    Constructing one (or :meth:`open`, :meth:`join`) raises the errors of
    :func:`~p2pspace.core.genesis.validate_genesis`, among them
    :class:`~p2pspace.errors.CommandError` if the space names an engine kind that no registered
    or installed engine provides.
    """

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
        self.engine_kinds: dict[str, str] = {membership.INSTANCE: membership.KIND, **instances}
        self.engines: dict[str, Engine] = space_engines(instances)
        self._states = {inst: KVState(store, space_id, inst) for inst in self.engines}
        self.stage = Stage(max_count=max_staged)
        self.stats = ReplicaStats()
        self.listeners: list[ExecutedListener] = []
        self.undo_listener: Callable[[Sequence[DeltaId]], None] | None = None
        self._limits = limits
        self._pending_evidence: list[Evidence] = []
        self._switches: list[Entry] = []
        self._recovery = OwnRecovery(self.name)
        self._replaying = False  # receiving our held-back deltas: ours coming back is expected
        self._snapshot: tuple[DeltaId, snapshots.Manifest, list[bytes]] | None = None
        self._load()
        self.buffer: CausalBuffer
        self._make_buffer()
        self._receive_held_back()  # a snapshot installed before a crash: its later deltas

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
        """Make a new space whose genesis names this endpoint as manager.

        ``engines`` maps instance names to kinds (None: ``{"db": "rdb"}``). Raises
        :class:`LocalProtocolError` for arguments that make no valid genesis,
        :class:`CommandError` for an engine kind nobody provides.
        """
        genesis = make_genesis(
            identity,
            name=name,
            time=time,
            engines=engines,
            member_name=member_name,
            nonce=nonce if nonce is not None else os.urandom(16),
        )
        return cls.join(store, identity, genesis.wire(), limits=limits)

    @classmethod
    def join(
        cls, store: Store, identity: Identity, genesis_wire: bytes, *, limits: Limits = Limits()
    ) -> Replica:
        """Start a replica of the space that ``genesis_wire`` founds (verifying it first)."""
        genesis = decode_delta(genesis_wire)
        space_id, _instances = validate_genesis(genesis)
        if not store.has_space(space_id):
            found_space(store, genesis, genesis_wire)
        return cls(store=store, identity=identity, genesis=genesis, limits=limits)

    @classmethod
    def open(
        cls, store: Store, identity: Identity, space_id: bytes, *, limits: Limits = Limits()
    ) -> Replica:
        """The replica of ``space_id`` in ``store``; :class:`LocalProtocolError` if absent."""
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
        self._history = History.load(self.store, self.space_id)
        self._frontier = Frontier.load(self.store, self.space_id)
        self._ledger = EvidenceLedger(self.store.evidence(self.space_id))
        self._authority = self._load_authority()
        self._order = TotalOrder(
            store=self.store,
            space_id=self.space_id,
            engines=self.engines,
            states=self._states,
            authority=self._authority,
            selective=self._limits.selective_undo,
        )
        self._order.horizon = self._load_horizon()
        self._authority.closed = dict(self._order.horizon.closed or {})
        own = self.store.own_deps(self.space_id)
        self._own_deps: dict[bytes, int] = dict(codec.decode(own)) if own is not None else {}
        self._membership = Membership()
        for member, key, creator, seq in self.store.grants(self.space_id):
            self._membership.add(member, key, DeltaId(creator, seq))

    def _load_horizon(self) -> Horizon:
        last = MembersView(self._states[membership.INSTANCE]).last_checkpoint()
        if last is None:
            return Horizon(time=self.genesis.time, closed={})
        number, digest, checkpoint = last
        rows = self.store.wires_range(self.space_id, *checkpoint, checkpoint.seq)
        time = decode_delta(rows[0][2]).time if rows else self.genesis.time
        return Horizon(
            number=number,
            checkpoint=checkpoint,
            digest=digest,
            time=time,
            closed=self.store.closed_vector(self.space_id),
        )

    def _load_authority(self) -> Authority:
        """The causal-past membership, from its rows; rebuilt from the log where rows are
        missing (a store written by an older release) or behind the log (a crash between
        accepting and executing)."""
        store, space = self.store, self.space_id
        heads = self._frontier.heads
        vectors: dict[bytes, dict[bytes, int]] = {}
        used: dict[bytes, int] = {}
        for creator, blob, total in store.claimed(space):
            vector = dict(codec.decode_stored(blob))
            head = heads.get(creator)
            if head is not None and vector.get(creator) == head.seq:
                vectors[creator], used[creator] = vector, total
        records = []
        for wire, blob, unsupported in store.members_deltas(space):
            delta = decode_delta(wire)
            records.append(
                MembersDelta(
                    id=delta.id,
                    key=delta.order_key,
                    commands=delta.commands,
                    vector=dict(codec.decode_stored(blob)),
                    unsupported=bool(unsupported),
                )
            )
        enforce = self._limits.enforce_roles
        if not records:
            authority = Authority(vectors={}, used={}, members_deltas=(), void=(), enforce=enforce)
            for _c, _s, _r, wire in store.iter_log(space):
                authority.accept(decode_delta(wire), void=False)
            return authority
        forks = self._ledger.forks()
        authority = Authority(
            vectors=vectors,
            used=used,
            members_deltas=records,
            void=[DeltaId(c, q) for c, q in store.void(space)],
            unsupported=[m.id for m in records if m.unsupported],
            forks=forks,
            enforce=enforce,
        )
        for creator in heads:
            if creator not in vectors:
                for wire in store.creator_wires(space, creator):
                    authority.note_chain(decode_delta(wire))
        return authority

    def _make_buffer(self) -> None:
        self.buffer = CausalBuffer(
            space=self.space_id,
            heads=dict(self._frontier.heads),
            membership=self._membership,
            authority=self._authority,
            lookup=self._lookup,
            limits=self._limits,
            compacted=self._history.compacted,
            compacted_rank=self._history.rank,
            compacted_through=self._history.through,
        )

    def _lookup(self, creator: bytes, seq: int) -> tuple[int, bytes] | None:
        staged = self.stage.get(DeltaId(creator, seq))
        if staged is not None:
            return staged.rank, staged.hash
        if creator == self.genesis.creator and seq == 1:
            return 1, self.genesis.hash
        return self.store.delta_info(self.space_id, creator, seq)

    def _reload(self) -> None:
        """Rebuild memory from the store after a failed write (pending deltas are dropped)."""
        for state in self._states.values():
            state.reset()
        self.stage.clear()
        self._load()
        self._make_buffer()

    # -- views ------------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def endpoint_id(self) -> bytes:
        return self.identity.endpoint_id

    @property
    def vector(self) -> dict[bytes, int]:
        """The executed vector: each creator's highest executed seq (do not modify)."""
        return self._frontier.vector

    def state(self, instance: str) -> KVState:
        """The state of engine ``instance``; :class:`LocalProtocolError` if the space has none."""
        if instance not in self._states:
            raise LocalProtocolError(f"space has no engine instance {instance!r}")
        return self._states[instance]

    def members(self) -> MembersView:
        return MembersView(self._states[membership.INSTANCE])

    def is_member(self, endpoint_id: bytes) -> bool:
        """True if a delta admitting ``endpoint_id`` was accepted and no executed removal has
        removed it since (an admission counts from acceptance, so sessions can offer the space
        to a joiner while its grant still waits to execute)."""
        if endpoint_id not in self._membership.keys:
            return False
        record = self.members().get(endpoint_id)
        return record is None or record.current

    def knows_creator(self, endpoint_id: bytes) -> bool:
        """True if a delta admitting ``endpoint_id`` was accepted (its key is known), even if
        it was removed since: its deltas can be authenticated."""
        return endpoint_id in self._membership.keys

    def role(self) -> str | None:
        """This endpoint's current role in the executed state (None: not a member)."""
        return self.members().role_of(self.identity.endpoint_id)

    def take_evidence_wires(self) -> list[bytes]:
        """Copies that prove an equivocation recorded since the last call (the other copy and
        ours, each once): the owner pushes them to every peer of the space at once."""
        return self._ledger.take_new()

    def evidence_wires(self) -> list[bytes]:
        """Every copy that the equivocation proofs held here name (bounded, lowest seq first):
        sent to a peer with each Revision, so that both end up holding the same proofs."""
        return self._ledger.wires(self._held_wire)

    def evidence_digest(self) -> bytes:
        """A digest of the copies the proofs held here name; b"" when there are none."""
        return self._ledger.digest()

    def _held_wire(self, delta_id: DeltaId) -> bytes | None:
        staged = self.stage.get(delta_id)
        if staged is not None:
            return staged.wire()
        rows = self.store.wires_range(self.space_id, delta_id.creator, delta_id.seq, delta_id.seq)
        return rows[0][2] if rows else None

    def forked(self, creator: bytes, seq: int) -> bool:
        """True if ``creator`` is known to have equivocated at or before ``seq``."""
        return self._authority.forked(creator, seq)

    def equivocators(self) -> dict[bytes, int]:
        """Members caught signing two histories: endpoint id -> the seq from which its deltas
        are void. Managers are shown these so they can remove them."""
        return dict(self._authority.forks)

    def refusal(self, delta_id: DeltaId) -> str | None:
        """Why an executed delta was a recorded no-op here, or None if it ran."""
        return self._order.refusal(delta_id)

    def can_create(self) -> bool:
        """True once a delta granting this endpoint membership has *executed* here: a new
        delta depends on the executed vector, so the grant must be in it (accepted but staged
        is not enough)."""
        vector = self.vector
        if self.recovering():
            return False
        return any(
            vector.get(creator, 0) >= seq
            for creator, seq in self._membership.grants.get(self.identity.endpoint_id, ())
        )

    def recovering(self) -> int:
        """How many of this endpoint's own deltas peers hold that this store lacks (0 when
        none): it must get them back before it creates anything (:mod:`~p2pspace.core.recovery`)."""
        return self._recovery.behind(self.buffer.accepted_seq(self.identity.endpoint_id))

    def note_peer_vector(self, peer: bytes, vector: dict[bytes, int]) -> None:
        """What ``peer`` says it holds (its revision or ack). If it holds more of this
        endpoint's own deltas than this store, :meth:`missing` asks for them and
        :meth:`can_create` waits until they are back (one log line says why)."""
        me = self.identity.endpoint_id
        self._recovery.note_claim(peer, vector.get(me, 0), self.buffer.accepted_seq(me))

    def peer_gone(self, peer: bytes) -> None:
        """``peer``'s session ended: its claim to hold our deltas no longer holds us back."""
        self._recovery.forget(peer)

    def member_ids(self) -> list[bytes]:
        """The endpoints :meth:`is_member` counts, sorted."""
        return [m for m in sorted(self._membership.keys) if self.is_member(m)]

    @property
    def staged_count(self) -> int:
        return len(self.stage)

    @property
    def pending_count(self) -> int:
        return self.buffer.pending_count

    def accepted_vector(self) -> dict[bytes, int]:
        return self.buffer.vector()

    def missing(self) -> list[tuple[bytes, int, int]]:
        ranges = self.buffer.missing()
        behind = self.recovering()
        if behind:
            me = self.identity.endpoint_id
            first = self.buffer.accepted_seq(me) + 1
            ranges = [r for r in ranges if r[0] != me] + [(me, first, first + behind - 1)]
        return ranges

    def executed_count(self) -> int:
        return sum(self.vector.values())

    # -- local creation ---------------------------------------------------------------------

    # -- checkpoints (p2pspace.core.checkpoint) ----------------------------------------------

    def horizon(self) -> Horizon:
        """What this replica has closed: the last checkpoint and each creator's closed seq."""
        return self._order.horizon

    def window(self) -> tuple[int, int]:
        """``(count, bytes)`` of the open window: executed deltas no checkpoint has closed."""
        return self.store.window_size(self.space_id)

    def is_checkpointer(self) -> bool:
        """True if this endpoint makes the space's checkpoints (and is a manager)."""
        view = self.members()
        me = self.identity.endpoint_id
        return view.checkpointer() == me and view.role_of(me) == "manager"

    def checkpoint_due(
        self,
        policy: CheckpointPolicy,
        *,
        now: int,
        acked: Mapping[bytes, Mapping[bytes, int]],
    ) -> bool:
        """True if this endpoint is the checkpointer and ``policy`` says the window should
        close now (``acked``: each peer's acknowledged vector; ``now`` in ms)."""
        if not self.is_checkpointer() or self.recovering():
            return False
        count, size = self.window()
        me = self.identity.endpoint_id
        others = [m.id for m in self.members().members() if m.id != me]
        return policy.due(
            count=count,
            size=size,
            age_ms=now - self._order.horizon.time,
            vector=self.vector,
            acked=acked,
            members=others,
        )

    def create_checkpoint(self, *, time: int) -> Delta:
        """Close the open window: a checkpoint carrying the state digest here. Raises
        :class:`PermissionDeniedError` unless this endpoint is the space's checkpointer."""
        if not self.is_checkpointer():
            raise PermissionDeniedError(
                "refused: only the space's checkpointer (a manager) makes checkpoints"
            )
        digest = bytes.fromhex(self.state_digest())
        number = self._order.horizon.number + 1
        return self.create([membership.checkpoint_command(number, digest)], time=time)

    def checkpoint_faults(self) -> list[tuple[DeltaId, str]]:
        """Checkpoints that closed nothing because their state digest did not match (evidence
        against their creators, shown to managers), with the reason recorded."""
        out = []
        for wire, _vector, _unsupported in self.store.members_deltas(self.space_id):
            delta = decode_delta(wire)
            if membership.is_checkpoint(delta.commands):
                reason = self.refusal(delta.id)
                if reason == BAD_DIGEST:
                    out.append((delta.id, reason))
        return out

    def create(self, commands: Sequence[Command], *, time: int) -> Delta:
        """Create, execute and durably commit one signed delta of ``commands``."""
        return self.create_many([commands], time=time)[0]

    def create_many(self, batches: Sequence[Sequence[Command]], *, time: int) -> list[Delta]:
        """Group commit: one delta per entry of ``batches``, one transaction, chained signatures.

        Raises :class:`LocalProtocolError` if this endpoint may not create yet or a command is
        not valid for its engine; nothing is changed then. :class:`StorageError` if the store
        fails (nothing is committed).
        """
        if not batches:
            return []
        me = self.identity.endpoint_id
        behind = self.recovering()
        if behind:
            raise LocalProtocolError(
                f"this store lacks {behind} change(s) this endpoint made earlier (its peers hold "
                "them): they are being recovered; try again once they are back"
            )
        if not self.can_create():
            raise LocalProtocolError(
                "this endpoint is not (yet) a member of the space: the delta granting membership "
                "has not reached it"
            )
        vector = dict(self.vector)
        vector.pop(me, None)
        deltas = write_chain(
            batches,
            identity=self.identity,
            space_id=self.space_id,
            head=self._frontier.heads.get(me),
            max_rank=self._frontier.max_rank,
            own_deps=self._own_deps,
            vector=vector,
            time=time,
            validate=self._validate_commands,
        )
        self._authorize_local(deltas)
        try:
            void = self._authority.check(deltas[0])
        except InvalidDeltaError as exc:
            raise PermissionDeniedError(f"this endpoint may not make that change: {exc}") from None
        if void:
            raise PermissionDeniedError("this endpoint was removed from the space")
        made = [Entry.of(delta, delta.wire()) for delta in deltas]
        # Noted before the commit, so that the authority rows it dirties (a members delta of
        # ours, its claimed vector) are saved in the same transaction: a crash right after
        # cannot leave the store without them.
        for delta in deltas:
            self.buffer.note_local(delta)
        self._commit(made, own_deps=vector)
        executed = [(m.delta, m.wire) for m in made]
        try:
            # A local delta may unblock pending ones (a re-sent copy of our own lost delta,
            # say); only then is anything staged executed here (a catch-up's staged merge
            # stays put).
            unblocked = self.buffer.take_accepted()
            if unblocked:
                for delta, wire in unblocked:
                    self.stage.add(delta, wire)
                executed.extend(self._run_staged(False).executed_wires)
        finally:
            self._notify(executed)
        return deltas

    def _authorize_local(self, deltas: Sequence[Delta]) -> None:
        """Refuse (PermissionDeniedError) what every replica would refuse or make a no-op.
        ``deltas`` are written (validated, signed) but not committed."""
        if not self._authority.enforce:
            return
        view = self.members()
        me = self.identity.endpoint_id
        role = view.role_of(me)
        for delta in deltas:
            commands = delta.commands
            if role in ("participant", "manager") and not any(
                c.engine == membership.INSTANCE for c in commands
            ):
                continue  # the common case: a writer's tool commands
            reason = authorize(me, commands, view)
            if reason is not None:
                who = "not a member" if role is None else f"a {role}"
                raise PermissionDeniedError(f"refused: {reason} (this endpoint is {who})")
        quota = self._authority.table().quota
        if self._authority.used(me) + sum(len(d.body) for d in deltas) > quota:
            raise PermissionDeniedError(
                f"refused: this endpoint's changes would exceed the space's quota of {quota} bytes"
            )

    def _validate_commands(self, delta: Delta) -> None:
        self._validate_list(delta.commands)

    def _validate_list(self, commands: Sequence[Command]) -> None:
        for command in commands:
            engine = self.engines.get(command.engine)
            if engine is None:
                raise CommandError(f"space has no engine instance {command.engine!r}")
            if command.engine == membership.INSTANCE and command.name == "genesis":
                raise CommandError("members.genesis is only valid in a genesis delta")
            engine.validate(command)

    # -- receiving --------------------------------------------------------------------------

    def receive(
        self, wires: Iterable[bytes], *, defer: bool = False, sender: bytes | None = None
    ) -> ReceiveResult:
        """Verify and buffer received deltas; execute those that became ready.

        Invalid deltas are reported in ``rejected`` with their typed errors and change nothing.
        With ``defer``, ready deltas that would reorder already-executed ones are staged until
        :meth:`release` (or until the stage is full). ``sender``: the peer they came from, whose
        share of the pending set holds those that must wait. Raises :class:`StorageError` only.
        """
        rejected: list[Rejection] = []
        seen: list[DeltaId] = []
        duplicates = 0
        decoded: list[tuple[Delta, bytes]] = []
        unsupported: set[int] = set()
        for wire in wires:
            delta: Delta | None = None
            try:
                delta = decode_delta(wire)
                if delta.is_genesis:
                    if delta.hash == self.genesis.hash:
                        duplicates += 1
                        continue
                    raise WrongSpaceError("genesis of another space")
                try:
                    self._validate_commands(delta)
                except CommandError:
                    # Well-formed but beyond this release (an unknown command, engine kind or
                    # argument shape): kept, relayed and never executed; judged on its
                    # creator's membership when it is accepted.
                    unsupported.add(len(decoded))
                decoded.append((delta, wire))
            except RemoteProtocolError as exc:
                rejected.append(Rejection(delta_id=None if delta is None else delta.id, error=exc))
        buffer = self.buffer
        authentic = authenticate_batch(decoded, self._membership.keys, buffer.accepted_seq)
        offer = buffer.offer
        for index, (delta, wire) in enumerate(decoded):
            seen.append(delta.id)
            try:
                if not offer(
                    delta,
                    wire,
                    authentic=index in authentic,
                    unsupported=index in unsupported,
                    sender=sender,
                ):
                    duplicates += 1
            except RemoteProtocolError as exc:
                rejected.append(Rejection(delta_id=delta.id, error=exc, delta_hash=delta.hash))
        # Deltas refused now may have been offered earlier by another peer (they waited in
        # the pending set): those are reported apart, so no one blames this call's sender.
        offered_now = {(d.id, d.hash) for d, _w in decoded}
        late: list[Rejection] = []
        for rejection in buffer.take_rejections():
            mine = (rejection.delta_id, rejection.delta_hash) in offered_now
            (rejected if mine else late).append(rejection)
        evidence = buffer.take_evidence()
        for delta, _wire in buffer.switches:
            # The copy given up stays provable: peers that hold it must meet the kept one.
            old = self._held_wire(delta.id)
            if old is not None:
                evidence.append(Evidence(delta_id=delta.id, kept_hash=delta.hash, other_wire=old))
        self._pending_evidence.extend(evidence)
        self._ledger.note(evidence, self._held_wire)
        for delta, wire in buffer.take_switches():
            if self.stage.get(delta.id) is not None:
                self.stage.replace(delta, wire)
            else:
                self._switches.append(Entry.of(delta, wire))
        kept: list[DeltaId] = []
        not_executable = self._authority.unsupported
        me, own = self.identity.endpoint_id, 0
        for delta, wire in buffer.take_accepted():
            self.stage.add(delta, wire)
            own += delta.creator == me
            if not_executable and delta.id in not_executable:
                kept.append(delta.id)
        if not self._replaying:
            self._recovery.note_returned(own)  # ours, and the store lacked them: it is older
        self.stats.rejected += len(rejected) + len(late)
        self.stats.duplicates += duplicates
        result = self._run_staged(defer)
        self._notify(result.executed_wires)
        return ReceiveResult(
            executed=result.executed,
            executed_wires=result.executed_wires,
            seen=tuple(seen),
            duplicates=duplicates,
            rejected=tuple(rejected),
            late_rejected=tuple(late),
            staged=len(self.stage),
            undone=result.undone,
            redone=result.redone,
            unsupported=tuple(kept),
        )

    def release(self) -> ReceiveResult:
        """Execute every staged delta now (one merge)."""
        result = self._run_staged(False)
        self._notify(result.executed_wires)
        return result

    # -- execution --------------------------------------------------------------------------

    def _run_staged(self, defer: bool) -> ReceiveResult:
        """Execute the stage unless it must wait; listeners are not told here."""
        if (
            not self.stage
            and not self._pending_evidence
            and not self.buffer.newly_void
            and not self._switches
        ):
            return ReceiveResult()
        if self.stage.must_wait(defer=defer, last_key=self._frontier.last_key):
            return ReceiveResult(staged=len(self.stage))
        entries = [Entry.of(delta, wire) for delta, wire in self.stage.take()]
        undone = self._commit(entries, own_deps=None)
        return ReceiveResult(
            executed=tuple(e.delta for e in entries),
            executed_wires=tuple((e.delta, e.wire) for e in entries),
            undone=undone,
            redone=undone,
        )

    def _commit(self, new: list[Entry], *, own_deps: dict[bytes, int] | None) -> int:
        """Execute ``new`` (sorted by key) in one transaction; returns how many were undone."""
        try:
            undone = self._order.commit(
                new,
                frontier=self._frontier,
                evidence=self._pending_evidence,
                own_deps=own_deps,
                redo_from=self._redo_from(),
                dirty=self._authority.take_dirty(),
                switches=self._switches,
            )
        except StorageError:
            self._switches.clear()
            self._reload()
            raise
        if self._switches:
            # A kept copy may sit elsewhere in the order, or be a creator's head -- or its
            # last closed delta, which the snapshot built for this checkpoint holds.
            self._switches.clear()
            self._frontier = Frontier.load(self.store, self.space_id)
            self._snapshot = None
        self._pending_evidence.clear()
        if own_deps is not None:
            self._own_deps = own_deps
        me = self.identity.endpoint_id
        if own_deps is None:  # local deltas were noted before their commit
            for item in new:
                if item.delta.creator == me:
                    self.buffer.note_local(item.delta)
        self.stats.executed += len(new)
        if self._order.closures:
            self.stats.closed += self._order.closures
            self.stats.undone += self._order.closure_undos
            self.stats.redone += self._order.closure_undos
        if undone:
            self.stats.undone += len(undone)
            self.stats.redone += len(undone)
            self.stats.merges += 1
            if self.undo_listener is not None:
                self.undo_listener([e.delta.id for e in undone])
        return len(undone)

    def _redo_from(self) -> OrderKey | None:
        """A key just before the first executed delta made void since the last commit (a
        removal arrived after its victim's deltas executed): from there the log re-executes."""
        newly = self.buffer.newly_void
        if not newly and not self._switches:
            return None
        first: OrderKey | None = None
        for entry in self._switches:
            key = (0, entry.delta.rank, entry.delta.creator, entry.delta.seq - 1)
            if first is None or key < first:
                first = key
        for creator, seq in newly:
            info = self.store.delta_info(self.space_id, creator, seq)
            if info is None:
                continue  # not executed yet: it runs as a no-op when it does
            key = (0, info[0], creator, seq - 1)
            if first is None or key < first:
                first = key
        newly.clear()
        return first

    def _notify(self, executed: Sequence[tuple[Delta, bytes]]) -> None:
        if not executed:
            return
        for listener in list(self.listeners):
            # The deltas are committed: a failing listener must neither make the caller
            # believe they were not, nor keep the other listeners from hearing of them.
            try:
                listener(self, executed)
            except Exception:
                _log.exception("listener %r failed on executed deltas", listener)

    # -- serving peers ----------------------------------------------------------------------

    def catch_up_start(self, peer_vector: dict[bytes, int]) -> OrderKey | None:
        """Order key just before the first executed delta ``peer_vector`` lacks, or None."""
        return serving.catch_up_start(
            self._frontier.heads, peer_vector, self._lookup, self._order.horizon.closed
        )

    def catch_up_chunk(
        self,
        peer_vector: dict[bytes, int],
        after: OrderKey,
        *,
        max_count: int,
        max_bytes: int,
        until: OrderKey | None = None,
    ) -> tuple[list[tuple[bytes, int, bytes]], OrderKey | None]:
        """Next executed deltas ``peer_vector`` lacks, in log order, after ``after`` and up to
        ``until`` (see :func:`~p2pspace.core.serving.catch_up_chunk`)."""
        return serving.catch_up_chunk(
            self.store,
            self.space_id,
            peer_vector,
            after,
            max_count=max_count,
            max_bytes=max_bytes,
            until=until,
        )

    def fetch(
        self,
        ranges: Iterable[tuple[bytes, int, int]],
        *,
        max_count: int,
        max_bytes: int = FETCH_MAX_BYTES,
    ) -> list[bytes]:
        """Executed deltas in the requested ranges, with their chains
        (see :func:`~p2pspace.core.serving.fetch`); compacted deltas are not held, and a range
        starts after them (:meth:`lacks_compacted` tells whether the asker needs a snapshot)."""
        purged = self._history.purged
        held = [(c, max(first, purged.get(c, 0) + 1), last) for c, first, last in ranges]
        return serving.fetch(
            self.store, self.space_id, held, max_count=max_count, max_bytes=max_bytes
        )

    # -- the closed history kept (p2pspace.core.history) ---------------------------------------

    def compacted(self) -> dict[bytes, int]:
        """Per creator, the last seq this replica no longer holds (compacted, or below the
        snapshot it was installed from); empty if it holds its whole history."""
        return self._history.purged

    def lacks_compacted(self, vector: Mapping[bytes, int]) -> bool:
        """True if a peer holding ``vector`` lacks deltas this replica no longer holds."""
        return self._history.lacks(vector)

    @property
    def keeps_history(self) -> bool:
        return self._history.keep

    def set_keep_history(self, keep: bool) -> None:
        """Keep (or stop keeping) the closed deltas of this space: an audit trail."""
        with self.store.transaction():
            history.set_keep(self.store, self._history, keep)

    def compaction_due(self, acked: Mapping[bytes, Mapping[bytes, int]]) -> bool:
        """True if automatic compaction should run now: the space does not keep its history,
        the last checkpoint closed deltas not compacted yet, and no other current member is
        known to lack them (``acked``: what each peer acknowledged to this endpoint).

        A member that acknowledged something here must have acknowledged the whole closed
        block. A member never heard from directly counts as holding it, except on the
        checkpointer and on the endpoint that made the last checkpoint: a block is closed only
        once every member acknowledged it (or a member was silent far past the bounds), so
        they keep it until they have every acknowledgement themselves, and a returning laggard
        can always get the deltas from them."""
        closed = self._order.horizon.closed
        if self._history.keep or not closed or self.recovering():
            return False
        purged = self._history.purged
        if all(seq <= purged.get(creator, 0) for creator, seq in closed.items()):
            return False
        me = self.identity.endpoint_id
        # Strict where this endpoint closes blocks, or closed this one (a handover since does
        # not make a block it closed without every acknowledgement safe to drop).
        made_it = self._order.horizon.checkpoint
        checkpointer = self.is_checkpointer() or (made_it is not None and made_it.creator == me)
        for member in self.members().members():
            if member.id == me:
                continue
            seen = acked.get(member.id)
            if seen is None and not checkpointer:
                continue
            if seen is None or any(seen.get(c, 0) < seq for c, seq in closed.items()):
                return False
        return True

    def compact(self, *, vacuum: bool = False) -> int:
        """Delete the closed deltas no longer needed (DESIGN §12, purge) and return how many;
        ``vacuum`` gives the freed pages back to the file system (without it they are reused by
        what follows, and the write-ahead log is cut back). :class:`LocalProtocolError`
        if the space keeps its history or no checkpoint has closed a block."""
        try:
            with self.store.transaction():
                deleted = history.compact(self.store, self._history)
        except StorageError:
            self._reload()
            raise
        if vacuum:
            self.store.vacuum()
        elif deleted:
            self.store.truncate_wal()
        return deleted

    # -- snapshots (p2pspace.core.snapshot) ---------------------------------------------------

    def snapshot(self) -> tuple[snapshots.Manifest, list[bytes]]:
        """The snapshot at the last closed checkpoint; :class:`LocalProtocolError` if none."""
        checkpoint = self._order.horizon.checkpoint
        if checkpoint is None:
            raise LocalProtocolError("no checkpoint has closed a block of this space yet")
        held = self._snapshot
        if held is None or held[0] != checkpoint:
            held = (checkpoint, *snapshots.build(self.store, self.space_id, checkpoint))
            self._snapshot = held  # built once per checkpoint: every peer gets the same bytes
        return held[1], held[2]

    def install_snapshot(self, snap: snapshots.Snapshot) -> None:
        """Replace this replica's content by a verified snapshot and execute its checkpoint.

        A joiner, a laggard or a restored backup takes one. Deltas it executed that the
        snapshot does not cover (a laggard's own offline edits, say) sort after the snapshot's
        block: they are kept in the store with the snapshot, in the same transaction, and
        received again on top of it (:meth:`_receive_held_back`; after a crash in between, at
        the next open). :class:`LocalProtocolError` if this replica already holds the
        snapshot's block or a later one."""
        if snap.manifest.space != self.space_id:
            raise LocalProtocolError("the snapshot is of another space")
        if snap.manifest.number <= self._order.horizon.number:
            raise LocalProtocolError("this replica already holds that checkpoint's block")
        covered = snap.vector
        beyond = any(seq > covered.get(creator, 0) for creator, seq in self.vector.items())
        checkpoint = snap.checkpoint
        try:
            with self.store.transaction():
                if beyond:
                    self.store.hold_back(
                        self.space_id, self.store.wires_beyond(self.space_id, covered)
                    )
                snapshots.install(self.store, snap)
                history.installed(self.store, self._history, covered)
                self.store.drop_snapshot_parts(self.space_id)
                states = {i: KVState(self.store, self.space_id, i) for i in self.engines}
                context = DeltaContext(
                    self.space_id, checkpoint.creator, checkpoint.seq, checkpoint.time
                )
                for command in checkpoint.commands:
                    self.engines[command.engine].execute(states[command.engine], command, context)
                for state in states.values():
                    state.flush()
        finally:
            self._reload()
        self.stats.snapshots += 1
        self._receive_held_back()

    def _receive_held_back(self) -> None:
        """Receive again the deltas :meth:`install_snapshot` kept, then forget them. They were
        executed here on the same causal past, so they are accepted again; one that is not
        (its verdict changed with evidence the snapshot brought) is logged and dropped, as a
        refused delta from a peer would be."""
        wires = self.store.held_back(self.space_id)
        if not wires:
            return
        self._replaying = True
        try:
            result = self.receive(wires)
        finally:
            self._replaying = False
        refused = len(result.rejected) + len(result.late_rejected)
        if refused:
            _log.warning(
                "space %r: %d change(s) made after the snapshot it installed were refused on "
                "top of it",
                self.name,
                refused,
            )
        with self.store.transaction():
            self.store.drop_held_back(self.space_id)

    # -- digests and dumps ------------------------------------------------------------------

    def executed_hash(self, creator: bytes, seq: int) -> bytes | None:
        """The hash of ``creator``'s executed delta ``seq``, or None if it is not executed
        here (a creator's head is answered from memory, the rest from the store)."""
        head = self._frontier.heads.get(creator)
        if head is not None and head.seq == seq:
            return head.hash
        info = self.store.delta_info(self.space_id, creator, seq)
        return None if info is None else info[1]

    def order_digest(self) -> str:
        return audit.order_digest(self.store, self.space_id)

    def state_digest(self) -> str:
        return audit.state_digest(self.store, self.space_id)

    def dump_order(self) -> list[dict[str, Any]]:
        """The executed order with each delta's full dependency vector (hex creator ids)."""
        return audit.dump_order(self.store, self.space_id)
