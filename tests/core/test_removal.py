"""Removal: concurrent deltas of a removed member are void, later ones refused, re-admission.

A removed member's deltas that its removal does not cover and that do not cover the removal
were made concurrently with it: every replica accepts, stores and relays them but executes them
as no-ops, also where they executed before the removal arrived (undo/redo turns them into
no-ops). A delta whose causal past holds the removal is refused (its creator is not a member
there). Every rule is checked in both delivery orders.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from p2pspace.core.delta import Command, Delta
from p2pspace.core.identity import Identity
from p2pspace.core.merge import VOID
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members, rdb
from p2pspace.errors import NotMemberError, PermissionDeniedError
from p2pspace.testing.hostile import craft_next
from tests.helpers.replicas import UndoCounter
from tests.helpers.teams import (
    Team,
    assert_converged,
    assert_refused,
    check_refused,
    executed_ids,
    make_team,
    send,
    sync,
)

ORDERS = ("removal-first", "deltas-first")


@pytest.fixture
def team(make_store: Callable[[str], Store], identities: list[Identity]) -> Team:
    team = make_team(make_store, identities)
    seed = team.a.create([rdb.create("t", "r", {"v": 0})], time=3)
    for replica in (team.m, team.p, team.g):
        send(replica, seed)
    return team


def write(i: int) -> list[Command]:
    return [rdb.set_fields("t", "r", {"v": i})]


def deliver(replica: Replica, first: tuple[Delta, ...], then: tuple[Delta, ...]) -> None:
    send(replica, *first)
    send(replica, *then)


@pytest.mark.parametrize("order", ORDERS)
def test_concurrent_deltas_of_a_removed_member_are_void(team: Team, order: str) -> None:
    observer = team.observer("o")
    counter = UndoCounter(observer)
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    concurrent = (team.p.create(write(1), time=4), team.p.create(write(2), time=5))
    if order == "removal-first":
        deliver(observer, (removal,), concurrent)
        assert counter.calls == 0
    else:
        send(observer, *concurrent)
        assert rdb.view(observer).get("t", "r") == {"v": 2}
        send(observer, removal)
        # They executed before the removal arrived: undone and redone as no-ops.
        assert counter.calls == 1
        assert set(counter.counts) >= {d.id for d in concurrent}
    sync([team.a, team.p, team.m])
    everyone = (team.a, team.p, team.m, observer)
    for replica in everyone:
        assert {d.id for d in concurrent} <= executed_ids(replica)  # stored and relayable
        for delta in concurrent:
            assert replica.refusal(delta.id) == VOID
        assert replica.refusal(removal.id) is None
        assert rdb.view(replica).get("t", "r") == {"v": 0}
        assert replica.members().role_of(team.id("p")) is None
        assert replica.pending_count == 0
    assert_converged(*everyone)


@pytest.mark.parametrize("order", ORDERS)
def test_void_deltas_of_a_removed_member_change_nothing_that_depends_on_them(
    team: Team, order: str
) -> None:
    """Another member built on the removed member's concurrent write before the removal
    arrived: that member's delta still runs (it is not void), over a state without the void
    write."""
    observer = team.observer("o")
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    void = team.p.create([rdb.create("t", "x", {"by": "p"})], time=4)
    send(team.m, void)
    built = team.m.create([rdb.set_fields("t", "r", {"v": 5})], time=5)
    if order == "removal-first":
        deliver(observer, (removal,), (void, built))
    else:
        deliver(observer, (void, built), (removal,))
    sync([team.a, team.p, team.m])
    for replica in (team.a, team.p, team.m, observer):
        assert replica.refusal(void.id) == VOID
        assert replica.refusal(built.id) is None
        assert rdb.view(replica).get("t", "x") is None
        assert rdb.view(replica).get("t", "r") == {"v": 5}
    assert_converged(team.a, team.p, team.m, observer)


@pytest.mark.parametrize("order", ORDERS)
def test_concurrent_managing_of_a_removed_manager_is_void(team: Team, order: str) -> None:
    """``a`` removes the manager ``m`` while ``m`` removes the guest and promotes ``p``."""
    observer = team.observer("o")
    removal = team.a.create([members.remove_command(team.id("m"))], time=4)
    managing = (
        team.m.create([members.remove_command(team.id("g"))], time=4),
        team.m.create([members.role_command(team.id("p"), "manager")], time=5),
    )
    if order == "removal-first":
        deliver(observer, (removal,), managing)
    else:
        deliver(observer, managing, (removal,))
    sync([team.a, team.m, team.p])
    for replica in (team.a, team.m, team.p, observer):
        for delta in managing:
            assert replica.refusal(delta.id) == VOID
        view = replica.members()
        assert view.role_of(team.id("g")) == "guest"
        assert view.role_of(team.id("p")) == "participant"
        assert view.managers() == {team.id("a")}
    assert_converged(team.a, team.m, team.p, observer)


@pytest.mark.parametrize("order", ORDERS)
def test_delta_covering_its_creators_removal_is_refused(team: Team, order: str) -> None:
    observer = team.observer("o")
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    send(team.p, removal)
    with pytest.raises(PermissionDeniedError, match="not a member"):
        team.p.create(write(1), time=5)
    late = craft_next(team.p, team.ids["p"], write(1), time=5)
    assert dict(late.deps)[team.id("a")] >= removal.seq
    if order == "removal-first":
        send(observer, removal)
        assert_refused(observer, late, NotMemberError)
    else:
        waiting = observer.receive([late.wire()])
        assert not waiting.rejected and observer.pending_count == 1
        released = observer.receive([removal.wire()])
        check_refused(observer, late, NotMemberError, released, late=True)
    send(team.m, removal)
    assert_refused(team.m, late, NotMemberError)
    for replica in (team.a, observer):
        assert rdb.view(replica).get("t", "r") == {"v": 0}


def test_removed_member_backdating_past_its_removal_is_void_not_refused(team: Team) -> None:
    """Knowing it was removed, a member crafts a delta whose past stops before the removal (a
    low rank sorts it early): it is not refused -- a replica that accepted it before the
    removal may have built on it -- but it is void on every replica."""
    observer = team.observer("o")
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    send(team.p, removal)
    old = {team.id("a"): removal.seq - 1}
    backdated = craft_next(team.p, team.ids["p"], write(9), time=5, deps=old)
    assert backdated.rank <= removal.rank
    send(observer, backdated)
    assert rdb.view(observer).get("t", "r") == {"v": 9}
    send(observer, removal)
    send(team.a, backdated)
    send(team.m, removal, backdated)
    for replica in (team.a, team.m, observer):
        assert replica.refusal(backdated.id) == VOID
        assert rdb.view(replica).get("t", "r") == {"v": 0}
    assert_converged(team.a, team.m, observer)


def test_removed_member_cannot_undo_its_removal(team: Team) -> None:
    """Re-adding itself, or anyone, needs membership in the delta's causal past."""
    removal = team.a.create([members.remove_command(team.id("m"))], time=4)
    send(team.m, removal)
    me = team.ids["m"]
    for commands in (
        [members.add_command(member_id=me.endpoint_id, key=me.public_key, name="m")],
        [members.role_command(team.id("a"), "guest")],
    ):
        bad = craft_next(team.m, me, commands, time=5)
        assert_refused(team.a, bad, NotMemberError)
    assert team.a.members().managers() == {team.id("a")}


@pytest.mark.parametrize("order", ORDERS)
def test_managers_removing_each_other_the_first_in_the_order_wins(team: Team, order: str) -> None:
    """Both removals are valid in their causal pasts; at execution the later one finds its
    creator removed. Every replica must keep the same one, whichever arrived first."""
    observer = team.observer("o")
    by_a = team.a.create([members.remove_command(team.id("m"))], time=4)
    by_m = team.m.create([members.remove_command(team.id("a"))], time=4)
    first, later = sorted((by_a, by_m), key=lambda d: d.order_key)
    if order == "removal-first":
        deliver(observer, (first,), (later,))
    else:
        deliver(observer, (later,), (first,))
    sync([team.a, team.m, team.p])
    everyone = (team.a, team.m, team.p, observer)
    for replica in everyone:
        view = replica.members()
        assert replica.refusal(first.id) is None, replica.refusal(first.id)
        assert replica.refusal(later.id) is not None
        assert view.managers() == {first.creator}
        assert view.role_of(later.creator) is None
    assert_converged(*everyone)


@pytest.mark.parametrize("order", ORDERS)
def test_removal_then_re_admission(team: Team, order: str) -> None:
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    void = team.p.create(write(1), time=4)
    observer = team.observer("o")
    if order == "removal-first":
        deliver(observer, (removal,), (void,))
    else:
        deliver(observer, (void,), (removal,))
    sync([team.a, team.p, team.m, observer])
    me = team.ids["p"]
    # Between its removal and a new add, what it makes is refused everywhere.
    between = craft_next(team.p, me, write(2), time=5)
    assert_refused(team.a, between, NotMemberError)
    again = team.a.create(
        [members.add_command(member_id=me.endpoint_id, key=me.public_key, name="p2", role="guest")],
        time=6,
    )
    promote = team.a.create([members.role_command(me.endpoint_id, "participant")], time=7)
    send(team.p, again, promote)
    assert team.p.members().role_of(me.endpoint_id) == "participant"
    fresh = team.p.create(write(3), time=8)
    sync([team.a, team.p, team.m, observer])
    for replica in (team.a, team.p, team.m, observer):
        assert replica.refusal(void.id) == VOID
        assert replica.refusal(fresh.id) is None
        assert rdb.view(replica).get("t", "r") == {"v": 3}
        record = replica.members().get(me.endpoint_id)
        assert record is not None and record.current and record.name == "p2"
        assert record.added_by == again.id
        assert replica.is_member(me.endpoint_id)
    assert_converged(team.a, team.p, team.m, observer)


def test_re_admitted_member_made_void_deltas_stay_void(team: Team) -> None:
    """Re-admission does not revive what was void: a removal and a re-add arriving after the
    removed member's concurrent deltas leave them no-ops."""
    observer = team.observer("o")
    removal = team.a.create([members.remove_command(team.id("p"))], time=4)
    again = team.a.create(
        [
            members.add_command(
                member_id=team.id("p"), key=team.ids["p"].public_key, name="p", role="participant"
            )
        ],
        time=5,
    )
    void = team.p.create(write(1), time=4)
    send(observer, void)
    assert rdb.view(observer).get("t", "r") == {"v": 1}
    send(observer, removal, again)
    assert observer.refusal(void.id) == VOID
    assert rdb.view(observer).get("t", "r") == {"v": 0}
    assert observer.members().role_of(team.id("p")) == "participant"


def test_last_manager_cannot_be_removed(team: Team) -> None:
    """The only manager can be removed only by a manager, itself: refused."""
    demote = team.a.create([members.role_command(team.id("m"), "participant")], time=4)
    for replica in (team.m, team.p):
        send(replica, demote)
    with pytest.raises(PermissionDeniedError, match="without a manager"):
        team.a.create([members.remove_command(team.id("a"))], time=5)
    with pytest.raises(PermissionDeniedError):
        team.m.create([members.remove_command(team.id("a"))], time=5)
    assert team.a.members().managers() == {team.id("a")}
