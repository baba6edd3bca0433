"""Authenticity: signatures and hash chains, unit by unit and through real replicas."""

from __future__ import annotations

import pytest

from p2pspace.core import authenticity
from p2pspace.core.delta import Delta, make_body
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.errors import ForgedDeltaError
from tests.helpers.replicas import wires_of


def _chain(a: Replica, n: int = 5) -> list[Delta]:
    chain = a.create_many([[rdb.create("t", f"c{i}", {"i": i})] for i in range(n)], time=3)
    assert [d.signature is None for d in chain] == [True] * (n - 1) + [False]
    return chain


def test_chain_signed_last(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    chain = _chain(a)
    for d in chain[:-1]:
        result = b.receive([d.wire()])
        assert result.executed == () and not result.rejected
    assert b.pending_count == 4
    result = b.receive([chain[-1].wire()])
    assert [d.id for d in result.executed] == [d.id for d in chain]
    assert b.pending_count == 0
    assert b.order_digest() == a.order_digest() and b.state_digest() == a.state_digest()


def test_chain_signed_first(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    chain = _chain(a)
    assert b.receive([chain[-1].wire()]).executed == ()
    for d in chain[:-2]:
        assert b.receive([d.wire()]).executed == ()
    result = b.receive([chain[-2].wire()])
    assert [d.id for d in result.executed] == [d.id for d in chain]
    assert b.order_digest() == a.order_digest() and b.state_digest() == a.state_digest()


def test_chain_signed_missing(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    chain = _chain(a)
    before = dict(b.vector)
    result = b.receive([d.wire() for d in chain[:-1]])
    assert result.executed == () and not result.rejected
    assert b.vector == before
    assert b.pending_count == 4
    # missing() names the chain from its first unauthenticated delta; a peer's fetch() extends
    # each range to the next signed delta, so the answer carries the signed successor.
    missing = b.missing()
    assert [(c, lo) for c, lo, _hi in missing] == [(a.endpoint_id, before[a.endpoint_id] + 1)]
    fetched = a.fetch(missing, max_count=16)
    assert fetched[-1] == chain[-1].wire()
    result = b.receive(fetched)
    assert not result.rejected
    assert [d.id for d in result.executed] == [d.id for d in chain]
    assert b.missing() == []
    assert b.order_digest() == a.order_digest() and b.state_digest() == a.state_digest()


def test_forged_unsigned_delta_never_executes(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    chain = a.create_many([[rdb.create("t", "c", {"i": 0})], [rdb.delete("t", "c")]], time=3)
    real = chain[0]
    forged = make_body(
        space=real.space,
        creator=real.creator,
        seq=real.seq,
        rank=real.rank,
        deps=dict(real.deps),
        prev=real.prev,
        time=real.time,
        commands=[rdb.create("t", "c", {"i": "forged"})],
    )
    assert forged.signature is None and forged.hash != real.hash
    result = b.receive([forged.wire(), chain[1].wire()])
    assert result.executed == ()
    assert rdb.view(b).get("t", "c") is None
    assert b.pending_count >= 1
    result = b.receive([real.wire()])
    assert [d.id for d in result.executed] == [real.id, chain[1].id]
    assert b.order_digest() == a.order_digest() and b.state_digest() == a.state_digest()
    # The forgery never reached the log.
    assert forged.wire() not in wires_of(b)


def test_signature_checks(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    chain = _chain(a, 2)
    unsigned, signed = chain
    key_a, key_b = a.identity.public_key, b.identity.public_key
    assert authenticity.signature_verifies(key_a, signed)
    assert not authenticity.signature_verifies(key_b, signed)  # another member's key
    assert not authenticity.signature_verifies(None, signed)  # creator's key not known yet
    assert not authenticity.signature_verifies(key_a, unsigned)
    authenticity.check_signature(key_a, signed)
    with pytest.raises(ForgedDeltaError):
        authenticity.check_signature(key_b, signed)
    with pytest.raises(ForgedDeltaError):
        authenticity.check_signature(key_a, unsigned)


def test_chains_to_needs_the_next_seq_and_its_hash(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    first, second, third = _chain(a, 3)
    assert authenticity.chains_to(first, second)
    assert authenticity.chains_to(second, third)
    assert not authenticity.chains_to(first, third)  # not the next seq
    assert not authenticity.chains_to(second, first)
    assert not authenticity.chains_to(third, third)  # signed: authenticated by itself only
    assert not authenticity.chains_to(_resigned(first, a), second)


def _resigned(delta: Delta, replica: Replica) -> Delta:
    """The same delta with its creator's signature: now a signed delta, whatever its chain."""
    return delta.with_signature(replica.identity.sign(delta.body))


def test_authenticate_batch_walks_chains_back_from_signatures(
    space_pair: tuple[Replica, Replica],
) -> None:
    a, b = space_pair
    chain = _chain(a, 4)
    batch = [(d, d.wire()) for d in chain]
    keys = {a.endpoint_id: a.identity.public_key}
    accepted = b.buffer.accepted_seq
    assert authenticity.authenticate_batch(batch, keys, accepted) == {0, 1, 2, 3}
    # Without the signed tail nothing in the batch is proven.
    assert authenticity.authenticate_batch(batch[:-1], keys, accepted) == set()
    # A gap breaks the chain: only what chains to the signature counts.
    assert authenticity.authenticate_batch([batch[0], batch[2], batch[3]], keys, accepted) == {
        1,
        2,
    }
    # An unknown creator key proves nothing; deltas already accepted are left to the buffer.
    assert authenticity.authenticate_batch(batch, {}, accepted) == set()
    assert authenticity.authenticate_batch(batch, keys, lambda _creator: 10**6) == set()
    # A forged signature leaves its chain unauthenticated.
    last = chain[-1]
    forged = last.with_signature(b.identity.sign(last.body))
    assert authenticity.authenticate_batch(
        [*batch[:-1], (forged, forged.wire())], keys, accepted
    ) == (set())
