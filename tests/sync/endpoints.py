"""Endpoints for sync tests: a few in one folder, sharing a space, linked back to back."""

from __future__ import annotations

from pathlib import Path

from p2pspace.core.causal import Limits
from p2pspace.core.delta import Delta, make_body
from p2pspace.core.replica import Replica
from p2pspace.engines import members, rdb
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import FrameDecoder
from p2pspace.sync.messages import Message, decode_message
from p2pspace.testing.loopback import Link, pump


class Net:
    """Endpoints opened under ``root`` (each with the identity its name seeds, unless told)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.endpoints: list[Endpoint] = []

    limits: Limits | None = None  # every endpoint's made from now on (None: the defaults)

    def endpoint(self, name: str, *, seed: bytes | None = None) -> Endpoint:
        seed = name.encode() if seed is None else seed
        ep = open_endpoint(
            self.root / name, seed=seed, durability="normal", name=name, limits=self.limits
        )
        self.endpoints.append(ep)
        return ep

    def close(self) -> None:
        for ep in self.endpoints:
            ep.close()


def add(owner: Endpoint, space: bytes, other: Endpoint, *, role: str = "participant") -> None:
    grant = members.add_command(
        member_id=other.endpoint_id, key=other.identity.public_key, name=other.name, role=role
    )
    owner.create(space, [grant], time=2)


def space_of(net: Net, *names: str) -> tuple[list[Endpoint], bytes]:
    """Endpoints ``names``; the first creates a space and adds the others (participants)."""
    eps = [net.endpoint(n) for n in names]
    replica = eps[0].create_space("s", time=1, nonce=b"\x02" * 16)
    for other in eps[1:]:
        add(eps[0], replica.space_id, other)
    # Everyone was added up front, so any of them may bring a joiner its grant.
    everyone = [e.endpoint_id for e in eps]
    for other in eps[1:]:
        other.join_space(replica.genesis.wire(), sponsors=everyone)
    return eps, replica.space_id


def disconnect(*eps: Endpoint) -> None:
    for ep in eps:
        for session in list(ep.sessions):
            ep.close_session(session)


def settle(links: list[Link], eps: list[Endpoint], space: bytes, *, ticks: int = 40) -> int:
    """Pump ``links`` and tick ``eps`` until their replicas of ``space`` executed the same
    deltas; returns the ticks it took (relayed deltas travel on announcements and fetches,
    which ticks drive). Raises AssertionError if ``ticks`` were not enough."""
    for used in range(ticks + 1):
        pump(links)
        vectors = [e.replica(space).vector for e in eps]
        if all(v == vectors[0] for v in vectors):
            return used
        for e in eps:
            e.tick()
    raise AssertionError(f"not converged after {ticks} ticks")


def same(a: Replica, b: Replica) -> None:
    assert a.vector == b.vector
    assert a.order_digest() == b.order_digest()
    assert a.state_digest() == b.state_digest()


def wires_of(replica: Replica) -> list[bytes]:
    return [wire for _c, _s, _r, wire in replica.store.iter_log(replica.space_id)]


def crafted(
    author: Endpoint, replica: Replica, *, record: str, after: Delta | None = None
) -> Delta:
    """A signed delta by ``author`` creating ``record``, whatever ``author``'s own replica
    would allow: its first (or the one ``after`` its delta ``after``), depending on
    ``replica``'s whole executed vector."""
    deps = {c: s for c, s in replica.vector.items() if c != author.endpoint_id}
    ranks = [replica.store.delta_info(replica.space_id, c, s) for c, s in deps.items()]
    top = max([info[0] for info in ranks if info is not None] + [after.rank if after else 0])
    delta = make_body(
        space=replica.space_id,
        creator=author.endpoint_id,
        seq=after.seq + 1 if after else 1,
        rank=top + 1,
        deps=deps,
        prev=after.hash if after else b"",
        time=5,
        commands=[rdb.create("t", record, {"v": record})],
    )
    return delta.with_signature(author.identity.sign(delta.body))


def messages(data: bytes) -> list[Message]:
    """The messages in a run of frames."""
    return [decode_message(p) for p in FrameDecoder().feed(data)]
