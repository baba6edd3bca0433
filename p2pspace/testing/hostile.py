"""A byzantine member: the deltas a hostile endpoint of a space makes, and what it does with them.

Theory of operation. A hostile member holds a real key and a real replica; what makes it hostile
is that it writes deltas by hand instead of through :meth:`~p2pspace.core.replica.Replica.create`
(which refuses what the space's rules refuse). The crafting functions build well-formed, signed
deltas with any dependency vector and any commands:

* :func:`craft_next` -- the creator's next delta on its chain in a replica, depending on any
  vector the replica has executed (an old one *backdates* it: a low rank sorts it early);
* :func:`twin` -- a second, different delta under an existing delta's id (*equivocation*);
* :func:`deltas_frame` -- a ``Deltas`` frame, to hand a crafted delta to one peer directly.

:class:`HostileMember` is the behaviour: each turn it picks, from a seeded random generator,
one of the attacks in :data:`ATTACKS` (or, now and then, an ordinary write) and returns a
:class:`Move`: deltas it offers its own replica first -- what that accepts is executed and
relayed like any delta, what it refuses (a guest's writes, managing as a participant, a removed
member's late deltas) goes to every neighbour directly -- and deltas handed straight to one
neighbour (the second copy of an equivocation). :class:`Byzantine` plays those moves on the
simulated network (:class:`~p2pspace.testing.simnet.SimNetwork`, seen here as a
:class:`SimHost`) and, in the runs that draw it, has the space's creator remove the byzantine
member midway. Every honest replica must end up in the same state however the attacks
interleave; the hostile replica itself is not held to that.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pspace.core.delta import Command, Delta, decode_delta, make_body
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.engines import members, rdb
from p2pspace.errors import LocalProtocolError
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import frame
from p2pspace.sync.messages import Deltas, encode_message

ATTACKS = ("backdate", "squat", "privileged", "equivocate")
WRITE_CHANCE = 0.3  # of its turns that are ordinary writes
GUEST_CHANCE = 0.25  # of simulated runs where the byzantine member is a guest
REMOVAL_CHANCE = 0.3  # of simulated runs where the space's creator removes it midway


def craft_next(
    replica: Replica,
    creator: Identity,
    commands: Sequence[Command],
    *,
    time: int,
    deps: Mapping[bytes, int] | None = None,
    signed: bool = True,
) -> Delta:
    """``creator``'s next delta after its last delta executed in ``replica``, carrying
    ``commands`` whatever the space's rules say of them.

    ``deps`` is the full dependency vector to claim (None: everything ``replica`` executed, like
    a normal delta; an older vector backdates the delta). Entries of ``deps`` that the creator's
    previous delta already covers are harmless. The rank is the one every replica will compute,
    so the delta is refused, if at all, only for what its commands or its creator may do.

    Raises :class:`LocalProtocolError` if ``deps`` names a delta ``replica`` has not executed.
    """
    me = creator.endpoint_id
    space = replica.space_id
    store = replica.store
    seq = replica.vector.get(me, 0) + 1
    prev = b""
    top = 0
    if seq > 1:
        head = store.delta_info(space, me, seq - 1)
        if head is None:
            raise LocalProtocolError("the creator's previous delta is not executed here")
        top, prev = head
    source = replica.vector if deps is None else deps
    wanted = {e: s for e, s in source.items() if s > 0 and e != me}
    for endpoint, dep_seq in wanted.items():
        info = store.delta_info(space, endpoint, dep_seq)
        if info is None:
            raise LocalProtocolError(f"dependency {endpoint.hex()}:{dep_seq} is not executed here")
        top = max(top, info[0])
    delta = make_body(
        space=space,
        creator=me,
        seq=seq,
        rank=top + 1,
        deps=wanted,
        prev=prev,
        time=time,
        commands=list(commands),
    )
    return delta.with_signature(creator.sign(delta.body)) if signed else delta


def twin(delta: Delta, creator: Identity, commands: Sequence[Command]) -> Delta:
    """A signed delta with ``delta``'s id, chain position and dependencies but other commands:
    the second half of an equivocation."""
    other = make_body(
        space=delta.space,
        creator=delta.creator,
        seq=delta.seq,
        rank=delta.rank,
        deps=dict(delta.deps),
        prev=delta.prev,
        time=delta.time,
        commands=list(commands),
    )
    if other.hash == delta.hash:
        raise LocalProtocolError("a twin needs different commands")
    return other.with_signature(creator.sign(other.body))


def deltas_frame(space: bytes, wires: Sequence[bytes]) -> bytes:
    """One framed ``Deltas`` message carrying ``wires``, as a session would send it."""
    return frame(encode_message(Deltas(space=space, wires=tuple(wires))))


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """What one turn of a hostile member does.

    ``offer``: deltas for its own replica; those it refuses go to every neighbour directly.
    ``inject``: ``(neighbour index, wires)`` handed straight to that neighbour, bypassing its own
    replica (which holds another copy of the same id).
    """

    attack: str
    offer: tuple[bytes, ...] = ()
    inject: tuple[tuple[int, tuple[bytes, ...]], ...] = ()


@dataclass(slots=True, kw_only=True)
class HostileMember:
    """The byzantine member's choices, drawn from ``rng`` (see the module docstring).

    ``victim`` is the space's creator (the endpoint it tries to demote or remove); ``sybil`` a
    key of its own that it tries to make a manager; ``attacks`` the kinds it may choose from.
    """

    identity: Identity
    victim: bytes
    sybil: Identity
    rng: random.Random
    attacks: tuple[str, ...] = ATTACKS
    counts: dict[str, int] = field(default_factory=dict)
    _turn: int = 0

    def move(self, replica: Replica, neighbours: Sequence[int], *, time: int) -> Move | None:
        """This turn's attack on ``replica`` (the hostile endpoint's own), or None if it has no
        delta of its own executed yet or no neighbour to tell."""
        if not neighbours or not replica.can_create():
            return None
        self._turn += 1
        if not self.attacks or self.rng.random() < WRITE_CHANCE:
            # Now and then it behaves, so that its chain grows between attacks.
            return self._write(replica, time)
        attack = self.rng.choice(self.attacks)
        self.counts[attack] = self.counts.get(attack, 0) + 1
        if attack == "backdate":
            return self._backdate(replica, time)
        if attack == "squat":
            return self._squat(replica, time)
        if attack == "equivocate":
            return self._equivocate(replica, neighbours, time)
        return self._privileged(replica, time)

    # -- attacks ------------------------------------------------------------------------------

    def _write(self, replica: Replica, time: int) -> Move:
        k = self.rng.randrange(8)
        commands = [rdb.set_fields("t", f"r{k}", {"v": self._turn})]
        delta = craft_next(replica, self.identity, commands, time=time)
        self.counts["write"] = self.counts.get("write", 0) + 1
        return Move(attack="write", offer=(delta.wire(),))

    def _old_vector(self, replica: Replica) -> dict[bytes, int]:
        """A dependency vector from some time ago: each entry cut back at random. Entries its
        own chain already covers add nothing (a creator's past never shrinks), so what is left
        is its own previous delta's past plus a random part of what it learnt since."""
        return {c: self.rng.randint(0, s) for c, s in replica.vector.items()}

    def _backdate(self, replica: Replica, time: int) -> Move:
        """A write that depends on old history only: a low rank sorts it before deltas the
        others made since, which every honest replica must undo and redo alike."""
        k = self.rng.randrange(8)
        commands = [rdb.set_fields("t", f"r{k}", {"v": -self._turn, "hostile": time})]
        delta = craft_next(
            replica, self.identity, commands, time=time, deps=self._old_vector(replica)
        )
        return Move(attack="backdate", offer=(delta.wire(),))

    def _squat(self, replica: Replica, time: int) -> Move:
        """Backdated creates of record ids other members use: their plain ids, and ids in
        their namespaces (owned or not)."""
        others = [m.id for m in replica.members().everyone() if m.id != self.identity.endpoint_id]
        used = [record for record, _fields in rdb.view(replica).records("t")]
        commands: list[Command] = []
        if used:
            commands.append(rdb.create("t", self.rng.choice(used), {"squat": self._turn}))
        if others:
            owner = self.rng.choice(others)
            local = f"post-{self.rng.randrange(4)}"
            commands.append(
                rdb.create(
                    "t",
                    rdb.owned_id(owner, local),
                    {"squat": self._turn},
                    owned=self.rng.random() < 0.5,
                )
            )
        if not commands:
            commands.append(rdb.create("t", "r0", {"squat": self._turn}))
        delta = craft_next(
            replica, self.identity, commands, time=time, deps=self._old_vector(replica)
        )
        return Move(attack="squat", offer=(delta.wire(),))

    def _equivocate(self, replica: Replica, neighbours: Sequence[int], time: int) -> Move:
        """Two signed deltas with one id: one offered here (and relayed), the other handed to
        one neighbour first."""
        k = self.rng.randrange(8)
        first = craft_next(
            replica, self.identity, [rdb.set_fields("t", f"r{k}", {"eq": "a"})], time=time
        )
        second = twin(first, self.identity, [rdb.set_fields("t", f"r{k}", {"eq": "b"})])
        target = self.rng.choice(list(neighbours))
        return Move(
            attack="equivocate", offer=(first.wire(),), inject=((target, (second.wire(),)),)
        )

    def _privileged(self, replica: Replica, time: int) -> Move:
        """Every managing action: add a sybil as manager, promote itself, demote or remove the
        space's creator, lower the quota. Refused before storage on every honest replica."""
        me = self.identity.endpoint_id
        choices: list[list[Command]] = [
            [
                members.add_command(
                    member_id=self.sybil.endpoint_id,
                    key=self.sybil.public_key,
                    name="sybil",
                    role="manager",
                )
            ],
            [members.role_command(me, "manager")],
            [members.role_command(self.victim, "guest")],
            [members.remove_command(self.victim)],
            [members.quota_command(1)],
        ]
        commands = self.rng.choice(choices)
        delta = craft_next(replica, self.identity, commands, time=time)
        wires = [delta.wire()]
        if commands[0].name == "add":
            # The sybil acts as if the add had worked: a stranger's delta, refused too.
            wires.append(_sybil_delta(replica, self.sybil, time).wire())
        return Move(attack="privileged", offer=tuple(wires))


def _sybil_delta(replica: Replica, sybil: Identity, time: int) -> Delta:
    """The sybil's first delta, claiming to be a manager adding nobody in particular."""
    return craft_next(replica, sybil, [rdb.create("t", "sybil", {"by": "sybil"})], time=time)


class SimHost(Protocol):
    """What :class:`Byzantine` uses of the simulated network."""

    rng: random.Random
    space_id: bytes
    now: int

    @property
    def faults_active(self) -> bool: ...

    def schedule(self, delay: int, action: Callable[[], None]) -> None: ...

    def live_endpoint(self, i: int) -> Endpoint | None: ...

    def neighbours(self, i: int) -> list[int]: ...

    def inject(self, src: int, dst: int, data: bytes) -> None: ...

    def flush(self, i: int) -> None: ...


@dataclass(slots=True, kw_only=True)
class Byzantine:
    """The byzantine endpoint of a simulated run: which one, its role in the space, its
    behaviour, and whether the space's creator is still to remove it."""

    index: int
    role: str
    member: HostileMember
    removal_due: bool = False
    moves: int = 0

    @classmethod
    def draw(
        cls,
        rng: random.Random,
        *,
        seed: int,
        index: int,
        identity: Identity,
        victim: bytes,
        attacks: tuple[str, ...],
    ) -> Byzantine:
        """Endpoint ``index`` (holding ``identity``) as the byzantine member of a run: its
        role and whether it is removed are drawn from ``rng``, its moves from its own
        generator seeded by ``seed``."""
        return cls(
            index=index,
            role="guest" if rng.random() < GUEST_CHANCE else "participant",
            removal_due=rng.random() < REMOVAL_CHANCE,
            member=HostileMember(
                identity=identity,
                victim=victim,
                sybil=Identity.from_seed(f"sim-{seed}-sybil".encode()),
                rng=random.Random(f"hostile-{seed}"),
                attacks=attacks,
            ),
        )

    def schedule(self, net: SimHost, turns: int, *, over_ms: int) -> None:
        """Spread ``turns`` moves (and the removal, if due) over the next ``over_ms``."""
        for _ in range(turns):
            net.schedule(net.rng.randint(0, over_ms), self._turn_event(net))
        if self.removal_due:
            net.schedule(net.rng.randint(over_ms // 4, over_ms), self._removal_event(net))

    def _turn_event(self, net: SimHost) -> Callable[[], None]:
        def turn() -> None:
            endpoint = net.live_endpoint(self.index)
            move = None
            if endpoint is not None:
                replica = endpoint.replica(net.space_id)
                move = self.member.move(replica, net.neighbours(self.index), time=net.now)
            if move is not None:
                self.play(net, replica, move)
            elif net.faults_active:
                # Down, not yet holding its grant, or nobody to tell: it tries a little later.
                net.schedule(net.rng.randint(50, 300), turn)

        return turn

    def play(self, net: SimHost, replica: Replica, move: Move) -> None:
        """Offer ``move.offer`` to its own replica (what that accepts it executes and relays);
        what it refuses goes to every neighbour, and ``move.inject`` to the neighbours named,
        ahead of anything the sessions send."""
        self.moves += 1
        inject = list(move.inject)
        if move.offer:
            refused = {r.delta_id for r in replica.receive(move.offer).rejected}
            wires = tuple(w for w in move.offer if decode_delta(w).id in refused)
            if wires:
                inject.extend((n, wires) for n in net.neighbours(self.index))
        for target, wires in inject:
            net.inject(self.index, target, deltas_frame(net.space_id, wires))
        net.flush(self.index)

    def _removal_event(self, net: SimHost) -> Callable[[], None]:
        def remove() -> None:
            creator = net.live_endpoint(0)
            if creator is None:
                net.schedule(net.rng.randint(50, 300), remove)
                return
            victim = members.remove_command(self.member.identity.endpoint_id)
            creator.create(net.space_id, [victim], time=net.now)
            self.removal_due = False
            net.flush(0)

        return remove

    def report(self, net: SimHost) -> dict[str, Any]:
        """Who it was, whether it ended removed (as its own replica knows) and what it tried."""
        endpoint = net.live_endpoint(self.index)
        removed = endpoint is not None and endpoint.replica(net.space_id).role() is None
        return {
            "index": self.index,
            "role": self.role,
            "removed": removed,
            "moves": self.moves,
            "attacks": dict(sorted(self.member.counts.items())),
        }
