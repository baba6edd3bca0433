"""A space with one member of each role, for the tests of roles and removal.

``a`` founded the space (manager), ``m`` is a second manager, ``p`` a participant and ``g`` a
guest; every replica holds the same history when :func:`make_team` returns. Observers are
replicas of endpoints outside the space: they receive everything and create nothing, so two of
them can be fed the same deltas in two delivery orders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from p2pspace.core.causal import Rejection
from p2pspace.core.delta import Delta, DeltaId
from p2pspace.core.identity import Identity
from p2pspace.core.replica import ReceiveResult, Replica
from p2pspace.core.store import Store
from p2pspace.engines import members
from p2pspace.errors import RemoteProtocolError
from tests.helpers.replicas import wires_of

Snapshot = tuple[str, str, dict[bytes, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    a: Replica
    m: Replica
    p: Replica
    g: Replica
    ids: dict[str, Identity]
    make_store: Callable[[str], Store]

    def observer(self, name: str) -> Replica:
        """A replica of an endpoint outside the space, holding everything ``a`` executed so
        far: make it before the deltas it is to receive in a chosen order."""
        replica = Replica.join(self.make_store(name), self.ids["o"], self.a.genesis.wire())
        replica.receive(wires_of(self.a))
        return replica

    def id(self, who: str) -> bytes:
        return self.ids[who].endpoint_id


def make_team(make_store: Callable[[str], Store], identities: Sequence[Identity]) -> Team:
    ids = dict(zip("ampgo", identities, strict=True))
    a = Replica.create_space(make_store("a"), ids["a"], name="team", time=1, nonce=b"\x07" * 16)
    a.create(
        [
            members.add_command(
                member_id=ids[who].endpoint_id, key=ids[who].public_key, name=who, role=role
            )
            for who, role in (("m", "manager"), ("p", "participant"), ("g", "guest"))
        ],
        time=2,
    )
    replicas = {"a": a}
    for who in "mpg":
        replica = Replica.join(make_store(who), ids[who], a.genesis.wire())
        assert not replica.receive(wires_of(a)).rejected
        replicas[who] = replica
    return Team(
        a=a, m=replicas["m"], p=replicas["p"], g=replicas["g"], ids=ids, make_store=make_store
    )


def snapshot(replica: Replica) -> Snapshot:
    return replica.order_digest(), replica.state_digest(), dict(replica.vector)


def send(dst: Replica, *deltas: Delta) -> ReceiveResult:
    """Deliver ``deltas`` to ``dst`` in one call; nothing may be refused."""
    result = dst.receive([d.wire() for d in deltas])
    assert not result.rejected and not result.late_rejected, result
    return result


def sync(replicas: Iterable[Replica]) -> None:
    """Every replica receives everything every other one executed (until nothing changes)."""
    group = list(replicas)
    for _ in range(len(group)):
        for src in group:
            wires = wires_of(src)
            for dst in group:
                if dst is not src:
                    dst.receive(wires)


def assert_converged(*replicas: Replica) -> None:
    first = replicas[0]
    for other in replicas[1:]:
        assert other.vector == first.vector
        assert other.order_digest() == first.order_digest()
        assert other.state_digest() == first.state_digest()


def assert_refused(replica: Replica, delta: Delta, error: type[RemoteProtocolError]) -> Rejection:
    """Deliver ``delta`` to ``replica`` and check it is refused with ``error``
    (:func:`check_refused`)."""
    return check_refused(replica, delta, error, replica.receive([delta.wire()]))


def check_refused(
    replica: Replica,
    delta: Delta,
    error: type[RemoteProtocolError],
    result: ReceiveResult,
    *,
    late: bool = False,
) -> Rejection:
    """``delta`` was refused before storage with ``error``, blaming its creator and not the
    peer that relayed it: not stored, not pending, nothing of it executed. ``late``: it was
    offered by an earlier call (it waited for a dependency) and refused in ``result``'s."""
    rejections = result.late_rejected if late else result.rejected
    refused = [r for r in rejections if r.delta_id == delta.id]
    assert [type(r.error) for r in refused] == [error], result
    assert refused[0].error.blames_sender is False
    assert delta.id not in {d.id for d in result.executed}
    assert replica.store.delta_info(replica.space_id, *delta.id) is None
    assert replica.pending_count == 0
    assert replica.accepted_vector().get(delta.creator, 0) < delta.seq
    return refused[0]


def executed_ids(replica: Replica) -> set[DeltaId]:
    return {DeltaId(c, s) for c, s, _r, _w in replica.store.iter_log(replica.space_id)}
