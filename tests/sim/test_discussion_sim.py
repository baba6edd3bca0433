"""The discussion tool on the simulated network: conflicts resolve the same way everywhere.

Each simulated endpoint gets a :class:`Discussion` over its own replica (the simulator's space
has one rdb instance, ``db``, which the tool is pointed at); a commit is
``endpoint.create(space, commands, time=net.now)``. Two changes made at the same virtual instant,
with no network step in between, are concurrent: neither endpoint had seen the other's.

Edits of one post by two endpoints cannot both come from the tool (only the author may edit, and
one endpoint's deltas are never concurrent with each other). Roles are not enforced inside
commands yet, so another client can still write the same fields: :func:`foreign_edit` does that,
with the tool's command shape, to check that such conflicts converge too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from p2pspace.core.delta import Command, Delta
from p2pspace.engines import rdb
from p2pspace.errors import LocalProtocolError
from p2pspace.testing import Faults, SimNetwork
from p2pspace.testing.faults import NETWORK_FAULTS
from p2pspace.tools.discussion import Discussion, topic_of

INSTANCE = "db"  # the simulator's space holds the default rdb instance only

Shape = list[tuple[int, str, str, str, bool]]


class SimForum:
    """A SimNetwork and a way to get each endpoint's discussion tool (rebuilt on every call, so
    it follows an endpoint across crashes and restarts)."""

    def __init__(
        self, root: Path, *, seed: int, endpoints: int = 3, faults: Faults | None = None
    ) -> None:
        self.net = SimNetwork(root, endpoints=endpoints, seed=seed, faults=faults or Faults())
        self.made: list[list[Delta]] = [[] for _ in range(endpoints)]

    def tool(self, i: int) -> Discussion:
        net = self.net
        endpoint = net.endpoint(i)
        space = net.space_id

        def commit(commands: Any) -> Delta:
            delta = endpoint.create(space, commands, time=net.now)
            self.made[i].append(delta)
            return delta

        def acks() -> dict[bytes, dict[bytes, int]]:
            return {
                s.peer: dict(s.acked(space))
                for s in endpoint.sessions
                if s.peer is not None and s.syncs(space)
            }

        return Discussion(
            net.replica(i),
            commit=commit,
            now=lambda: net.now,
            acks=acks,
            instance=INSTANCE,
        )

    def up(self) -> list[int]:
        return [n.index for n in self.net.nodes if n.endpoint is not None]

    def settle(self) -> None:
        assert self.net.run_until_quiet(), f"seed {self.net.seed}: replicas did not settle"
        result = self.net.check_convergence()
        assert result.converged, f"seed {self.net.seed}: {result.reasons}"

    def shapes(self, topic: str) -> list[Shape]:
        return [shape(self.tool(i), topic) for i in self.up()]

    def forum(self, i: int) -> list[tuple[str, Shape]]:
        tool = self.tool(i)
        return [(t.post.id, shape(tool, t.post.id)) for t in tool.topics()]

    def close(self) -> None:
        self.net.close()


def shape(tool: Discussion, topic: str) -> Shape:
    return [(d, p.id, p.title, p.body, p.deleted) for d, p in tool.walk(topic)]


def foreign_edit(forum: SimForum, i: int, post_id: str, body: str) -> Delta:
    """Endpoint ``i`` writes ``post_id``'s body as the tool's edit would, without being its
    author (what a client that skips the tool's local check can do)."""
    net = forum.net
    topic = topic_of(post_id)
    table = "topics" if post_id == topic else f"r:{topic}"
    me = net.endpoint(i).endpoint_id
    fields = {"body": body, "edited": net.now, "rev": [me, net.replica(i).vector.get(me, 0) + 1]}
    command: Command = rdb.set_fields(table, post_id, fields, instance=INSTANCE)
    delta = net.endpoint(i).create(net.space_id, [command], time=net.now)
    forum.made[i].append(delta)
    return delta


def busy(forum: SimForum, i: int) -> None:
    """One unrelated delta: the endpoint's next delta gets a higher rank than its peers'."""
    net = forum.net
    net.endpoint(i).create(net.space_id, [rdb.set_fields("t", "r0", {"v": i})], time=net.now)


@pytest.fixture
def forum(tmp_path: Path) -> Iterator[SimForum]:
    f = SimForum(tmp_path, seed=7)
    f.settle()  # every endpoint holds its membership
    yield f
    f.close()


# -- conflicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("later", ["author", "other"])
def test_a_foreign_edit_concurrent_with_the_authors_is_ignored_everywhere(
    forum: SimForum, later: str
) -> None:
    # Posts are owned records: a set by anyone but the author is a recorded no-op on every
    # replica, whichever comes later in the total order.
    topic = forum.tool(0).post("Topic", "v0")
    forum.settle()
    # Who is later in the total order: the higher rank, made so by one extra unseen delta.
    busy(forum, 0 if later == "author" else 1)
    forum.tool(0).edit(topic, "by the author")
    mine = forum.made[0][-1]
    theirs = foreign_edit(forum, 1, topic, "by endpoint 1")
    forum.settle()
    assert (mine.order_key > theirs.order_key) == (later == "author")
    winner = "by the author"
    order = [(e["creator"], e["seq"]) for e in forum.net.replica(2).dump_order()]
    last = max((mine, theirs), key=lambda d: order.index((d.creator.hex(), d.seq)))
    assert last is (mine if later == "author" else theirs)
    for i in forum.up():
        assert forum.tool(i).get(topic).body == winner
    assert len({str(s) for s in forum.shapes(topic)}) == 1


def test_a_reply_concurrent_with_a_delete_stays_under_the_tombstone(forum: SimForum) -> None:
    t0 = forum.tool(0)
    topic = t0.post("Topic", "text")
    middle = t0.reply(topic, "middle")
    forum.settle()
    t0.delete(middle)
    t0.delete(topic)
    # Concurrently (neither has seen the deletes): replies to both deleted posts.
    under_middle = forum.tool(1).reply(middle, "to the middle")
    under_topic = forum.tool(2).reply(topic, "to the topic")
    forum.settle()
    shapes = forum.shapes(topic)
    assert len(shapes) == 3 and all(s == shapes[0] for s in shapes)
    rows = {row[1]: row for row in shapes[0]}
    assert rows[topic] == (0, topic, "", "", True)
    assert rows[middle] == (1, middle, "", "", True)
    assert rows[under_middle] == (2, under_middle, "", "to the middle", False)
    assert rows[under_topic] == (1, under_topic, "", "to the topic", False)
    for i in forum.up():
        (summary,) = forum.tool(i).topics()
        # The deleted middle reply is not counted; the two replies under tombstones are.
        assert summary.replies == 2 and summary.post.deleted


@pytest.mark.parametrize("later", ["undo", "edit"])
def test_undo_concurrent_with_an_edit_agrees_everywhere(forum: SimForum, later: str) -> None:
    t0 = forum.tool(0)
    topic = t0.post("Topic", "v0")
    forum.settle()
    forum.tool(0).edit(topic, "v1")
    forum.settle()
    busy(forum, 0 if later == "undo" else 1)
    assert forum.tool(0).undo_last() == topic
    undo = forum.made[0][-1]
    edit = foreign_edit(forum, 1, topic, "edited by 1")
    forum.settle()
    assert (undo.order_key > edit.order_key) == (later == "undo")
    expected = "v0"  # the foreign edit is a no-op in either order
    for i in forum.up():
        tool = forum.tool(i)
        assert tool.get(topic).body == expected
        assert tool.get(topic).title == "Topic"
    assert len({str(s) for s in forum.shapes(topic)}) == 1
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        forum.tool(0).undo_last()


# -- sync status ---------------------------------------------------------------------------------


def test_status_goes_pending_then_delivered_to_k_of_n(forum: SimForum) -> None:
    net = forum.net
    net.crash(2)
    topic = forum.tool(0).post("Status", "")
    assert forum.tool(0).get(topic).status.describe() == "pending"
    net.run_for(1_000)
    assert forum.tool(0).get(topic).status.describe() == "delivered to 2 of 3"
    assert forum.tool(1).get(topic).status.describe() == "delivered to 2 of 3"
    net.restart(2)
    forum.settle()
    for i in range(3):
        status = forum.tool(i).get(topic).status
        assert not status.pending and status.describe() == "delivered to 3 of 3"
    forum.tool(0).edit(topic, "again")
    assert forum.tool(0).get(topic).status.pending
    forum.settle()
    assert forum.tool(0).get(topic).status.describe() == "delivered to 3 of 3"


# -- random interleavings under faults -----------------------------------------------------------

OPS = ("post", "reply", "reply", "edit", "delete", "undo")

operations = st.lists(
    st.tuples(
        st.integers(0, 3),  # who (modulo the number of endpoints)
        st.sampled_from(OPS),
        st.integers(0, 1_000),  # which post (modulo what the endpoint sees)
        st.integers(0, 250),  # virtual ms before the operation
    ),
    min_size=10,
    max_size=40,
)


def apply(forum: SimForum, who: int, op: str, pick: int, n: int) -> None:
    """One user action through the tool; refusals (a deleted parent, nothing to undo) are what
    the user would see, and change nothing."""
    net = forum.net
    who %= len(net.nodes)
    if net.nodes[who].endpoint is None or not net.replica(who).can_create():
        return
    tool = forum.tool(who)
    posts = [p for t in tool.topics() for _d, p in tool.walk(t.post.id)]
    mine = [p.id for p in posts if p.author == tool.me and not p.deleted]
    try:
        if op == "post" or not posts:
            tool.post(f"topic {n}", f"body {n}")
        elif op == "reply":
            tool.reply(posts[pick % len(posts)].id, f"reply {n}")
        elif op == "edit" and mine:
            post = mine[pick % len(mine)]
            tool.edit(post, f"edit {n}", title=f"title {n}" if post == topic_of(post) else None)
        elif op == "delete" and mine:
            tool.delete(mine[pick % len(mine)])
        elif op == "undo":
            tool.undo_last()
    except LocalProtocolError:
        pass


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**16),
    endpoints=st.integers(2, 4),
    faults=st.sets(st.sampled_from(NETWORK_FAULTS)),
    ops=operations,
)
def test_random_interleavings_show_the_same_threads_everywhere(
    seed: int, endpoints: int, faults: set[str], ops: list[tuple[int, str, int, int]]
) -> None:
    note(f"replay: seed={seed} endpoints={endpoints} faults={sorted(faults)}")
    with tempfile.TemporaryDirectory(prefix="discussion-sim-") as tmp:
        forum = SimForum(Path(tmp), seed=seed, endpoints=endpoints, faults=Faults.of(faults))
        try:
            forum.net.schedule_faults(over_ms=sum(o[3] for o in ops) + 500)
            for n, (who, op, pick, delay) in enumerate(ops):
                forum.net.run_for(delay)
                apply(forum, who, op, pick, n)
            forum.net.heal()
            forum.settle()
            views = [forum.forum(i) for i in range(endpoints)]
            note(f"forum at endpoint 0: {views[0]}")
            assert all(view == views[0] for view in views[1:])
            made = sum(len(m) for m in forum.made)
            event("tool deltas: " + ("0" if not made else "1-9" if made < 10 else "10+"))
            assert forum.net.replica(0).executed_count() >= made
        finally:
            forum.close()
