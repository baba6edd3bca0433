"""Equivocation proofs: every replica ends up holding the same ones, whoever found what, and
what is sent of them is bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pspace.core import causal, evidence
from p2pspace.core.causal import Evidence
from p2pspace.core.delta import Delta, decode_delta, make_body
from p2pspace.core.evidence import EvidenceLedger
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.errors import EquivocationError, NotAuthorizedError, RankError
from p2pspace.testing.hostile import craft_next, twin
from tests.helpers.replicas import wires_of
from tests.helpers.teams import Team, make_team, send


@pytest.fixture
def team(make_store: Callable[[str], Store], identities: list[Identity]) -> Team:
    return make_team(make_store, identities)


def pair(team: Team, i: int) -> tuple[Delta, Delta]:
    me = team.ids["p"]
    one = craft_next(team.p, me, [rdb.set_fields("t", "r", {"v": i})], time=4 + i)
    other = twin(one, me, [rdb.set_fields("t", "r", {"v": -i})])
    return one, other


def test_two_replicas_that_found_the_two_halves_hold_the_same_proof(team: Team) -> None:
    one, other = pair(team, 1)
    send(team.a, one)
    send(team.m, other)
    assert team.a.receive([other.wire()]).rejected
    assert team.m.receive([one.wire()]).rejected
    assert team.a.equivocators() == team.m.equivocators() == {team.id("p"): one.seq}
    assert team.a.evidence_digest() == team.m.evidence_digest() != b""
    # Each can hand the other every copy its proof names.
    assert {one.wire(), other.wire()} <= set(team.a.evidence_wires())


def test_a_replica_that_missed_the_proof_meets_it_through_the_copies(team: Team) -> None:
    observer = team.observer("o")
    one, other = pair(team, 1)
    send(team.a, one)
    assert team.a.receive([other.wire()]).rejected
    send(observer, one)
    assert observer.evidence_digest() == b"" != team.a.evidence_digest()
    observer.receive(team.a.evidence_wires())
    assert observer.equivocators() == team.a.equivocators()
    assert observer.evidence_digest() == team.a.evidence_digest()
    # Offered again (the next Revision), nothing new is found or pushed.
    assert observer.take_evidence_wires()
    observer.receive(team.a.evidence_wires())
    assert observer.take_evidence_wires() == []
    assert observer.evidence_digest() == team.a.evidence_digest()


def test_a_new_proof_is_pushed_once_per_copy() -> None:
    ledger = EvidenceLedger()
    creator = Identity.from_seed(b"creator")

    def delta(v: int) -> Delta:
        body = make_body(
            space=b"s" * 16,
            creator=creator.endpoint_id,
            seq=2,
            rank=2,
            deps={},
            prev=b"\0" * 32,
            time=1,
            commands=[rdb.set_fields("t", "r", {"v": v})],
        )
        return body.with_signature(creator.sign(body.body))

    kept, a, b = delta(0), delta(1), delta(2)
    held = {kept.id: kept.wire()}
    proof_a = Evidence(delta_id=kept.id, kept_hash=kept.hash, other_wire=a.wire())
    proof_b = Evidence(delta_id=kept.id, kept_hash=kept.hash, other_wire=b.wire())
    ledger.note([proof_a], held.get)
    assert ledger.take_new() == [a.wire(), kept.wire()]
    ledger.note([proof_a, proof_b], held.get)  # the same proof again, and one more copy
    assert ledger.take_new() == [b.wire()]
    assert ledger.forks() == {creator.endpoint_id: 2}
    assert set(ledger.wires(held.get)) == {kept.wire(), a.wire(), b.wire()}
    first = ledger.digest()
    ledger.note([proof_b], held.get)
    assert ledger.digest() == first and len(ledger) == 2


def test_what_is_sent_of_the_proofs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    creator = Identity.from_seed(b"flooder")
    rows = []
    for seq in range(2, 41):
        copies = []
        for v in (0, 1):
            body = make_body(
                space=b"s" * 16,
                creator=creator.endpoint_id,
                seq=seq,
                rank=seq,
                deps={},
                prev=b"\0" * 32,
                time=1,
                commands=[rdb.set_fields("t", "r", {"v": v})],
            )
            copies.append(body.with_signature(creator.sign(body.body)))
        rows.append((creator.endpoint_id, seq, copies[0].hash, copies[1].wire()))
    ledger = EvidenceLedger(rows)
    monkeypatch.setattr(evidence, "MAX_WIRES", 10)
    sent = ledger.wires(lambda _id: None)
    assert len(sent) == 10
    # The lowest seqs first: the lowest fork is what decides.
    assert [decode_delta(w).seq for w in sent] == list(range(2, 12))
    assert ledger.forks() == {creator.endpoint_id: 2}


def test_both_copies_stay_sendable_when_the_first_was_still_pending(team: Team) -> None:
    """The copy met first waits for its creator's previous delta when the other arrives: a
    replica then holds neither copy in its log, yet can send both (whichever it keeps, and even
    if the kept one were refused later), so its peers meet the same proof."""
    before = team.p.create([rdb.set_fields("t", "r", {"v": 0})], time=3)
    one, other = pair(team, 1)
    assert one.seq == before.seq + 1
    assert not team.a.receive([one.wire()]).rejected  # pending: it waits for `before`
    assert team.a.receive([other.wire()]).rejected
    assert {one.wire(), other.wire()} <= set(team.a.evidence_wires())
    observer = team.observer("o")
    send(observer, before)
    observer.receive(team.a.evidence_wires())
    assert observer.equivocators() == team.a.equivocators() == {team.id("p"): one.seq}
    send(team.a, before)
    assert observer.evidence_digest() == team.a.evidence_digest() != b""


def test_two_refused_copies_prove_an_equivocation(team: Team) -> None:
    """A guest signs two different deltas under one id, each refused on its own (a guest may
    not write): neither is held, yet the two authentic copies prove the equivocation, on every
    replica that meets them, in any order."""
    me = team.ids["g"]
    one = craft_next(team.g, me, [rdb.set_fields("t", "r", {"v": 1})], time=5)
    other = twin(one, me, [rdb.set_fields("t", "r", {"v": 2})])
    assert team.a.receive([one.wire()]).rejected
    assert team.a.equivocators() == {}
    team.a.receive([other.wire()])
    assert team.a.equivocators() == {team.id("g"): one.seq}
    assert {one.wire(), other.wire()} <= set(team.a.evidence_wires())
    observer = team.observer("o")
    observer.receive([other.wire(), one.wire()])
    assert observer.equivocators() == team.a.equivocators()
    assert observer.evidence_digest() == team.a.evidence_digest() != b""
    # Met again, the copies change nothing more.
    observer.receive([one.wire(), other.wire()])
    assert observer.evidence_digest() == team.a.evidence_digest()


def test_what_is_remembered_of_refused_copies_is_bounded(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused copies are remembered up to a count and a byte budget, oldest dropped: a
    member refused over and over costs bounded memory."""
    monkeypatch.setattr(causal, "MAX_REFUSED_COPIES", 3)
    buffer = team.a.buffer
    me = team.ids["g"]
    first = craft_next(team.g, me, [rdb.set_fields("t", "r", {"v": 0})], time=5)
    copies = [
        make_body(
            space=first.space,
            creator=first.creator,
            seq=first.seq + k,
            rank=first.rank + k,
            deps=dict(first.deps),
            prev=first.prev if k == 0 else bytes([k]) * 32,
            time=first.time,
            commands=[rdb.set_fields("t", "r", {"v": k})],
        )
        for k in range(6)
    ]
    refused = NotAuthorizedError("a guest may not write")
    for delta in copies:
        assert not buffer._refused_twin(delta, delta.wire(), refused)
    assert len(buffer._refused_copies) == 3
    assert set(buffer._refused_copies) == {d.id for d in copies[3:]}
    assert buffer._refused_bytes == sum(len(d.wire()) for d in copies[3:])
    monkeypatch.setattr(causal, "MAX_REFUSED_COPY_BYTES", len(copies[0].wire()) + 1)
    assert not buffer._refused_twin(copies[0], copies[0].wire(), refused)
    assert set(buffer._refused_copies) == {copies[0].id}
    # A copy refused for its rank is not remembered: it is malformed wherever it arrives.
    assert not buffer._refused_twin(copies[1], copies[1].wire(), RankError("rank too low"))
    assert set(buffer._refused_copies) == {copies[0].id}


def resigned(delta: Delta, creator: Identity, **fields: object) -> Delta:
    """Another signed copy of ``delta`` (same id) with some of its fields changed."""
    values: dict[str, object] = {
        "space": delta.space,
        "creator": delta.creator,
        "seq": delta.seq,
        "rank": delta.rank,
        "deps": dict(delta.deps),
        "prev": delta.prev,
        "time": delta.time,
        "commands": list(delta.commands),
    }
    values.update(fields)
    body = make_body(**values)  # type: ignore[arg-type]
    return body.with_signature(creator.sign(body.body))


def held_hash(replica: Replica, delta: Delta) -> bytes | None:
    info = replica.store.delta_info(replica.space_id, delta.creator, delta.seq)
    return None if info is None else info[1]


def test_a_copy_its_creator_could_not_have_made_never_replaces_one_kept(team: Team) -> None:
    """The second copy sorts first by rank but names no causal past in which its creator is
    a member: it is refused on its own, so it never displaces the valid copy, on a replica
    that met either first."""
    me = team.ids["p"]
    valid = craft_next(team.p, me, [rdb.set_fields("t", "r", {"v": 1})], time=5)
    stray = resigned(valid, me, deps={}, rank=1, commands=[rdb.set_fields("t", "r", {"v": 2})])
    assert (stray.rank, stray.hash) < (valid.rank, valid.hash)
    send(team.a, valid)
    assert team.a.receive([stray.wire()]).rejected
    observer = team.observer("o")
    assert observer.receive([stray.wire()]).rejected
    send(observer, valid)
    for replica in (team.a, observer):
        assert held_hash(replica, valid) == valid.hash
        assert replica.equivocators() == {team.id("p"): valid.seq}
    assert team.a.order_digest() == observer.order_digest()


def ranked_pair(team: Team) -> tuple[Delta, Delta, Delta]:
    """Two copies of ``p``'s next delta, ``low`` backdated below three of ``a``'s deltas and
    ``high`` after them (so it ranks 3 higher), and ``p``'s delta after ``low``, as backdated."""
    me = team.ids["p"]
    old = dict(team.p.vector)
    for v in range(3):
        team.a.create([rdb.set_fields("t", "x", {"v": v})], time=4)
    team.p.receive(wires_of(team.a))
    low = craft_next(team.p, me, [rdb.set_fields("t", "r", {"v": 1})], time=5, deps=old)
    high = craft_next(team.p, me, [rdb.set_fields("t", "r", {"v": 2})], time=5)
    assert high.id == low.id and high.rank >= low.rank + 3
    send(team.p, low)
    after = craft_next(team.p, me, [rdb.set_fields("t", "r", {"v": 3})], time=6, deps=old)
    assert after.prev == low.hash and low.rank < after.rank < high.rank
    return low, high, after


def test_a_forkers_delta_built_on_the_lower_copy_waits_for_it(team: Team) -> None:
    """The forker's next delta is built on the copy of its previous one that ranks lower. A
    replica holding the higher copy cannot place it yet: it is refused as an equivocation
    (not for its rank, which would be for good), and accepted once the lower copy is kept --
    the copy every replica keeps."""
    low, high, after = ranked_pair(team)
    send(team.a, high)
    result = team.a.receive([after.wire()])
    assert [type(r.error) for r in result.rejected] == [EquivocationError]
    assert team.a.refusal(after.id) is None
    assert team.a.receive([low.wire()]).rejected  # the proof again; the lower copy is kept
    send(team.a, after)
    observer = team.observer("o")
    send(observer, low, after)
    assert observer.receive([high.wire()]).rejected
    for replica in (team.a, observer):
        assert held_hash(replica, low) == low.hash
        assert replica.vector[team.id("p")] == after.seq
    assert team.a.order_digest() == observer.order_digest()
    assert team.a.state_digest() == observer.state_digest()


def test_a_void_copy_in_a_closed_block_gives_way_to_the_lower_one(team: Team) -> None:
    """The checkpointer holds the higher of a forker's two copies, void already, when it
    closes a block; it meets the lower copy only afterwards. Its block then holds the lower
    copy too, as on a replica that met the lower one first: the blocks end the same."""
    low, high, after = ranked_pair(team)
    send(team.a, high)
    team.a.receive([after.wire()])  # built on the other copy: the proof, high is void
    assert team.a.forked(team.id("p"), low.seq)
    checkpoint = team.a.create_checkpoint(time=7)
    assert team.a.horizon().checkpoint == checkpoint.id
    team.a.receive([low.wire()])
    assert held_hash(team.a, low) == low.hash
    observer = team.observer("o")
    send(observer, low)
    assert observer.receive([high.wire()]).rejected
    observer.receive([w for w in wires_of(team.a) if decode_delta(w).id != low.id])
    assert observer.horizon().checkpoint == checkpoint.id
    assert held_hash(observer, low) == low.hash
    assert team.a.order_digest() == observer.order_digest()
    assert team.a.state_digest() == observer.state_digest()
