"""Bounded members: a flood into the pending set evicts only the flooder's deltas.

A receiver ``r`` holds an honest member's pending deltas (they wait for the member's first
delta) while a member floods it -- with its own deltas, with deltas of made-up creators, or with
one creator's deltas relayed by many peers. The honest deltas stay pending, the fetch for what
they wait for is still planned (first), and the pending set stays within its count and byte
bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from p2pspace.core.causal import Limits
from p2pspace.core.delta import Delta, DeltaId, make_body
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from tests.helpers.replicas import wires_of

BLOB = "x" * 16_000


@dataclass
class Scene:
    owner: Replica
    r: Replica  # the receiver
    honest: Identity
    flooder: Identity
    honest_wires: list[bytes]  # honest:1.. in order; r got all but the first

    @property
    def honest_id(self) -> bytes:
        return self.honest.endpoint_id

    def honest_pending(self) -> set[DeltaId]:
        return {d for d in self.r.buffer.pending_ids() if d.creator == self.honest_id}


def build(
    space: Replica,
    creator: Identity,
    *,
    seq: int,
    rank: int,
    prev: bytes,
    blob: str = "",
    signed: bool = True,
) -> Delta:
    fields: dict[str, object] = {"v": seq, "blob": blob} if blob else {"v": seq}
    delta = make_body(
        space=space.space_id,
        creator=creator.endpoint_id,
        seq=seq,
        rank=rank,
        deps={},
        prev=prev,
        time=10,
        commands=[rdb.create("t", f"{creator.endpoint_id.hex()[:8]}-{seq}", fields)],
    )
    return delta.with_signature(creator.sign(delta.body)) if signed else delta


def scene(make_store: Callable[[str], Store], ids: list[Identity], limits: Limits) -> Scene:
    owner_id, flooder, honest, receiver = ids[0], ids[1], ids[2], ids[3]
    owner = Replica.create_space(make_store("o"), owner_id, name="s", time=1, nonce=b"\x05" * 16)
    owner.create(
        [
            members.add_command(member_id=m.endpoint_id, key=m.public_key, name=f"m{n}")
            for n, m in enumerate((flooder, honest, receiver))
        ],
        time=2,
    )
    h = Replica.join(make_store("h"), honest, owner.genesis.wire())
    assert h.receive(wires_of(owner)).executed
    for i in range(5):
        h.create([rdb.create("t", f"h{i}", {"v": i})], time=3 + i)
    honest_wires = [w for w in wires_of(h) if w not in set(wires_of(owner))]
    r = Replica.join(make_store("r"), receiver, owner.genesis.wire(), limits=limits)
    assert r.receive(wires_of(owner)).executed
    result = r.receive(honest_wires[1:], sender=honest.endpoint_id)
    assert not result.executed and not result.rejected
    return Scene(owner=owner, r=r, honest=honest, flooder=flooder, honest_wires=honest_wires)


def assert_honest_survived(s: Scene) -> None:
    assert s.honest_pending() >= {DeltaId(s.honest_id, seq) for seq in range(2, 6)}
    # What they wait for is asked for (a forger's deltas under the same id may lengthen the
    # range, never drop it) ...
    assert any(c == s.honest_id and first == 1 for c, first, _last in s.r.missing())
    # ... and once what they wait for comes, they all execute.
    result = s.r.receive(s.honest_wires[:1], sender=s.honest_id)
    assert [d.seq for d in result.executed if d.creator == s.honest_id] == [1, 2, 3, 4, 5]


def assert_within(r: Replica, limits: Limits) -> None:
    assert r.pending_count <= limits.max_pending
    assert r.buffer.pending_bytes <= limits.max_pending_bytes


def test_a_members_own_flood_evicts_only_its_own_deltas(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    limits = Limits(max_pending=100)
    s = scene(make_store, identities, limits)
    # Every other seq, so each waits for one that never comes.
    for seq in range(2, 2000, 2):
        delta = build(s.owner, s.flooder, seq=seq, rank=seq + 3, prev=bytes([seq % 251]) * 32)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
        assert_within(s.r, limits)
    assert s.r.pending_count == limits.max_pending
    assert s.r.buffer.dropped == 999 - (limits.max_pending - 4)
    assert_honest_survived(s)


def test_made_up_creators_are_kept_only_within_a_small_bound(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    limits = Limits()
    s = scene(make_store, identities, limits)
    sybils = [Identity.from_seed(f"sybil-{i}".encode()) for i in range(600)]
    for sybil in sybils:
        # Large, each waiting for its creator's first delta: 600 ranges and ~10 MB if kept.
        delta = build(s.owner, sybil, seq=2, rank=4, prev=b"\x01" * 32, blob=BLOB)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
        assert s.r.buffer.stranger_count <= limits.max_stranger_pending
        assert s.r.buffer.stranger_bytes <= limits.max_stranger_pending_bytes
    assert 0 < s.r.buffer.stranger_count <= limits.max_stranger_pending
    assert s.r.pending_count == 4 + s.r.buffer.stranger_count
    assert s.r.buffer.pending_bytes <= 4 * 1024 + limits.max_stranger_pending_bytes
    missing = s.r.missing()
    assert len(missing) <= limits.max_fetch_ranges
    # Creators with a grant are asked for first: the flood cannot crowd them out.
    assert missing[0] == (s.honest_id, 1, 1)
    assert_honest_survived(s)


def test_a_stranger_arrival_never_evicts_members_deltas(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    limits = Limits(max_pending=10, max_stranger_pending=3)
    s = scene(make_store, identities, limits)
    for seq in range(2, 14, 2):  # six of the flooder's own: the set holds 10
        delta = build(s.owner, s.flooder, seq=seq, rank=seq + 3, prev=b"\x02" * 32)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
    assert s.r.pending_count == 10
    members_before = set(s.r.buffer.pending_ids())
    for i in range(20):
        sybil = Identity.from_seed(f"sybil-{i}".encode())
        delta = build(s.owner, sybil, seq=2, rank=4, prev=b"\x01" * 32)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
        assert set(s.r.buffer.pending_ids()) == members_before  # no room: the stranger goes
    assert_honest_survived(s)


def test_one_creators_flood_through_many_peers_evicts_only_that_creator(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    limits = Limits(max_pending=60)
    s = scene(make_store, identities, limits)
    # So many relays that each holds fewer of the flood than the honest peer holds of its own.
    relays = [i.to_bytes(16, "big") for i in range(1, 201)]
    for seq in range(2, 600, 2):
        delta = build(s.owner, s.flooder, seq=seq, rank=seq + 3, prev=b"\x03" * 32)
        s.r.receive([delta.wire()], sender=relays[seq % len(relays)])
        assert_within(s.r, limits)
    assert_honest_survived(s)


def test_forged_unsigned_deltas_of_an_honest_creator_evict_only_the_forgers(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    # Anyone can make an unsigned delta under any member's id (it waits for a signed successor
    # to chain to it): the honest creator's partition holds them too, yet they are the sender's.
    limits = Limits(max_pending=50)
    s = scene(make_store, identities, limits)
    for seq in range(10, 500):
        forged = build(s.owner, s.honest, seq=seq, rank=seq, prev=b"\x07" * 32, signed=False)
        s.r.receive([forged.wire()], sender=s.flooder.endpoint_id)
        assert_within(s.r, limits)
    assert_honest_survived(s)


def test_the_byte_bound_holds_and_evicts_the_flood(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    limits = Limits(max_pending_bytes=1_000_000)
    s = scene(make_store, identities, limits)
    for seq in range(2, 400, 2):
        delta = build(s.owner, s.flooder, seq=seq, rank=seq + 3, prev=b"\x04" * 32, blob=BLOB)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
        assert_within(s.r, limits)
    assert s.r.buffer.pending_bytes > limits.max_pending_bytes - 2 * len(BLOB) - 1024
    assert_honest_survived(s)


def test_fetch_planning_costs_one_step_per_waiting_creator(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    s = scene(make_store, identities, Limits())
    for seq in range(2, 8000, 2):
        delta = build(s.owner, s.flooder, seq=seq, rank=seq + 3, prev=b"\x05" * 32)
        s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
    assert s.r.pending_count == 3999 + 4
    looked_up: list[bytes] = []

    def accepted_seq(creator: bytes) -> int:
        looked_up.append(creator)
        return s.r.buffer.accepted_seq(creator)

    ranges = s.r.buffer.pending.missing(accepted_seq, 64)
    assert sorted(ranges) == sorted([(s.honest_id, 1, 1), (s.flooder.endpoint_id, 1, 7998 - 1)])
    # Thousands of deltas wait; the plan looked at each waiting creator once.
    assert sorted(looked_up) == sorted([s.honest_id, s.flooder.endpoint_id])


@pytest.mark.parametrize("limit", [1, 2])
def test_more_waiting_creators_than_one_plan_names_are_asked_for_in_turn(
    make_store: Callable[[str], Store], identities: list[Identity], limit: int
) -> None:
    s = scene(make_store, identities, Limits(max_fetch_ranges=limit))
    delta = build(s.owner, s.flooder, seq=3, rank=6, prev=b"\x06" * 32)
    s.r.receive([delta.wire()], sender=s.flooder.endpoint_id)
    for i in range(3):
        sybil = Identity.from_seed(f"sybil-{i}".encode())
        s.r.receive([build(s.owner, sybil, seq=2, rank=4, prev=b"\x01" * 32).wire()])
    asked: set[bytes] = set()
    for _ in range(2):
        plan = s.r.missing()
        assert len(plan) == limit
        asked |= {creator for creator, _first, _last in plan}
    # Both members' ranges come before any made-up creator's, each in its turn.
    assert asked == {s.honest_id, s.flooder.endpoint_id}
