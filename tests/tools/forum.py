"""Endpoints sharing a space with the discussion tool, linked in process, for the tool's tests.

Endpoints are real (own home, SQLite store); two of them talk the real sync protocol over
:mod:`p2pspace.testing.loopback`. Clocks and id randomness are seeded, so every run makes the same
ids and the same order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pspace.core.delta import Delta
from p2pspace.core.replica import Replica
from p2pspace.engines import members, rdb
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing.loopback import Link, connect, pump
from p2pspace.tools.discussion import INSTANCE, ChangeEvent, Discussion

ENGINES = {"db": "rdb", INSTANCE: "rdb"}


class Clock:
    """Milliseconds that move forward by one on every reading (or stay put while ``frozen``)."""

    def __init__(self, start: int = 1_000) -> None:
        self.t = start
        self.frozen = False

    def __call__(self) -> int:
        if not self.frozen:
            self.t += 1
        return self.t


def session_acks(endpoint: Endpoint, space: bytes) -> dict[bytes, dict[bytes, int]]:
    """What each connected peer acknowledged for ``space`` (what a node keeps, in miniature)."""
    return {
        s.peer: dict(s.acked(space))
        for s in endpoint.sessions
        if s.peer is not None and s.syncs(space)
    }


@dataclass
class Member:
    endpoint: Endpoint
    tool: Discussion
    deltas: list[Delta] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)

    @property
    def replica(self) -> Replica:
        return self.tool.replica

    @property
    def view(self) -> rdb.RdbView:
        return rdb.view(self.replica, INSTANCE)


@dataclass
class Forum:
    """Endpoints sharing one space with the discussion tool; ``links`` between connected ones."""

    space: bytes
    members: list[Member]
    clock: Clock
    links: list[Link] = field(default_factory=list)

    def connect(self, a: int, b: int) -> None:
        self.links.append(connect(self.members[a].endpoint, self.members[b].endpoint))
        self.sync()

    def sync(self) -> None:
        """Deliver everything, then let every endpoint send its acks and deliver those."""
        pump(self.links)
        for m in self.members:
            m.endpoint.tick()
        pump(self.links)

    def disconnect(self) -> None:
        for m in self.members:
            for session in list(m.endpoint.sessions):
                m.endpoint.close_session(session)
        self.links.clear()


def make_forum(root: Path, names: list[str], opened: list[Endpoint]) -> Forum:
    """Endpoints (appended to ``opened``, for closing) sharing a space with the discussion."""
    clock = Clock()
    endpoints = [
        open_endpoint(root / n, seed=n.encode(), name=n, durability="normal") for n in names
    ]
    opened.extend(endpoints)
    first = endpoints[0]
    replica = first.create_space("forum", time=1, engines=ENGINES, nonce=b"\x07" * 16)
    space = replica.space_id
    if len(endpoints) > 1:
        adds = [
            members.add_command(member_id=e.endpoint_id, key=e.identity.public_key, name=e.name)
            for e in endpoints[1:]
        ]
        first.create(space, adds, time=2)
    for e in endpoints[1:]:
        e.join_space(replica.genesis.wire())
    forum = Forum(space=space, members=[], clock=clock)
    for i, e in enumerate(endpoints):
        forum.members.append(_member(e, space, clock, random.Random(i).randbytes))
    return forum


def _member(endpoint: Endpoint, space: bytes, clock: Clock, rand: Callable[[int], bytes]) -> Member:
    replica = endpoint.replica(space)
    member: Member

    def commit(commands: Any) -> Delta:
        delta = endpoint.create(space, commands, time=clock.t)
        member.deltas.append(delta)
        return delta

    tool = Discussion(
        replica,
        commit=commit,
        now=clock,
        acks=lambda: session_acks(endpoint, space),
        random=rand,
    )
    member = Member(endpoint=endpoint, tool=tool)
    replica.listeners.append(
        lambda _r, executed: member.events.extend(tool.executed(d for d, _w in executed))
    )
    return member


def shape(tool: Discussion, topic: str) -> list[tuple[int, str, str, str, bool]]:
    return [(d, p.id, p.title, p.body, p.deleted) for d, p in tool.walk(topic)]


def snapshot(m: Member) -> tuple[dict[bytes, int], str]:
    return dict(m.replica.vector), m.replica.state_digest()


def raw_create(m: Member, forum: Forum, table: str, record: str, fields: dict[str, Any]) -> Delta:
    """An owned create that ``m``'s software writes straight into the tool's instance, bypassing
    the tool (what a member running other software can replicate)."""
    command = rdb.create(table, record, fields, instance=INSTANCE, owned=True)
    return m.endpoint.create(forum.space, [command], time=forum.clock.t)


def post_fields(m: Member, **fields: Any) -> dict[str, Any]:
    """The fields of a post by ``m`` in its next delta, as the tool writes them."""
    me = m.endpoint.endpoint_id
    base = {"body": "", "author": me, "created": 0, "edited": 0, "deleted": False}
    return {**base, "rev": [me, m.replica.vector.get(me, 0) + 1], **fields}
