"""Roles, decided before storage on a delta's causal past and again at execution in the order.

Each rule is checked in both delivery orders: a refused delta either arrives after everything
it depends on (refused at once) or before one of its dependencies (it waits, and is refused when
that dependency arrives, without blaming the peer of either call); concurrent deltas reach two
observers in opposite orders, and every replica must end in the same order and state.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pspace.core import membership
from p2pspace.core.delta import Command, Delta
from p2pspace.core.identity import Identity
from p2pspace.core.merge import UNSUPPORTED
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import (
    NotAuthorizedError,
    NotMemberError,
    PermissionDeniedError,
    QuotaExceededError,
    RemoteProtocolError,
)
from p2pspace.testing.hostile import craft_next, twin
from tests.helpers.replicas import wires_of
from tests.helpers.teams import (
    Team,
    assert_converged,
    assert_refused,
    check_refused,
    make_team,
    send,
    snapshot,
    sync,
)

ORDERS = ("dependency-first", "delta-first")
SYBIL = Identity.from_seed(b"sybil")


@pytest.fixture
def team(make_store: Callable[[str], Store], identities: list[Identity]) -> Team:
    return make_team(make_store, identities)


def write(i: int = 0) -> list[Command]:
    return [rdb.set_fields("t", "r", {"v": i})]


def seeded(team: Team) -> None:
    """Record ``t/r`` exists on every replica."""
    seed = team.a.create([rdb.create("t", "r", {"v": 0})], time=3)
    for replica in (team.m, team.p, team.g):
        send(replica, seed)


def deliver_refused(
    receiver: Replica,
    dependency: Delta,
    delta: Delta,
    error: type[RemoteProtocolError],
    order: str,
) -> None:
    """``delta`` depends on ``dependency`` (which ``receiver`` lacks): deliver both in
    ``order`` and check ``delta`` is refused before storage either way."""
    before = snapshot(receiver)
    if order == "dependency-first":
        send(receiver, dependency)
        assert_refused(receiver, delta, error)
    else:
        waiting = receiver.receive([delta.wire()])
        assert not waiting.rejected and not waiting.executed
        assert receiver.pending_count == 1
        assert snapshot(receiver) == before
        released = receiver.receive([dependency.wire()])
        assert [d.id for d in released.executed] == [dependency.id]
        # Refused now, but offered by the earlier call: neither sender is blamed.
        assert not released.rejected
        check_refused(receiver, delta, error, released, late=True)


def crafted_after_news(team: Team, creator: str, commands: list[Command]) -> tuple[Delta, Delta]:
    """A new delta of ``a`` that ``creator`` has executed, and ``creator``'s crafted delta of
    ``commands`` that depends on it."""
    news = team.a.create(write(99), time=20)
    replica = getattr(team, creator)
    send(replica, news)
    return news, craft_next(replica, team.ids[creator], commands, time=21)


# -- guests -------------------------------------------------------------------------------------


def test_guest_cannot_create_locally(team: Team) -> None:
    seeded(team)
    before = snapshot(team.g)
    for commands in (write(1), [rdb.create("t", "x", {"v": 1})], [rdb.delete("t", "r")]):
        with pytest.raises(PermissionDeniedError, match="guest"):
            team.g.create(commands, time=5)
    assert snapshot(team.g) == before


@pytest.mark.parametrize("order", ORDERS)
def test_guest_delta_refused_before_storage(team: Team, order: str) -> None:
    seeded(team)
    observer = team.observer("o")
    news, bad = crafted_after_news(team, "g", write(1))
    for receiver in (team.m, team.p, observer):
        deliver_refused(receiver, news, bad, NotAuthorizedError, order)
        assert rdb.view(receiver).get("t", "r") == {"v": 99}
    assert_converged(team.a, team.m, team.p, observer)


def test_guest_unknown_command_refused(team: Team) -> None:
    """A guest's delta is refused even when this release cannot read its commands."""
    unknown = Command(engine="db", name="frobnicate", args={})
    bad = craft_next(team.g, team.ids["g"], [unknown], time=4)
    assert_refused(team.a, bad, NotAuthorizedError)


def test_guest_may_leave(team: Team) -> None:
    leave = team.g.create([members.remove_command(team.id("g"))], time=4)
    send(team.a, leave)
    for replica in (team.a, team.g):
        assert replica.refusal(leave.id) is None
        assert replica.members().role_of(team.id("g")) is None
        record = replica.members().get(team.id("g"))
        assert record is not None and record.removed_by == leave.id
    assert not team.a.is_member(team.id("g"))
    assert_converged(team.a, team.g)


# -- participants -------------------------------------------------------------------------------


def _managing(team: Team) -> dict[str, list[Command]]:
    return {
        "add-sybil-manager": [
            members.add_command(
                member_id=SYBIL.endpoint_id, key=SYBIL.public_key, name="s", role="manager"
            )
        ],
        "add-sybil-participant": [
            members.add_command(member_id=SYBIL.endpoint_id, key=SYBIL.public_key, name="s")
        ],
        "promote-itself": [members.role_command(team.id("p"), "manager")],
        "promote-the-guest": [members.role_command(team.id("g"), "participant")],
        "demote-the-creator": [members.role_command(team.id("a"), "guest")],
        "remove-the-creator": [members.remove_command(team.id("a"))],
        "remove-the-guest": [members.remove_command(team.id("g"))],
        "set-the-quota": [members.quota_command(1)],
        "write-and-promote": [*write(5), members.role_command(team.id("p"), "manager")],
    }


MANAGING = (
    "add-sybil-manager",
    "add-sybil-participant",
    "promote-itself",
    "promote-the-guest",
    "demote-the-creator",
    "remove-the-creator",
    "remove-the-guest",
    "set-the-quota",
    "write-and-promote",
)


@pytest.mark.parametrize("action", MANAGING)
def test_participant_cannot_manage_locally(team: Team, action: str) -> None:
    seeded(team)
    before = snapshot(team.p)
    with pytest.raises(PermissionDeniedError, match="participant"):
        team.p.create(_managing(team)[action], time=5)
    assert snapshot(team.p) == before


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("action", MANAGING)
def test_participant_managing_delta_refused(team: Team, action: str, order: str) -> None:
    seeded(team)
    news, bad = crafted_after_news(team, "p", _managing(team)[action])
    for receiver in (team.m, team.g):
        deliver_refused(receiver, news, bad, NotAuthorizedError, order)
        view = receiver.members()
        assert view.role_of(team.id("p")) == "participant"
        assert view.role_of(team.id("a")) == "manager"
        assert view.role_of(team.id("g")) == "guest"
        assert view.get(SYBIL.endpoint_id) is None
        assert view.quota() == membership.DEFAULT_QUOTA
    assert_converged(team.a, team.m, team.g)


def test_participant_writes_and_may_leave(team: Team) -> None:
    seeded(team)
    edit = team.p.create(write(7), time=5)
    leave = team.p.create([members.remove_command(team.id("p"))], time=6)
    send(team.a, edit, leave)
    assert team.a.refusal(edit.id) is None and team.a.refusal(leave.id) is None
    assert rdb.view(team.a).get("t", "r") == {"v": 7}
    assert team.a.members().role_of(team.id("p")) is None
    with pytest.raises(PermissionDeniedError, match="not a member"):
        team.p.create(write(8), time=7)


# -- managers -----------------------------------------------------------------------------------


def test_manager_adds_removes_and_changes_roles(team: Team) -> None:
    newcomer = SYBIL
    add = team.a.create(
        [members.add_command(member_id=newcomer.endpoint_id, key=newcomer.public_key, name="n")],
        time=3,
    )
    promote = team.a.create([members.role_command(team.id("p"), "manager")], time=4)
    demote = team.a.create([members.role_command(team.id("m"), "participant")], time=5)
    remove = team.a.create([members.remove_command(team.id("g"))], time=6)
    quota = team.a.create([members.quota_command(10_000_000)], time=7)
    send(team.m, add, promote, demote, remove, quota)
    for replica in (team.a, team.m):
        view = replica.members()
        assert {m.id: m.role for m in view.members()} == {
            team.id("a"): "manager",
            team.id("m"): "participant",
            team.id("p"): "manager",
            newcomer.endpoint_id: "participant",
        }
        assert view.managers() == {team.id("a"), team.id("p")}
        assert view.quota() == 10_000_000
        assert not replica.is_member(team.id("g"))
        assert newcomer.endpoint_id in replica.member_ids()
    # The promoted participant manages now; the demoted manager no longer does.
    send(team.p, add, promote, demote, remove, quota)
    team.p.create([members.role_command(newcomer.endpoint_id, "guest")], time=8)
    with pytest.raises(PermissionDeniedError):
        team.m.create([members.role_command(newcomer.endpoint_id, "manager")], time=8)
    sync([team.a, team.m, team.p])
    assert team.a.members().role_of(newcomer.endpoint_id) == "guest"
    assert_converged(team.a, team.m, team.p)


def test_concurrent_managers_in_both_delivery_orders(team: Team) -> None:
    """Two managers change different members concurrently: both changes hold, whatever the
    order the deltas arrive in."""
    first, second = team.observer("o1"), team.observer("o2")
    by_a = team.a.create([members.role_command(team.id("p"), "manager")], time=3)
    by_m = team.m.create([members.remove_command(team.id("g"))], time=3)
    send(first, by_a)
    send(first, by_m)
    send(second, by_m)
    send(second, by_a)
    sync([team.a, team.m])
    for replica in (team.a, team.m, first, second):
        assert replica.refusal(by_a.id) is None and replica.refusal(by_m.id) is None
        assert replica.members().role_of(team.id("p")) == "manager"
        assert replica.members().role_of(team.id("g")) is None
    assert_converged(team.a, team.m, first, second)


# -- the last manager ---------------------------------------------------------------------------


def _sole_manager(team: Team) -> None:
    demote = team.a.create([members.role_command(team.id("m"), "participant")], time=3)
    for replica in (team.m, team.p, team.g):
        send(replica, demote)
    assert team.a.members().managers() == {team.id("a")}


@pytest.mark.parametrize(
    "commands",
    [
        pytest.param(lambda me: [members.remove_command(me)], id="leave"),
        pytest.param(lambda me: [members.role_command(me, "participant")], id="demote-itself"),
        pytest.param(lambda me: [members.role_command(me, "guest")], id="become-guest"),
    ],
)
def test_last_manager_cannot_leave_or_be_demoted_locally(
    team: Team, commands: Callable[[bytes], list[Command]]
) -> None:
    _sole_manager(team)
    before = snapshot(team.a)
    with pytest.raises(PermissionDeniedError, match="without a manager"):
        team.a.create(commands(team.id("a")), time=5)
    assert snapshot(team.a) == before


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("change", ["leave", "demote-itself"])
def test_last_manager_crafted_delta_refused(team: Team, change: str, order: str) -> None:
    _sole_manager(team)
    me = team.id("a")
    commands = (
        [members.remove_command(me)] if change == "leave" else [members.role_command(me, "guest")]
    )
    news = team.a.create(write(1), time=4)
    bad = craft_next(team.a, team.ids["a"], commands, time=5)
    for receiver in (team.m, team.p):
        deliver_refused(receiver, news, bad, NotAuthorizedError, order)
        assert receiver.members().managers() == {me}


def test_last_manager_may_leave_after_handing_over(team: Team) -> None:
    """Promoting another member and leaving in one delta leaves a manager: allowed."""
    _sole_manager(team)
    me = team.id("a")
    handover = team.a.create(
        [members.role_command(team.id("p"), "manager"), members.remove_command(me)], time=4
    )
    send(team.p, handover)
    for replica in (team.a, team.p):
        assert replica.members().managers() == {team.id("p")}
        assert replica.members().role_of(me) is None


@pytest.mark.parametrize("order", ORDERS)
def test_concurrent_self_demotions_keep_one_manager(team: Team, order: str) -> None:
    """Each of the two managers steps down, concurrently: each is fine in its causal past; at
    execution the second in the total order would leave no manager and is a no-op."""
    observer = team.observer("o")
    by_a = team.a.create([members.role_command(team.id("a"), "participant")], time=3)
    by_m = team.m.create([members.role_command(team.id("m"), "participant")], time=3)
    pair = (by_a, by_m) if order == "dependency-first" else (by_m, by_a)
    send(observer, pair[0])
    send(observer, pair[1])
    sync([team.a, team.m])
    first, later = sorted((by_a, by_m), key=lambda d: d.order_key)
    for replica in (team.a, team.m, observer):
        assert replica.refusal(first.id) is None
        assert replica.refusal(later.id) == membership.LAST_MANAGER
        assert replica.members().managers() == {later.creator}
    assert_converged(team.a, team.m, observer)


# -- losing the right earlier in the total order ------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_command_after_a_concurrent_demotion_is_a_noop(team: Team, order: str) -> None:
    """``m`` adds a member while ``a`` concurrently demotes ``m``; the demotion sorts first
    (``m`` wrote once more before adding, so its add has the higher rank)."""
    seeded(team)
    first, second = team.observer("o1"), team.observer("o2")
    earlier = team.m.create(write(1), time=4)
    add = team.m.create(
        [members.add_command(member_id=SYBIL.endpoint_id, key=SYBIL.public_key, name="s")],
        time=5,
    )
    demote = team.a.create([members.role_command(team.id("m"), "participant")], time=4)
    assert demote.order_key < add.order_key
    if order == "dependency-first":
        send(first, demote)
        send(first, earlier, add)
        send(second, earlier, add)
        send(second, demote)
    else:
        send(first, earlier, add)
        send(first, demote)
        send(second, demote)
        send(second, earlier, add)
    sync([team.a, team.m, team.p])
    for replica in (team.a, team.m, team.p, first, second):
        assert replica.refusal(add.id) == membership.NOT_ALLOWED
        assert replica.refusal(earlier.id) is None
        assert replica.refusal(demote.id) is None
        assert replica.members().get(SYBIL.endpoint_id) is None
        assert replica.members().role_of(team.id("m")) == "participant"
        assert rdb.view(replica).get("t", "r") == {"v": 1}
    assert_converged(team.a, team.m, team.p, first, second)


def test_command_before_a_concurrent_demotion_runs(team: Team) -> None:
    """The same race with the add sorted first: it ran while ``m`` was a manager."""
    add = team.m.create(
        [members.add_command(member_id=SYBIL.endpoint_id, key=SYBIL.public_key, name="s")],
        time=3,
    )
    team.a.create([rdb.create("t", "r", {"v": 0})], time=3)
    demote = team.a.create([members.role_command(team.id("m"), "participant")], time=4)
    assert add.order_key < demote.order_key
    first, second = team.observer("o1"), team.observer("o2")
    send(first, add)
    sync([team.a, team.m])
    first.receive(wires_of(team.a))
    second.receive(wires_of(team.a))
    for replica in (team.a, team.m, first, second):
        assert replica.refusal(add.id) is None
        assert replica.members().role_of(SYBIL.endpoint_id) == "participant"
        assert replica.members().role_of(team.id("m")) == "participant"
    assert_converged(team.a, team.m, first, second)


@pytest.mark.parametrize("order", ORDERS)
def test_write_after_a_concurrent_demotion_to_guest_is_a_noop(team: Team, order: str) -> None:
    """A participant demoted to guest: its concurrent write sorted after the demotion is a
    recorded no-op; the one sorted before ran."""
    seeded(team)
    observer = team.observer("o")
    before = team.p.create(write(1), time=4)
    after = team.p.create(write(2), time=5)
    demote = team.a.create([members.role_command(team.id("p"), "guest")], time=4)
    assert demote.order_key < after.order_key
    if order == "dependency-first":
        send(observer, demote)
        send(observer, before, after)
    else:
        send(observer, before, after)
        send(observer, demote)
    sync([team.a, team.p, team.m])
    for replica in (team.a, team.p, team.m, observer):
        assert replica.refusal(after.id) == membership.NOT_ALLOWED
        ran = before.order_key < demote.order_key
        assert replica.refusal(before.id) == (None if ran else membership.NOT_ALLOWED)
        assert rdb.view(replica).get("t", "r") == {"v": 1 if ran else 0}
        assert replica.members().role_of(team.id("p")) == "guest"
    assert_converged(team.a, team.p, team.m, observer)


# -- quota --------------------------------------------------------------------------------------


def _low_quota(team: Team, limit: int) -> Delta:
    quota = team.a.create([members.quota_command(limit)], time=3)
    for replica in (team.m, team.p, team.g):
        send(replica, quota)
    return quota


def test_over_quota_refused_locally(team: Team) -> None:
    _low_quota(team, 300)
    small = team.p.create([rdb.create("t", "small", {"v": 1})], time=4)
    assert len(small.body) < 300
    before = snapshot(team.p)
    with pytest.raises(PermissionDeniedError, match="quota"):
        team.p.create([rdb.create("t", "big", {"v": "x" * 300})], time=5)
    assert snapshot(team.p) == before


@pytest.mark.parametrize("order", ORDERS)
def test_over_quota_refused_on_every_replica(team: Team, order: str) -> None:
    observer = team.observer("o")
    quota = team.a.create([members.quota_command(300)], time=3)
    send(team.p, quota)
    big = craft_next(team.p, team.ids["p"], [rdb.create("t", "big", {"v": "x" * 300})], time=4)
    assert len(big.body) > 300
    for receiver in (team.m, team.g, observer):
        deliver_refused(receiver, quota, big, QuotaExceededError, order)
        assert rdb.view(receiver).get("t", "big") is None


def test_quota_counts_every_delta_of_the_creator(team: Team) -> None:
    _low_quota(team, 400)
    first = team.p.create([rdb.create("t", "one", {"v": "x" * 100})], time=4)
    second = craft_next(team.p, team.ids["p"], [rdb.create("t", "two", {"v": "y" * 250})], time=5)
    assert len(first.body) < 400 < len(first.body) + len(second.body)
    send(team.m, first)
    assert_refused(team.m, second, QuotaExceededError)
    assert rdb.view(team.m).get("t", "one") == {"v": "x" * 100}


def test_a_delta_that_does_not_see_the_quota_is_judged_on_the_default(team: Team) -> None:
    """The quota, like roles, is decided on the delta's causal past: a delta made before the
    quota was lowered counts against the old one."""
    observer = team.observer("o")
    quota = team.a.create([members.quota_command(300)], time=3)
    big = team.p.create([rdb.create("t", "big", {"v": "x" * 300})], time=3)
    send(observer, quota, big)
    sync([team.a, team.p, observer])
    for replica in (team.a, team.p, observer):
        assert rdb.view(replica).get("t", "big") == {"v": "x" * 300}
    assert_converged(team.a, team.p, observer)


# -- commands this release cannot read ----------------------------------------------------------


UNKNOWN = {
    "unknown-command": Command(engine="db", name="frobnicate", args={"x": 1}),
    "unknown-engine": Command(engine="wiki", name="edit", args={"page": "home"}),
    "unknown-arguments": Command(engine="db", name="set", args={"table": "t", "shiny": 1}),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", sorted(UNKNOWN))
def test_unknown_command_is_kept_relayed_and_a_noop(team: Team, kind: str, order: str) -> None:
    seeded(team)
    first, second = team.observer("o1"), team.observer("o2")
    newer = craft_next(team.p, team.ids["p"], [UNKNOWN[kind]], time=4)
    concurrent = team.a.create(write(3), time=4)
    for observer, deltas in ((first, (newer, concurrent)), (second, (concurrent, newer))):
        for delta in deltas:
            result = send(observer, delta)
            assert result.unsupported == ((newer.id,) if delta is newer else ())
        assert observer.store.delta_info(observer.space_id, *newer.id) is not None
        assert observer.refusal(newer.id) == UNSUPPORTED
        assert observer.pending_count == 0
        assert rdb.view(observer).get("t", "r") == {"v": 3}
    # The creator's release made it: its own replica keeps it the same way, and its next delta
    # (chained after it) runs everywhere.
    assert send(team.p, newer).unsupported == (newer.id,)
    after = team.p.create(write(4), time=6)
    # Relayed: an observer hands it on like any executed delta.
    relayed = [w for d, w in send(team.m, newer, after).executed_wires if d.id == newer.id]
    assert relayed == [newer.wire()]
    send(first, after)
    send(second, after)
    sync([team.a, team.p, team.m])
    for replica in (team.a, team.p, team.m, first, second):
        assert replica.refusal(after.id) is None
        assert rdb.view(replica).get("t", "r") == {"v": 4}
    assert_converged(team.a, team.p, team.m, first, second)


def test_unknown_command_from_a_stranger_is_refused(team: Team) -> None:
    stranger = team.observer("o")
    bad = craft_next(stranger, team.ids["o"], [UNKNOWN["unknown-command"]], time=4)
    result = team.a.receive([bad.wire()])
    assert [type(r.error) for r in result.rejected] == [NotMemberError]
    assert team.a.pending_count == 0


# -- equivocation evidence only ever lets more in, and reaches everyone -------------------------


def test_an_equivocators_later_delta_is_void_once_the_evidence_arrives(team: Team) -> None:
    """``p`` signs two deltas with one id; ``m`` holds both (the evidence), an observer only
    the copy every replica keeps. ``p``'s next delta, built on that copy, tries to promote it.
    Without the evidence the observer judges its commands and refuses it; ``m`` holds the
    evidence, so the delta is void there (judged on membership only) and accepted as a no-op.
    Evidence only turns refusals into void acceptances, never the reverse, so once the
    observer meets the evidence (every Revision carries it) the refused delta, sent again, is
    accepted the same way: both replicas converge, and ``p`` never manages anything."""
    observer = team.observer("o")
    me = team.ids["p"]
    one = craft_next(team.p, me, write(1), time=4)
    other = twin(one, me, write(2))
    kept, lost = sorted((one, other), key=lambda d: (d.rank, d.hash))
    send(team.p, kept)  # the creator's own chain goes on from the copy that is kept
    send(team.m, kept)
    assert team.m.receive([lost.wire()]).rejected  # the second copy: evidence
    assert team.m.equivocators() == {team.id("p"): kept.seq}
    send(observer, kept)
    assert observer.equivocators() == {}
    promote = craft_next(team.p, me, [members.role_command(team.id("p"), "manager")], time=5)
    assert promote.prev == kept.hash
    assert_refused(observer, promote, NotAuthorizedError)
    assert not send(team.m, promote).rejected
    assert team.m.refusal(promote.id) is not None  # stored, executed as a no-op
    # The evidence travels with m's next Revision: the observer records the fork, and the
    # delta it refused before is accepted, void, when it is offered again.
    observer.receive(team.m.evidence_wires())
    assert observer.equivocators() == team.m.equivocators()
    assert observer.evidence_digest() == team.m.evidence_digest() != b""
    assert not send(observer, promote).rejected
    assert observer.refusal(promote.id) is not None
    for replica in (observer, team.m):
        assert replica.members().role_of(team.id("p")) == "participant"
    assert observer.order_digest() == team.m.order_digest()
    assert observer.state_digest() == team.m.state_digest()
