"""The causal buffer, driven through real replicas: any delivery order gives one total order."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core.causal import Limits
from p2pspace.core.delta import Delta, decode_delta, make_body
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import (
    EquivocationError,
    ForgedDeltaError,
    RankError,
    TooFarAheadError,
)
from p2pspace.testing import causality_violation
from tests.helpers.replicas import wires_of

IDS = [Identity.from_seed(f"seq-{i}".encode()) for i in range(4)]


@dataclass(frozen=True)
class History:
    genesis: bytes
    wires: tuple[bytes, ...]  # every non-genesis delta, in the reference log order
    order_digest: str
    state_digest: str
    dump: list[dict[str, object]]


def _exchange(dst: Replica, src: Replica) -> None:
    result = dst.receive(wires_of(src))
    assert not result.rejected


def _build_history(folder: Path) -> History:
    """Three creators making concurrent deltas while exchanging only part of what they have."""
    stores = [Store(folder / f"h{i}.sqlite3", durability="normal") for i in range(3)]
    try:
        a = Replica.create_space(stores[0], IDS[0], name="h", time=1, nonce=b"\x04" * 16)
        a.create(
            [
                members.add_command(member_id=i.endpoint_id, key=i.public_key, name=f"m{n}")
                for n, i in enumerate(IDS[1:3], 1)
            ]
            + [rdb.create("t", f"r{k}", {"v": 0}) for k in range(3)],
            time=2,
        )
        b = Replica.join(stores[1], IDS[1], a.genesis.wire())
        c = Replica.join(stores[2], IDS[2], a.genesis.wire())
        _exchange(b, a)
        _exchange(c, a)
        replicas = [a, b, c]
        t = 10
        for round_ in range(4):
            for n, r in enumerate(replicas):
                t += 1
                k = (round_ + n) % 3
                r.create([rdb.set_fields("t", f"r{k}", {"v": t, f"by{n}": round_})], time=t)
                if (round_ + n) % 2 == 0:
                    r.create(
                        [
                            rdb.create("t", f"x{n}-{round_}", {"n": n}),
                            rdb.delete("t", f"r{(k + 1) % 3}"),
                        ]
                        if round_ == 3
                        else [rdb.set_fields("t", f"r{(k + 1) % 3}", {"w": t})],
                        time=t,
                    )
            if round_ == 1:
                # A group commit: two unsigned deltas chained to a signed third.
                c.create_many([[rdb.set_fields("t", "r0", {"chain": i})] for i in range(3)], time=t)
            # A ring of partial exchanges, so every delta has cross-creator dependencies.
            _exchange(replicas[(round_ + 1) % 3], replicas[round_ % 3])
            _exchange(replicas[(round_ + 2) % 3], replicas[(round_ + 1) % 3])
        for _ in range(2):
            for dst in replicas:
                for src in replicas:
                    if dst is not src:
                        _exchange(dst, src)
        digests = {(r.order_digest(), r.state_digest()) for r in replicas}
        assert len(digests) == 1
        wires = wires_of(a)
        assert wires[0] == a.genesis.wire()
        return History(
            genesis=wires[0],
            wires=tuple(wires[1:]),
            order_digest=a.order_digest(),
            state_digest=a.state_digest(),
            dump=a.dump_order(),
        )
    finally:
        for s in stores:
            s.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return _build_history(tmp_path_factory.mktemp("history"))


class _Fresh:
    """A new, empty replica (of a non-member) of the history's space in its own folder."""

    def __init__(self, genesis: bytes, limits: Limits = Limits()) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.store = Store(Path(self._dir.name) / "f.sqlite3", durability="normal")
        self.replica = Replica.join(self.store, IDS[3], genesis, limits=limits)

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


@pytest.fixture
def fresh(history: History) -> Iterator[Callable[..., Replica]]:
    made: list[_Fresh] = []

    def make(limits: Limits = Limits()) -> Replica:
        f = _Fresh(history.genesis, limits)
        made.append(f)
        return f.replica

    yield make
    for f in made:
        f.close()


def _assert_matches(replica: Replica, history: History) -> None:
    assert replica.pending_count == 0
    assert replica.staged_count == 0
    assert replica.order_digest() == history.order_digest
    assert replica.state_digest() == history.state_digest
    assert replica.dump_order() == history.dump
    assert causality_violation(replica.dump_order()) is None


def test_history_shape(history: History) -> None:
    """The history really has three creators, concurrency and an unsigned chain."""
    deltas = [decode_delta(w) for w in history.wires]
    assert len({d.creator for d in deltas}) == 3
    assert sum(d.signature is None for d in deltas) == 2
    ranks = [d.rank for d in deltas]
    assert len(ranks) > len(set(ranks))  # concurrent deltas share ranks
    assert len(deltas) >= 20


@settings(max_examples=50, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_delivery_order_gives_the_same_order(history: History, data: st.DataObject) -> None:
    wires = data.draw(st.permutations(history.wires), label="order")
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=len(wires), max_size=len(wires)))
    f = _Fresh(history.genesis)
    try:
        replica = f.replica
        executed = 0
        i = 0
        for size in sizes:
            if i >= len(wires):
                break
            result = replica.receive(wires[i : i + size])
            i += size
            assert not result.rejected
            assert result.duplicates == 0
            executed += len(result.executed)
            assert causality_violation(replica.dump_order()) is None
        assert executed == len(history.wires)
        _assert_matches(replica, history)
    finally:
        f.close()


def test_reverse_order_one_by_one(history: History, fresh: Callable[..., Replica]) -> None:
    replica = fresh()
    for wire in reversed(history.wires[1:]):
        result = replica.receive([wire])
        assert not result.rejected and result.executed == ()
    assert replica.pending_count == len(history.wires) - 1
    result = replica.receive([history.wires[0]])
    assert len(result.executed) == len(history.wires)
    _assert_matches(replica, history)


def test_duplicates_are_idempotent(history: History, fresh: Callable[..., Replica]) -> None:
    replica = fresh()
    wires = list(history.wires)
    # Twice within one call, and a late delta twice while it is still pending.
    first = replica.receive([wires[-1], wires[-1]])
    assert first.duplicates == 1 and first.executed == ()
    assert replica.pending_count == 1
    result = replica.receive([w for w in wires for _ in range(2)])
    # Every second copy, plus the first copy of the delta already pending.
    assert result.duplicates == len(wires) + 1
    assert len(result.executed) == len(wires)
    assert not result.rejected
    _assert_matches(replica, history)
    again = replica.receive([*wires, history.genesis])
    assert again.duplicates == len(wires) + 1
    assert again.executed == () and not again.rejected
    assert replica.stats.duplicates == 1 + (len(wires) + 1) + (len(wires) + 1)
    _assert_matches(replica, history)


def test_pending_bounded_by_count(history: History, fresh: Callable[..., Replica]) -> None:
    replica = fresh(Limits(max_pending=4))
    for wire in reversed(history.wires[1:]):
        replica.receive([wire])
        assert replica.pending_count <= 4
    assert replica.buffer.dropped == len(history.wires) - 1 - 4
    # Dropped deltas are simply delivered again later.
    replica.receive(history.wires)
    _assert_matches(replica, history)


def test_pending_bounded_by_bytes(history: History, fresh: Callable[..., Replica]) -> None:
    budget = 3 * max(len(w) for w in history.wires)
    replica = fresh(Limits(max_pending_bytes=budget))
    for wire in reversed(history.wires[1:]):
        replica.receive([wire])
        assert replica.buffer.pending_bytes <= budget
    assert replica.buffer.dropped > 0
    replica.receive(history.wires)
    _assert_matches(replica, history)


def test_too_far_ahead_refused(history: History, fresh: Callable[..., Replica]) -> None:
    # (The gap must leave room for the history's 3-delta chain, delivered in order.)
    replica = fresh(Limits(max_gap=3))
    far = next(w for w in history.wires if decode_delta(w).seq >= 5)
    result = replica.receive([far])
    assert [type(r.error) for r in result.rejected] == [TooFarAheadError]
    assert replica.pending_count == 0
    for wire in history.wires:
        assert not replica.receive([wire]).rejected
    _assert_matches(replica, history)


# -- unsigned chains (group commit) ---------------------------------------------------------------


# -- verification before storage -----------------------------------------------------------------


def _next_delta(
    sender: Replica,
    *,
    rank_offset: int = 0,
    prev: bytes | None = None,
    signer: Identity | None = None,
    value: int = 1,
) -> Delta:
    """``sender``'s next delta, correct unless one field is spoiled on purpose."""
    me = sender.endpoint_id
    heads = sender.store.heads(sender.space_id)
    seq, _rank, own_prev = heads.get(me, (0, 0, b""))
    unsigned = make_body(
        space=sender.space_id,
        creator=me,
        seq=seq + 1,
        rank=max(r for _s, r, _h in heads.values()) + 1 + rank_offset,
        deps={c: s for c, s in sender.vector.items() if c != me},
        prev=own_prev if prev is None else prev,
        time=5,
        commands=[rdb.create("t", "v", {"v": value})],
    )
    return unsigned.with_signature((signer or sender.identity).sign(unsigned.body))


def test_valid_next_delta_accepted(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    result = b.receive([_next_delta(a).wire()])
    assert not result.rejected and len(result.executed) == 1


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        ({"rank_offset": 1}, RankError),
        ({"signer": IDS[3]}, ForgedDeltaError),
    ],
    ids=["rank", "signature"],
)
def test_invalid_delta_rejected(
    space_pair: tuple[Replica, Replica], spoil: dict[str, object], error: type[Exception]
) -> None:
    a, b = space_pair
    before = (dict(b.vector), b.order_digest(), b.state_digest())
    result = b.receive([_next_delta(a, **spoil).wire()])  # type: ignore[arg-type]
    assert [type(r.error) for r in result.rejected] == [error]
    assert result.executed == ()
    assert (dict(b.vector), b.order_digest(), b.state_digest()) == before
    assert b.pending_count == 0
    # The genuine delta is still accepted afterwards.
    result = b.receive([_next_delta(a).wire()])
    assert not result.rejected and len(result.executed) == 1
    assert rdb.view(b).get("t", "v") == {"v": 1}


def test_equivocation_keeps_one_copy_everywhere_and_voids_it(
    space_pair: tuple[Replica, Replica], make_store: Callable[[str], Store]
) -> None:
    a, b = space_pair
    first, second = _next_delta(a, value=1), _next_delta(a, value=2)
    assert first.id == second.id and first.hash != second.hash
    kept, lost = sorted((first, second), key=lambda d: (d.rank, d.hash))
    # b meets the copies in one order, c (a fresh replica of the space) in the other.
    c = Replica.join(make_store("c"), IDS[3], a.genesis.wire())
    c.receive(wires_of(a))
    for replica, order in ((b, (first, second)), (c, (second, first))):
        assert len(replica.receive([order[0].wire()]).executed) == 1
        result = replica.receive([order[1].wire()])
        assert [type(r.error) for r in result.rejected] == [EquivocationError]
        assert not result.rejected[0].error.blames_sender
        # Neither copy counts: the creator's deltas from the fork on are void everywhere.
        assert rdb.view(replica).get("t", "v") is None
        assert replica.refusal(first.id) is not None
        (row,) = replica.store.wires_range(replica.space_id, first.creator, first.seq, first.seq)
        assert row[2] == kept.wire()
        assert replica.store.evidence(replica.space_id)
    assert b.order_digest() == c.order_digest() and b.state_digest() == c.state_digest()
    assert lost.hash != kept.hash


def test_a_signed_delta_on_another_history_is_evidence(space_pair: tuple[Replica, Replica]) -> None:
    # Signed by the creator, yet its prev names a delta we do not hold: the creator signed two
    # histories. It is kept (void), its creator's deltas from the fork on are void.
    a, b = space_pair
    b.receive([_next_delta(a).wire()])
    assert rdb.view(b).get("t", "v") == {"v": 1}
    a2 = _next_delta(a)  # a has not stored its first one: same seq, same commands
    forked = make_body(
        space=a.space_id,
        creator=a.endpoint_id,
        seq=a2.seq + 1,
        rank=a2.rank + 1,
        deps={},
        prev=b"\x07" * 32,
        time=6,
        commands=[rdb.create("t", "w", {"v": 3})],
    )
    signed = forked.with_signature(a.identity.sign(forked.body))
    result = b.receive([signed.wire()])
    assert not result.rejected
    assert rdb.view(b).get("t", "w") is None and rdb.view(b).get("t", "v") is None
    assert b.store.evidence(b.space_id)
