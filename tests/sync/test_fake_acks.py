"""Fake acks and pending floods: a member claiming to hold everything, or flooding deltas that
can never be accepted, neither slows an honest catch-up nor shows anything as delivered that it
could not have.

``h`` catches up from ``o`` while ``a``, a member, is connected to ``h`` too. The attacking ``a``
replaces every acknowledgement it sends ``h`` with one claiming a huge seq of every member,
never ends a stream that ``h``'s repair requests ask for, and sends with every batch deltas of
made-up creators that wait for deltas nobody has. In each round every link moves about one
frame each way and every endpoint ticks once; what ``h`` executed after each round is compared
with a run where ``a`` behaves -- they must be the same, round for round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pspace.core.delta import make_body
from p2pspace.core.identity import Identity
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.node.acks import AckBook
from p2pspace.sync.endpoint import MAX_FETCH_WAIT, Endpoint
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.messages import (
    Ack,
    Deltas,
    Revision,
    Synced,
    decode_message,
    encode_message,
)
from p2pspace.sync.session import Session
from p2pspace.sync.space_link import CATCH_UP_PATIENCE, MAX_LAG_TRIES
from p2pspace.testing.loopback import Link, connect
from tests.sync.endpoints import Net, crafted, space_of, wires_of
from tests.tools.forum import make_forum

CLAIM = 10**9  # "I hold everything"
Filter = Callable[[bytes], bytes]


class Attacker:
    """Rewrites what the attacking endpoint sends: its Acks claim :data:`CLAIM` of every member
    (a fresh digest each time), one more such Ack goes with every batch, and -- if
    ``withhold`` -- once its first stream ended it sends no deltas but ``flood`` and no Synced
    (the streams its victim's repairs ask for never end)."""

    def __init__(
        self,
        space: bytes,
        members: list[bytes],
        *,
        withhold: bool = True,
        flood: list[bytes] | None = None,
    ) -> None:
        self.space = space
        self.claim = tuple(sorted((m, CLAIM) for m in members))
        self.withhold = withhold
        self.flood = flood or []  # wires sent a few at a time with every batch
        self.synced = 0
        self.acks = 0
        self._decoder = FrameDecoder()

    def fake_ack(self) -> bytes:
        self.acks += 1
        digest = self.acks.to_bytes(32, "big")
        return frame(encode_message(Ack(space=self.space, vector=self.claim, digest=digest)))

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        for payload in self._decoder.feed(data):
            message = decode_message(payload)
            if isinstance(message, Ack):
                continue
            if isinstance(message, Synced):
                self.synced += 1
                if self.withhold and self.synced > 1:
                    continue
            if self.withhold and self.synced and isinstance(message, Deltas):
                continue  # nothing but the flood once its first stream ended
            out += frame(payload)
        if self.flood:
            batch, self.flood = self.flood[:40], self.flood[40:]
            out += frame(encode_message(Deltas(space=self.space, wires=tuple(batch))))
        return bytes(out + self.fake_ack())


def flood(space: bytes, count: int) -> list[bytes]:
    """Signed deltas of ``count`` made-up creators, each waiting for its creator's first (a
    member's flood of its own deltas is :mod:`tests.core.test_pending_bounds`'s)."""
    wires = []
    for i in range(count):
        sybil = Identity.from_seed(f"sybil-{i}".encode())
        delta = make_body(
            space=space,
            creator=sybil.endpoint_id,
            seq=2,
            rank=5,
            deps={},
            prev=b"\x09" * 32,
            time=5,
            commands=[rdb.create("t", f"f{i}", {"v": "x" * 2000})],
        )
        wires.append(delta.with_signature(sybil.sign(delta.body)).wire())
    return wires


class Counter:
    """Counts the Revisions an endpoint sends (passes everything on)."""

    def __init__(self) -> None:
        self.revisions = 0
        self._decoder = FrameDecoder()

    def __call__(self, data: bytes) -> bytes:
        for payload in self._decoder.feed(data):
            self.revisions += isinstance(decode_message(payload), Revision)
        return data


Links = list[tuple[Link, Filter | None, Filter | None]]


def step(links: Links, budget: int) -> bool:
    """Deliver up to about ``budget`` bytes each way on every link; a link's filters rewrite
    what its ``a`` (first) and ``b`` (second) send. True if anything moved."""
    moved = False
    for link, from_a, from_b in links:
        data = link.a.data_to_send(budget)
        if data:
            moved = True
            link.eb.receive_data(link.b, from_a(data) if from_a else data)
        data = link.b.data_to_send(budget)
        if data:
            moved = True
            link.ea.receive_data(link.a, from_b(data) if from_b else data)
    return moved


def pump(links: Links) -> None:
    """Deliver bytes both ways until idle."""
    for _ in range(10_000):
        if not step(links, 1 << 20):
            return
    raise AssertionError("links still busy")


def session_to(endpoint: Endpoint, peer: Endpoint) -> Session:
    (session,) = [s for s in endpoint.sessions if s.peer == peer.endpoint_id]
    return session


def catch_up(root: Path, *, attack: bool) -> tuple[list[int], list[int]]:
    """``h`` catches up 5,000 deltas from ``o`` while ``o`` keeps writing; a round moves about
    one frame each way on each link (so the catch-up takes rounds) and ticks every endpoint. Returns
    ``h``'s executed count after each round, and the rounds in which ``h``'s merges were held
    back."""
    net = Net(root)
    try:
        (o, h, a), space = space_of(net, "o", "h", "a")
        for i in range(10):
            batch = [[rdb.set_fields("t", "r", {"v": i * 500 + k})] for k in range(500)]
            o.create_many(space, batch, time=10 + i)
        pump([(connect(o, a), None, None)])
        members = [e.endpoint_id for e in (o, h, a)]
        attacker = Attacker(space, members, flood=flood(space, 1500)) if attack else None
        links = [(connect(h, o), None, None), (connect(h, a), None, attacker)]
        executed: list[int] = []
        held: list[int] = []
        for round_ in range(150):
            if round_ < 100:
                o.create(space, [rdb.set_fields("t", "r", {"v": f"live{round_}"})], time=round_)
            step(links, 4096)
            for e in (o, h, a):
                e.tick()
            executed.append(h.replica(space).executed_count())
            if h.catching_up(space):
                held.append(round_)
        assert h.replica(space).vector == o.replica(space).vector
        if attacker is not None:
            assert attacker.acks > 30 and attacker.synced > 1  # the attack ran throughout
            assert not attacker.flood
            buffer = h.replica(space).buffer
            assert buffer.dropped > 0  # the flood outgrew its room ...
            assert buffer.stranger_count <= buffer.limits.max_stranger_pending  # ... and stays
        return executed, held
    finally:
        net.close()


def test_fake_acks_do_not_slow_an_honest_catch_up(tmp_path: Path) -> None:
    honest, held_honest = catch_up(tmp_path / "honest", attack=False)
    attacked, held_attacked = catch_up(tmp_path / "attacked", attack=True)
    assert attacked == honest
    assert held_attacked == held_honest


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def test_claims_ahead_of_us_are_repaired_a_bounded_number_of_times(net: Net) -> None:
    (o, h, a), space = space_of(net, "o", "h", "a")
    pump([(connect(o, a), None, None)])
    attacker = Attacker(space, [o.endpoint_id, h.endpoint_id, a.endpoint_id], withhold=False)
    revisions = Counter()
    links = [(connect(h, o), None, None), (connect(h, a), revisions, attacker)]
    pump(links)
    first = revisions.revisions
    for _ in range(400):
        for e in (o, h, a):
            e.tick()
        pump(links)
    assert revisions.revisions - first == MAX_LAG_TRIES
    # Nothing held h back meanwhile, and its own deltas still go out: the claim that peers
    # hold more of them than h made stopped counting once the repairs came back empty.
    assert not h.catching_up(space)
    h.create(space, [rdb.create("t", "mine", {"v": 1})], time=99)
    pump(links)
    assert o.replica(space).vector == h.replica(space).vector


class Trickle:
    """Rewrites what the attacking endpoint sends: no Synced ever, and with every batch a
    duplicate of a delta its victim holds (a stream that looks alive and brings nothing)."""

    def __init__(self, space: bytes, duplicate: bytes) -> None:
        self.space = space
        self.duplicate = duplicate
        self._decoder = FrameDecoder()

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        for payload in self._decoder.feed(data):
            if not isinstance(decode_message(payload), Synced):
                out += frame(payload)
        wires = (self.duplicate,)
        return bytes(out + frame(encode_message(Deltas(space=self.space, wires=wires))))


def test_a_stream_that_brings_nothing_new_stops_holding_merges_back(net: Net) -> None:
    (o, h, a), space = space_of(net, "o", "h", "a")
    for i in range(5):
        o.create(space, [rdb.set_fields("t", "r", {"v": i})], time=10 + i)
    pump([(connect(o, a), None, None)])
    trickle = Trickle(space, wires_of(o.replica(space))[-1])
    links = [(connect(h, a), None, trickle)]
    pump(links)
    # a's stream came, its end never does: h staged it, waiting to merge.
    assert h.replica(space).accepted_vector() == o.replica(space).vector
    assert h.catching_up(space) and h.replica(space).staged_count
    for _ in range(CATCH_UP_PATIENCE + 1):
        for e in (o, h, a):
            e.tick()
        pump(links)
    assert not h.catching_up(space)
    assert h.replica(space).vector == o.replica(space).vector  # executed, not staged


def test_claims_count_only_for_what_existed_when_made(net: Net) -> None:
    (o, h, a), space = space_of(net, "o", "h", "a")
    pump([(connect(o, a), None, None)])
    attacker = Attacker(space, [o.endpoint_id, h.endpoint_id, a.endpoint_id])
    links = [(connect(h, o), None, None), (connect(h, a), None, attacker)]
    pump(links)
    for e in (o, h, a):
        e.tick()
    pump(links)
    view = session_to(h, a).link(space)
    assert view is not None
    accepted = h.replica(space).accepted_vector()
    assert view.acked == {c: s for c, s in accepted.items() if c != a.endpoint_id}
    # Made after the claim: not held by a on its strength.
    links[1] = (links[1][0], lambda data: b"", lambda data: b"")  # a's link goes quiet
    delta = o.create(space, [rdb.create("t", "later", {"v": 1})], time=50)
    pump(links)
    assert h.replica(space).vector[o.endpoint_id] == delta.seq
    assert not session_to(h, a).peer_has(space, o.endpoint_id, delta.seq)
    assert session_to(h, a).acked(space)[o.endpoint_id] < delta.seq


def test_delivered_to_k_of_n_counts_no_fake_ack(tmp_path: Path) -> None:
    opened: list[Endpoint] = []
    try:
        forum = make_forum(tmp_path, ["h", "o", "a"], opened)
        h, o, a = (m.endpoint for m in forum.members)
        forum.connect(0, 1)
        forum.connect(0, 2)
        store = Store(tmp_path / "acks.sqlite3", durability="normal")
        book = AckBook(store)
        # a claims everything once, then goes quiet (its link to h no longer moves).
        attacker = Attacker(forum.space, [h.endpoint_id, o.endpoint_id, a.endpoint_id])
        h.receive_data(session_to(h, a), attacker.fake_ack())
        forum.links = [link for link in forum.links if a not in (link.ea, link.eb)]
        topic = forum.members[1].tool.post("hello", "")  # by o, after a's claim
        forum.sync()
        for session in h.sessions:  # what a node keeps of its sessions' acks, across runs
            for view in session.links():
                if session.peer is not None and view.acked:
                    book.note(view.space, session.peer, view.acked)
        book.flush()
        store.close()
        status = forum.members[0].tool.get(topic).status
        assert status.describe() == "delivered to 2 of 3"  # h and o; not a
        post_seq = h.replica(forum.space).vector[o.endpoint_id]
        store = Store(tmp_path / "acks.sqlite3", durability="normal")
        stored = AckBook(store).acked(forum.space)
        store.close()
        assert stored[a.endpoint_id].get(o.endpoint_id, 0) < post_seq
    finally:
        for e in opened:
            e.close()


def test_a_trickle_cannot_hold_merges_back_while_others_keep_writing(net: Net) -> None:
    """The trickler never ends its stream and resends one duplicate a tick, while an honest
    member writes every 3 s: the others' progress is not the trickler's, so the catch-up
    patience ends the wait, and every honest delta executes."""
    (o, h, a), space = space_of(net, "o", "h", "a")
    for i in range(5):
        o.create(space, [rdb.set_fields("t", "r", {"v": i})], time=10 + i)
    pump([(connect(o, a), None, None)])
    trickle = Trickle(space, wires_of(o.replica(space))[-1])
    links = [(connect(h, a), None, trickle), (connect(h, o), None, None)]
    pump(links)
    held = 0
    for t in range(20 * CATCH_UP_PATIENCE):
        if t % 30 == 0:
            o.create(space, [rdb.set_fields("t", "x", {"v": t})], time=100 + t)
        for endpoint in (o, h, a):
            endpoint.tick()
        pump(links)
        held += h.catching_up(space)
    assert held <= CATCH_UP_PATIENCE + 2
    assert h.replica(space).staged_count == 0
    assert h.replica(space).vector == o.replica(space).vector


def test_a_range_nobody_answers_is_asked_for_ever_less_often(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member sends its second delta but never its first: the receiver asks for the gap
    with backoff (at most every MAX_FETCH_WAIT ticks), not once a tick forever."""
    (o, h, m), space = space_of(net, "o", "h", "m")
    links = [(connect(o, h), None, None), (connect(m, h), None, None)]
    pump(links)
    first = crafted(m, o.replica(space), record="one")
    second = crafted(m, o.replica(space), record="two", after=first)
    h.receive(h.replica(space), [second.wire()])
    assert h.replica(space).pending_count == 1
    asked: list[tuple[bytes, int, int]] = []
    real = Session.send_fetch

    def counting(self: Session, space_id: bytes, ranges: list[tuple[bytes, int, int]]) -> None:
        asked.extend(r for r in ranges if r[0] == m.endpoint_id)
        real(self, space_id, ranges)

    monkeypatch.setattr(Session, "send_fetch", counting)
    ticks = 200
    for _ in range(ticks):
        for endpoint in (o, h):
            endpoint.tick()
        pump(links[:1])  # m is silent from now on: nobody has its first delta
    assert asked and len(asked) <= 5 + ticks // MAX_FETCH_WAIT
    assert h.replica(space).pending_count == 1
