"""Hostile input end to end: Replica.receive and Session.receive_data.

Every case checks the specific typed error, that the store did not change (log order, engine
state, executed vector) and that memory stayed bounded (the pending set).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command, Delta, DeltaId, decode_delta, make_body
from p2pspace.core.identity import Identity
from p2pspace.core.replica import ReceiveResult, Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import (
    AuthenticationError,
    BrokenChainError,
    EquivocationError,
    ErrorCode,
    ForgedDeltaError,
    MalformedError,
    NotMemberError,
    RankError,
    RemoteProtocolError,
    TooFarAheadError,
    WrongSpaceError,
)
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import MAX_FRAME, FrameDecoder, frame
from p2pspace.sync.messages import (
    MAX_RANGES,
    Deltas,
    Error,
    Fetch,
    Hello,
    decode_message,
    encode_message,
)
from p2pspace.sync.session import Session, State
from tests.helpers.replicas import wires_of

Snapshot = tuple[str, str, dict[bytes, int]]


def snapshot(replica: Replica) -> Snapshot:
    return replica.order_digest(), replica.state_digest(), dict(replica.vector)


def assert_bounded(replica: Replica) -> None:
    limits = replica.buffer.limits
    assert replica.pending_count <= limits.max_pending
    assert replica.buffer.pending_bytes <= limits.max_pending_bytes


def only_rejection(result: ReceiveResult) -> RemoteProtocolError:
    assert not result.executed
    assert result.duplicates == 0
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0].error


def build(
    replica: Replica,
    creator: Identity,
    *,
    seq: int,
    rank: int,
    deps: dict[bytes, int],
    prev: bytes = b"",
    commands: list[Command] | None = None,
    signer: Identity | None = None,
    signed: bool = True,
    time: int = 10,
) -> Delta:
    """A delta of ``replica``'s space, signed by ``signer`` (default: its creator)."""
    delta = make_body(
        space=replica.space_id,
        creator=creator.endpoint_id,
        seq=seq,
        rank=rank,
        deps=deps,
        prev=prev,
        time=time,
        commands=commands or [rdb.create("t", f"r{seq}", {"v": seq})],
    )
    if not signed:
        return delta
    return delta.with_signature((signer or creator).sign(delta.body))


def first_of_b(a: Replica, b_id: Identity, **kwargs: Any) -> Delta:
    """b's correctly formed first delta: it depends on the delta that added b (a:2, rank 2)."""
    fields: dict[str, Any] = {"seq": 1, "rank": 3, "deps": {a.genesis.creator: 2}}
    fields.update(kwargs)
    return build(a, b_id, **fields)


@pytest.fixture
def pair(
    space_pair: tuple[Replica, Replica], identities: list[Identity]
) -> tuple[Replica, Replica, Identity, Identity]:
    a, b = space_pair
    return a, b, identities[0], identities[1]


# -- sanity: the builders make valid deltas --------------------------------------------------


def test_builders_make_acceptable_deltas(pair: tuple[Replica, Replica, Identity, Identity]) -> None:
    a, _b, _a_id, b_id = pair
    before = snapshot(a)
    result = a.receive([first_of_b(a, b_id).wire()])
    assert not result.rejected
    assert [d.id for d in result.executed] == [DeltaId(b_id.endpoint_id, 1)]
    assert snapshot(a) != before
    assert rdb.view(a).get("t", "r1") == {"v": 1}


# -- malformed bytes -------------------------------------------------------------------------


def _malformed_wires(a: Replica) -> list[bytes]:
    good = wires_of(a)[1]
    body, signature = codec.decode(good)
    fields = codec.decode(body)
    wrong_seq_type = list(fields)
    wrong_seq_type[3] = "2"
    wrong_commands = list(fields)
    wrong_commands[8] = [["db", "create", {"table": 1}], 7]
    wrong_deps = list(fields)
    wrong_deps[5] = [[b"x" * 16, 1]]
    return [
        good[:-7],  # truncated CBOR
        good[: len(good) // 2],
        codec.encode([body[:-3], signature]),  # truncated body
        codec.encode([codec.encode(wrong_seq_type), signature]),  # wrong types in a body
        codec.encode([codec.encode(wrong_commands), signature]),
        codec.encode([codec.encode(wrong_deps), signature]),
        codec.encode([body, signature[:63]]),  # 63-byte signature
        codec.encode([body, "sig"]),
        b"\x82\x5b" + b"\xff" * 8,  # huge declared lengths
        b"\x82\x5b\x00\x00\x00\x00\xff\xff\xff\xff",
        codec.encode([b"\x89\x01\x5b" + b"\xff" * 8, None]),
        b"\x9b" + b"\xff" * 8,
        b"\xbb" + b"\xff" * 8,
        b"",
        b"\x00",
    ]


def test_malformed_wires_are_rejected_and_change_nothing(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, _a_id, _b_id = pair
    for replica in (a, b):
        for wire in _malformed_wires(a):
            before = snapshot(replica)
            result = replica.receive([wire])
            error = only_rejection(result)
            assert isinstance(error, MalformedError), (wire, error)
            assert error.code == ErrorCode.MALFORMED
            assert result.rejected[0].delta_id is None
            assert snapshot(replica) == before
            assert replica.pending_count == 0


def test_malformed_wires_in_a_batch_do_not_stop_valid_ones(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, _b, _a_id, b_id = pair
    hostile = _malformed_wires(a)
    result = a.receive([*hostile, first_of_b(a, b_id).wire(), *hostile])
    assert len(result.rejected) == 2 * len(hostile)
    assert all(isinstance(r.error, MalformedError) for r in result.rejected)
    assert [d.id for d in result.executed] == [DeltaId(b_id.endpoint_id, 1)]


# -- authenticity ----------------------------------------------------------------------------


def test_forged_signature(
    pair: tuple[Replica, Replica, Identity, Identity], identities: list[Identity]
) -> None:
    a, _b, _a_id, b_id = pair
    mallory = identities[2]
    before = snapshot(a)
    result = a.receive([first_of_b(a, b_id, signer=mallory).wire()])
    error = only_rejection(result)
    assert isinstance(error, ForgedDeltaError)
    assert error.code == ErrorCode.BAD_SIGNATURE
    assert snapshot(a) == before
    assert_bounded(a)
    assert a.pending_count == 0
    # The genuine delta is still accepted afterwards: the forgery held no slot.
    assert a.receive([first_of_b(a, b_id).wire()]).executed


def test_tampered_body_with_original_signature(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, _b, _a_id, b_id = pair
    genuine = first_of_b(a, b_id)
    tampered = first_of_b(a, b_id, commands=[rdb.create("t", "r1", {"v": "evil"})], signed=False)
    assert genuine.signature is not None
    wire = codec.encode([tampered.body, genuine.signature])
    before = snapshot(a)
    error = only_rejection(a.receive([wire]))
    assert isinstance(error, ForgedDeltaError)
    assert snapshot(a) == before
    assert a.pending_count == 0


def test_tampered_copy_of_an_executed_delta(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, _b_id = pair
    add_b = decode_delta(wires_of(a)[1])
    assert add_b.signature is not None
    tampered = build(a, a_id, seq=2, rank=2, deps={}, prev=a.genesis.hash, signed=False)
    wire = codec.encode([tampered.body, add_b.signature])
    before = snapshot(b)
    error = only_rejection(b.receive([wire]))
    assert isinstance(error, ForgedDeltaError)
    assert not isinstance(error, EquivocationError)
    assert snapshot(b) == before
    assert not b.store.evidence(b.space_id)


def test_wrong_rank(pair: tuple[Replica, Replica, Identity, Identity]) -> None:
    a, _b, _a_id, b_id = pair
    before = snapshot(a)
    error = only_rejection(a.receive([first_of_b(a, b_id, rank=4).wire()]))
    assert isinstance(error, RankError)
    assert error.code == ErrorCode.BAD_RANK
    assert snapshot(a) == before
    # One too low breaks "every dependency seq is below the rank": malformed.
    low = first_of_b(a, b_id, signed=False)
    fields = codec.decode(low.body)
    fields[4] = 2
    body = codec.encode(fields)
    error = only_rejection(a.receive([codec.encode([body, b_id.sign(body)])]))
    assert isinstance(error, MalformedError)
    assert snapshot(a) == before
    assert a.pending_count == 0


def test_rank_one_below_on_a_second_delta(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, _b, _a_id, b_id = pair
    b1 = first_of_b(a, b_id)
    assert a.receive([b1.wire()]).executed
    before = snapshot(a)
    for rank in (3, 5):  # the right rank is 4
        wrong = build(a, b_id, seq=2, rank=rank, deps={}, prev=b1.hash)
        error = only_rejection(a.receive([wrong.wire()]))
        assert isinstance(error, RankError), rank
        assert snapshot(a) == before
    assert a.receive([build(a, b_id, seq=2, rank=4, deps={}, prev=b1.hash).wire()]).executed


def test_wrong_rank_on_the_creators_own_chain(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, _b_id = pair
    # a's next delta: seq 3, prev = hash of a:2, rank must be 3.
    head = decode_delta(wires_of(a)[1])
    for rank in (4, 10):
        wrong = build(b, a_id, seq=3, rank=rank, deps={}, prev=head.hash)
        before = snapshot(b)
        error = only_rejection(b.receive([wrong.wire()]))
        assert isinstance(error, RankError)
        assert snapshot(b) == before
    right = build(b, a_id, seq=3, rank=3, deps={}, prev=head.hash)
    assert b.receive([right.wire()]).executed


def test_non_member_creator(
    pair: tuple[Replica, Replica, Identity, Identity], identities: list[Identity]
) -> None:
    a, b, _a_id, _b_id = pair
    stranger = identities[3]
    for replica in (a, b):
        delta = first_of_b(replica, stranger)
        before = snapshot(replica)
        error = only_rejection(replica.receive([delta.wire()]))
        assert isinstance(error, NotMemberError)
        assert error.code == ErrorCode.NOT_MEMBER
        assert snapshot(replica) == before
        assert not replica.is_member(stranger.endpoint_id)
        assert replica.pending_count == 0


def test_non_member_adding_itself(
    pair: tuple[Replica, Replica, Identity, Identity], identities: list[Identity]
) -> None:
    a, _b, _a_id, _b_id = pair
    stranger = identities[3]
    grant = members.add_command(
        member_id=stranger.endpoint_id, key=stranger.public_key, name="me", role="manager"
    )
    delta = first_of_b(a, stranger, commands=[grant])
    before = snapshot(a)
    error = only_rejection(a.receive([delta.wire()]))
    assert isinstance(error, NotMemberError)
    assert snapshot(a) == before
    assert not a.is_member(stranger.endpoint_id)


def test_equivocation_voids_both_copies_and_records_evidence(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, _a_id, _b_id = pair
    first = b.create([rdb.create("t", "x", {"v": "first"})], time=5)
    assert a.receive([first.wire()]).executed
    second = first_of_b(a, b.identity, commands=[rdb.create("t", "x", {"v": "second"})])
    assert second.id == first.id and second.hash != first.hash
    assert not a.store.evidence(a.space_id)
    error = only_rejection(a.receive([second.wire()]))
    assert isinstance(error, EquivocationError)
    assert error.code == ErrorCode.EQUIVOCATION and not error.blames_sender
    # The executed copy was undone: an equivocator's deltas from the fork on count nowhere.
    assert rdb.view(a).get("t", "x") is None
    assert a.refusal(first.id) is not None
    evidence = a.store.evidence(a.space_id)
    assert {(creator, seq) for creator, seq, _h, _w in evidence} == {(first.creator, first.seq)}
    # The copy kept (lower rank, then hash) is in the log, on every replica alike; the other
    # stays provable: the proofs hold it (and, when the executed copy gave way, that one too).
    kept, other = sorted((first, second), key=lambda d: (d.rank, d.hash))
    (row,) = a.store.wires_range(a.space_id, first.creator, first.seq, first.seq)
    assert row[2] == kept.wire()
    assert other.wire() in {wire for _c, _s, _h, wire in evidence}
    assert len(evidence) == (1 if kept is first else 2)


def test_equivocation_while_the_first_is_pending(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, _b, _a_id, b_id = pair
    # Two different, correctly signed b:2 deltas; neither is ready (b:1 is missing).
    b1 = first_of_b(a, b_id)
    one = build(a, b_id, seq=2, rank=4, deps={}, prev=b1.hash)
    two = build(a, b_id, seq=2, rank=4, deps={}, prev=b1.hash, time=99)
    before = snapshot(a)
    assert not a.receive([one.wire()]).rejected
    assert a.pending_count == 1
    error = only_rejection(a.receive([two.wire()]))
    assert isinstance(error, EquivocationError)
    assert snapshot(a) == before
    assert a.store.evidence(a.space_id)
    # The first one is what executes once its predecessor arrives.
    result = a.receive([b1.wire()])
    assert [d.hash for d in result.executed] == [b1.hash, one.hash]


# -- causality and bounded memory ------------------------------------------------------------


def test_dependency_far_beyond_max_gap_is_too_far_ahead(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, b_id = pair
    gap = Limits().max_gap
    far_dep = first_of_b(a, b_id, deps={a_id.endpoint_id: gap + 10}, rank=gap + 11)
    far_seq = build(a, b_id, seq=gap + 5, rank=gap + 5, deps={}, prev=b"\x01" * 32)
    for wire in (far_dep.wire(), far_seq.wire()):
        before = snapshot(a)
        error = only_rejection(a.receive([wire]))
        assert isinstance(error, TooFarAheadError)
        assert error.code == ErrorCode.TOO_FAR_AHEAD
        assert snapshot(a) == before
        assert a.pending_count == 0
        assert a.missing() == []
    # On the member side too, and for another creator's far future.
    head = decode_delta(wires_of(a)[1])
    far_a = build(b, a_id, seq=gap + 3, rank=gap + 3, deps={}, prev=head.hash)
    error = only_rejection(b.receive([far_a.wire()]))
    assert isinstance(error, TooFarAheadError)
    assert b.pending_count == 0


def test_modest_future_stays_pending_and_is_reported_missing(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, _b, _a_id, b_id = pair
    b1 = first_of_b(a, b_id)
    b2 = build(a, b_id, seq=2, rank=4, deps={}, prev=b1.hash)
    b3 = build(a, b_id, seq=3, rank=5, deps={}, prev=b2.hash)
    before = snapshot(a)
    result = a.receive([b3.wire()])
    assert not result.rejected and not result.executed
    assert snapshot(a) == before
    assert a.pending_count == 1
    assert_bounded(a)
    assert a.missing() == [(b_id.endpoint_id, 1, 2)]
    result = a.receive([b1.wire(), b2.wire()])
    assert [d.seq for d in result.executed] == [1, 2, 3]
    assert a.pending_count == 0
    assert a.missing() == []


def test_dependency_on_a_future_delta_of_another_creator(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, b_id = pair
    # b's delta claims to depend on a:5, which does not exist yet anywhere.
    delta = first_of_b(b, b_id, deps={a_id.endpoint_id: 5}, rank=6)
    before = snapshot(a)
    result = a.receive([delta.wire()])
    assert not result.rejected and not result.executed
    assert snapshot(a) == before
    assert a.pending_count == 1
    assert a.missing() == [(a_id.endpoint_id, 3, 5)]
    assert b.receive([delta.wire()]).executed == ()
    assert b.missing() == [(a_id.endpoint_id, 3, 5)]


def test_flood_of_pending_deltas_is_bounded(
    make_store: Callable[[str], Store],
    space_pair: tuple[Replica, Replica],
    identities: list[Identity],
) -> None:
    a, _b = space_pair
    b_id = identities[1]
    limits = Limits(max_pending=8, max_pending_bytes=100_000)
    c = Replica.join(make_store("c"), identities[2], a.genesis.wire(), limits=limits)
    assert c.receive(wires_of(a)).executed
    before = snapshot(c)
    flood = [
        build(a, b_id, seq=seq, rank=seq + 2, deps={}, prev=bytes([seq % 256]) * 32)
        for seq in range(3, 63)
    ]
    for delta in flood:
        result = c.receive([delta.wire()])
        assert not result.executed and not result.rejected
        assert c.pending_count <= 8
        assert_bounded(c)
    assert c.pending_count == 8
    assert c.buffer.dropped == len(flood) - 8
    # The oldest were evicted; the newest are kept.
    assert sorted(did.seq for did in c.buffer.pending_ids()) == [d.seq for d in flood[-8:]]
    assert snapshot(c) == before


def test_flood_bounded_by_bytes(
    make_store: Callable[[str], Store],
    space_pair: tuple[Replica, Replica],
    identities: list[Identity],
) -> None:
    a, _b = space_pair
    b_id = identities[1]
    limits = Limits(max_pending=10_000, max_pending_bytes=20_000)
    c = Replica.join(make_store("c"), identities[2], a.genesis.wire(), limits=limits)
    before = snapshot(c)
    blob = b"x" * 3000
    for seq in range(3, 40):
        delta = build(
            a,
            b_id,
            seq=seq,
            rank=seq + 2,
            deps={},
            prev=b"\x07" * 32,
            commands=[rdb.create("t", f"r{seq}", {"blob": blob})],
        )
        c.receive([delta.wire()])
        assert c.buffer.pending_bytes <= 20_000
    assert 0 < c.pending_count <= 20_000 // 3000
    assert c.buffer.dropped > 0
    assert snapshot(c) == before


def test_unsigned_delta_with_broken_chain_is_never_accepted(
    space_pair: tuple[Replica, Replica],
    identities: list[Identity],
    make_store: Callable[[str], Store],
) -> None:
    a, _b = space_pair
    a_id = identities[0]
    head = decode_delta(wires_of(a)[1])
    unsigned = build(a, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False)
    # Its signed successor names another predecessor.
    successor = build(a, a_id, seq=4, rank=4, deps={}, prev=b"\x13" * 32)
    orders = [[unsigned, successor], [successor, unsigned], [unsigned], [successor]]
    for i, order in enumerate(orders):
        replica = Replica.join(make_store(f"r{i}"), identities[1], a.genesis.wire())
        assert replica.receive(wires_of(a)).executed
        before = snapshot(replica)
        for batch in ([d.wire() for d in order], [order[0].wire()]):
            result = replica.receive(batch)
            assert not result.executed
            for rejection in result.rejected:
                assert isinstance(rejection.error, (BrokenChainError, ForgedDeltaError))
            assert snapshot(replica) == before
            assert replica.vector[a_id.endpoint_id] == 2
            assert replica.accepted_vector()[a_id.endpoint_id] == 2
            assert_bounded(replica)


def test_unsigned_delta_with_matching_signed_successor_is_accepted(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, _b_id = pair
    head = decode_delta(wires_of(a)[1])
    unsigned = build(b, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False)
    successor = build(b, a_id, seq=4, rank=4, deps={}, prev=unsigned.hash)
    result = b.receive([unsigned.wire()])
    assert not result.executed and not result.rejected
    result = b.receive([successor.wire()])
    assert [d.seq for d in result.executed] == [3, 4]


def test_unsigned_squatter_does_not_get_the_genuine_chain_rejected(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    """A fake unsigned a:3 (anyone can make one) must not make the genuine a:3 "forged".

    The genuine chain ``[a:3 unsigned, a:4 signed]`` arrives in one batch, in log order, as a
    catch-up stream or a fetch answer delivers it. Rejecting the genuine a:3 as forged would
    make the session blame (and drop) the honest peer that relayed it.
    """
    a, b, a_id, _b_id = pair
    head = decode_delta(wires_of(a)[1])
    fake = build(b, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False, time=666)
    genuine = build(b, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False)
    signed = build(b, a_id, seq=4, rank=4, deps={}, prev=genuine.hash)
    before = snapshot(b)
    result = b.receive([fake.wire()])
    assert not result.executed and not result.rejected
    assert snapshot(b) == before
    result = b.receive([genuine.wire(), signed.wire()])
    assert not any(r.delta_id == genuine.id for r in result.rejected), result.rejected
    if not result.executed:
        # Tolerable: it may take the re-delivery a fetch of missing() brings.
        result = b.receive([genuine.wire(), signed.wire()])
    assert [d.hash for d in result.executed] == [genuine.hash, signed.hash]
    assert_bounded(b)


def test_unsigned_chain_signed_by_someone_else_is_never_accepted(
    pair: tuple[Replica, Replica, Identity, Identity], identities: list[Identity]
) -> None:
    a, b, a_id, _b_id = pair
    head = decode_delta(wires_of(a)[1])
    unsigned = build(b, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False)
    successor = build(b, a_id, seq=4, rank=4, deps={}, prev=unsigned.hash, signer=identities[2])
    before = snapshot(b)
    result = b.receive([unsigned.wire(), successor.wire()])
    assert not result.executed
    assert any(isinstance(r.error, ForgedDeltaError) for r in result.rejected)
    assert snapshot(b) == before


# -- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        Command(engine="nosuch", name="create", args={"table": "t", "record": "r", "fields": {}}),
        Command(engine="db", name="set", args={"table": "t", "record": "r"}),
        Command(engine="db", name="create", args={"table": "t", "record": "r", "fields": {}}),
        Command(engine="db", name="drop", args={"table": "t"}),
        Command(engine="db", name="delete", args=["t", "r"]),
        Command(engine="db", name="delete", args={"table": "", "record": "r"}),
        Command(engine="db", name="delete", args={"table": "t\0", "record": "r"}),
        Command(engine="members", name="add", args={"id": b"x" * 16, "key": b"k" * 32}),
        Command(engine="members", name="remove", args={}),
        Command(
            engine="members",
            name="genesis",
            args={"name": "n", "nonce": b"\0" * 16, "engines": {}, "member": {}},
        ),
    ],
    ids=lambda c: f"{c.engine}.{c.name}",
)
def test_commands_invalid_for_the_engine(
    pair: tuple[Replica, Replica, Identity, Identity], command: Command
) -> None:
    # Commands this release cannot validate may come from a newer one: the delta is kept (so
    # causality and relaying hold) but is a recorded no-op; none of its commands runs.
    a, _b, _a_id, b_id = pair
    delta = first_of_b(a, b_id, commands=[rdb.create("t", "ok", {"v": 1}), command])
    _order, state_before, _vector = snapshot(a)
    result = a.receive([delta.wire()])
    assert not result.rejected
    assert result.unsupported == (delta.id,)
    assert [d.id for d in result.executed] == [delta.id]
    assert a.state_digest() == state_before
    assert a.refusal(delta.id) is not None and "newer release" in a.refusal(delta.id)
    assert a.vector[b_id.endpoint_id] == 1
    assert a.pending_count == 0


def test_genesis_of_another_space_is_wrong_space(
    pair: tuple[Replica, Replica, Identity, Identity], make_store: Callable[[str], Store]
) -> None:
    a, _b, a_id, _b_id = pair
    other = Replica.create_space(make_store("o"), a_id, name="other", time=1, nonce=b"\1" * 16)
    before = snapshot(a)
    error = only_rejection(a.receive([other.genesis.wire()]))
    assert isinstance(error, WrongSpaceError)
    # And a delta of the other space.
    delta = build(other, a_id, seq=2, rank=2, deps={}, prev=other.genesis.hash)
    error = only_rejection(a.receive([delta.wire()]))
    assert isinstance(error, WrongSpaceError)
    assert snapshot(a) == before


# -- fuzz ------------------------------------------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


def mutate(wire: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(wire)
    for kind, where, what in ops:
        if not data:
            break
        i = where % len(data)
        if kind == "flip":
            data[i] ^= 1 << what
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data.insert(i, what)
        else:
            del data[i]
    return bytes(data)


FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_fuzzed_wires_never_raise_and_never_change_state_invalidly(
    pair: tuple[Replica, Replica, Identity, Identity],
) -> None:
    a, b, a_id, b_id = pair
    head = decode_delta(wires_of(a)[1])
    b1 = b.create([rdb.create("t", "x", {"v": 1})], time=5)
    b2 = b.create([rdb.set_fields("t", "x", {"v": 2}), rdb.delete("t", "y")], time=6)
    unsigned = build(a, a_id, seq=3, rank=3, deps={}, prev=head.hash, signed=False)
    pool = [*wires_of(a), b1.wire(), b2.wire(), unsigned.wire()]
    # Mutations of the unsigned delta that still decode wait (unauthenticated) instead of
    # being refused at once; weight it so that path is reached.
    weighted = [*pool, unsigned.wire(), unsigned.wire(), unsigned.wire()]
    outcomes = {"rejected": 0, "duplicate": 0, "pending": 0, "executed": 0}

    @FUZZ
    @given(
        st.sampled_from(weighted),
        st.lists(mutation, max_size=4),
        st.binary(max_size=80),
        st.booleans(),
    )
    def run(wire: bytes, ops: list[tuple[str, int, int]], junk: bytes, use_junk: bool) -> None:
        fed = junk if use_junk else mutate(wire, ops)
        before = snapshot(a)
        pending_before = set(a.buffer.pending_ids())
        result = a.receive([fed])
        assert_bounded(a)
        if result.executed:
            # Only genuine deltas execute, never mutated ones.
            assert fed in pool
            assert {d.id for d in result.executed} <= {b1.id, b2.id}
        else:
            assert snapshot(a) == before
        if fed in pool:
            assert not result.rejected
            outcomes["executed"] += bool(result.executed)
            return
        assert not result.executed
        assert len(result.rejected) + result.duplicates <= 1
        if result.rejected:
            outcomes["rejected"] += 1
        elif result.duplicates:
            outcomes["duplicate"] += 1
        else:
            # Neither refused nor a duplicate: it waits, and it waits bounded.
            (seen,) = result.seen
            assert seen in set(a.buffer.pending_ids()) - pending_before
            outcomes["pending"] += 1
        for rejection in result.rejected:
            assert isinstance(rejection.error, RemoteProtocolError)

    run()
    # The fuzz reached more than the decoder.
    assert outcomes["rejected"] > 0 and outcomes["duplicate"] > 0, outcomes
    # b1 and b2 were in the pool: the real ones got through whatever came before them.
    result = a.receive([b1.wire(), b2.wire()])
    assert not result.rejected
    assert a.vector[b_id.endpoint_id] == 2
    assert rdb.view(a).get("t", "x") == {"v": 2}


# -- sessions --------------------------------------------------------------------------------


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[tuple[Endpoint, Endpoint, Replica]]:
    """Endpoints ``x`` (space creator) and ``y`` (member, synced), and x's replica."""
    x = open_endpoint(tmp_path / "x", seed=b"hostile-x", durability="normal", name="x")
    y = open_endpoint(tmp_path / "y", seed=b"hostile-y", durability="normal", name="y")
    replica = x.create_space("s", time=1, nonce=b"\0" * 16)
    x.create(
        replica.space_id,
        [members.add_command(member_id=y.endpoint_id, key=y.identity.public_key, name="y")],
        time=2,
    )
    y.join_space(replica.genesis.wire())
    yield x, y, replica
    x.close()
    y.close()


def pump(x: Endpoint, a: Session, y: Endpoint, b: Session) -> None:
    for _ in range(100):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return
        if out_b:
            x.receive_data(a, out_b)
        if out_a:
            y.receive_data(b, out_a)
    raise AssertionError("sessions did not go quiet")


def error_frame(session: Session) -> Error:
    data = session.data_to_send()
    payloads = FrameDecoder().feed(data)
    assert len(payloads) == 1, payloads
    message = decode_message(payloads[0])
    assert isinstance(message, Error)
    return message


def hostile_inputs(
    space: bytes, peer: bytes
) -> list[tuple[str, bytes, type[Exception], ErrorCode]]:
    return [
        ("garbage", b"\x00\x00\x00\x05hello", MalformedError, ErrorCode.MALFORMED),
        ("garbage-cbor", frame(b"\xff\xfe\xfd"), MalformedError, ErrorCode.MALFORMED),
        (
            "oversized",
            b"\xff\xff\xff\xff" + b"x" * 100,
            RemoteProtocolError,
            ErrorCode.FRAME_TOO_LARGE,
        ),
        (
            "unknown-type",
            frame(codec.encode([99, 1, []])),
            RemoteProtocolError,
            ErrorCode.UNKNOWN_TYPE,
        ),
        (
            "bad-version",
            frame(codec.encode([1, 9, []])),
            RemoteProtocolError,
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (
            "deltas-before-hello",
            frame(encode_message(Deltas(space=space, wires=(b"\x80",)))),
            RemoteProtocolError,
            ErrorCode.UNEXPECTED_MESSAGE,
        ),
        (
            "hello-from-someone-else",
            frame(encode_message(Hello(endpoint=b"\x42" * 16, spaces=(), reply=False))),
            AuthenticationError,
            ErrorCode.BAD_SIGNATURE,
        ),
        (
            "hello-claiming-my-id",
            frame(encode_message(Hello(endpoint=peer, spaces=(), reply=False))),
            AuthenticationError,
            ErrorCode.BAD_SIGNATURE,
        ),
    ]


HOSTILE_SESSION_INPUTS = [
    "garbage",
    "garbage-cbor",
    "oversized",
    "unknown-type",
    "bad-version",
    "deltas-before-hello",
    "hello-from-someone-else",
    "hello-claiming-my-id",
]


@pytest.mark.parametrize("case", HOSTILE_SESSION_INPUTS)
def test_session_refuses_hostile_input(
    endpoints: tuple[Endpoint, Endpoint, Replica], case: str
) -> None:
    x, y, replica = endpoints
    inputs = {name: rest for name, *rest in hostile_inputs(replica.space_id, x.endpoint_id)}
    assert sorted(inputs) == sorted(HOSTILE_SESSION_INPUTS)
    data, error_type, code = inputs[case]
    session = x.open_session(expected_peer=y.endpoint_id)
    before = snapshot(replica)
    with pytest.raises(error_type) as info:
        x.receive_data(session, data)
    assert info.value.code == code, case
    assert session.state is State.ERROR
    assert session.error is info.value
    assert session.closed
    message = error_frame(session)
    assert message.code == code
    assert session.state is State.CLOSED
    assert session.data_to_send() == b""
    # Further input is ignored, not processed.
    x.receive_data(
        session, frame(encode_message(Hello(endpoint=y.endpoint_id, spaces=(), reply=False)))
    )
    assert session.data_to_send() == b""
    assert snapshot(replica) == before
    assert session._decoder.buffered <= 4 + 100


def test_session_hostile_delta_after_handshake(
    endpoints: tuple[Endpoint, Endpoint, Replica], identities: list[Identity]
) -> None:
    x, y, replica = endpoints
    sx = x.open_session(expected_peer=y.endpoint_id)
    sy = y.open_session(expected_peer=x.endpoint_id)
    pump(x, sx, y, sy)
    assert sx.state is State.OPEN and sy.state is State.OPEN
    assert sx.syncs(replica.space_id)
    y_replica = y.replica(replica.space_id)
    assert y_replica.vector == replica.vector
    # y sends a delta signed with someone else's key.
    forged = first_of_b(replica, y.identity, signer=identities[4])
    before = snapshot(replica)
    with pytest.raises(ForgedDeltaError):
        x.receive_data(
            sx, frame(encode_message(Deltas(space=replica.space_id, wires=(forged.wire(),))))
        )
    assert sx.state is State.ERROR
    assert error_frame(sx).code == ErrorCode.BAD_SIGNATURE
    assert snapshot(replica) == before
    assert replica.pending_count == 0


def test_session_tolerates_equivocation_but_records_it(
    endpoints: tuple[Endpoint, Endpoint, Replica],
) -> None:
    x, y, replica = endpoints
    sx = x.open_session(expected_peer=y.endpoint_id)
    sy = y.open_session(expected_peer=x.endpoint_id)
    pump(x, sx, y, sy)
    kept = y.create(replica.space_id, [rdb.create("t", "r", {"v": "kept"})], time=3)
    pump(x, sx, y, sy)
    assert rdb.view(replica).get("t", "r") == {"v": "kept"}
    other = first_of_b(replica, y.identity, commands=[rdb.create("t", "r", {"v": "other"})])
    assert other.id == kept.id
    x.receive_data(sx, frame(encode_message(Deltas(space=replica.space_id, wires=(other.wire(),)))))
    assert sx.state is State.OPEN
    assert rdb.view(replica).get("t", "r") is None  # both copies of the equivocation are void
    assert replica.store.evidence(replica.space_id)


def test_session_deltas_for_an_unsynced_space(
    endpoints: tuple[Endpoint, Endpoint, Replica],
) -> None:
    x, y, _replica = endpoints
    sx = x.open_session(expected_peer=y.endpoint_id)
    sy = y.open_session(expected_peer=x.endpoint_id)
    pump(x, sx, y, sy)
    other_space = hashlib.sha256(b"elsewhere").digest()[:16]
    with pytest.raises(RemoteProtocolError) as info:
        x.receive_data(sx, frame(encode_message(Deltas(space=other_space, wires=(b"\x80",)))))
    assert info.value.code == ErrorCode.UNEXPECTED_MESSAGE
    assert error_frame(sx).code == ErrorCode.UNEXPECTED_MESSAGE


def test_fetch_spam_does_not_grow_the_outbox_without_bound(
    endpoints: tuple[Endpoint, Endpoint, Replica],
) -> None:
    """A peer that sends Fetch frames and never reads must not make us buffer without bound.

    One Fetch of 256 ranges is about 7 KB; each range names every delta we have, so answering
    eagerly amplifies every request by the size of the log times 256.
    """
    x, y, replica = endpoints
    x.create_many(
        replica.space_id,
        [[rdb.create("t", f"r{i}", {"text": "x" * 200})] for i in range(40)],
        time=3,
    )
    sx = x.open_session(expected_peer=y.endpoint_id)
    sy = y.open_session(expected_peer=x.endpoint_id)
    pump(x, sx, y, sy)
    assert sx.state is State.OPEN
    spam = frame(
        encode_message(
            Fetch(space=replica.space_id, ranges=((x.endpoint_id, 1, 2**40),) * MAX_RANGES)
        )
    )
    bound = 2 * MAX_FRAME
    for _ in range(12):
        try:
            x.receive_data(sx, spam)
        except RemoteProtocolError:
            break  # refusing the abuse is fine too
        assert sx.queued_bytes <= bound


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=200))
def test_session_fuzz_only_raises_remote_protocol_errors(
    endpoints: tuple[Endpoint, Endpoint, Replica], data: bytes
) -> None:
    x, y, replica = endpoints
    session = x.open_session(expected_peer=y.endpoint_id)
    before = snapshot(replica)
    try:
        x.receive_data(session, data)
    except RemoteProtocolError as exc:
        assert session.state is State.ERROR
        assert error_frame(session).code == exc.code
    else:
        assert session.state in (State.AWAIT_HELLO, State.OPEN, State.CLOSED)
    assert snapshot(replica) == before
    x.close_session(session)
