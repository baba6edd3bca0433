"""Equivocation proofs: every replica ends up holding the same ones, whoever found what, and
what is sent of them is bounded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pspace.core import evidence
from p2pspace.core.causal import Evidence
from p2pspace.core.delta import Delta, decode_delta, make_body
from p2pspace.core.evidence import EvidenceLedger
from p2pspace.core.identity import Identity
from p2pspace.core.store import Store
from p2pspace.engines import rdb
from p2pspace.testing.hostile import craft_next, twin
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
