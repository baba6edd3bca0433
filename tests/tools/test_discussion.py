"""The discussion tool (``p2pspace.tools.discussion``) on one endpoint or two linked in process
(see :mod:`tests.tools.forum`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pspace.core.delta import Delta
from p2pspace.engines import rdb
from p2pspace.errors import (
    ConflictError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
)
from p2pspace.node.home import open_endpoint
from p2pspace.testing.loopback import pump
from p2pspace.tools.discussion import (
    INSTANCE,
    MAX_BODY,
    MAX_TITLE,
    Discussion,
    post_location,
    topic_of,
)
from tests.tools.forum import Forum, Member, shape, snapshot

# Well-formed post ids that no test makes.
ABSENT = "0" * 16 + "~" + "0" * 16
ABSENT_F = "f" * 16 + "~" + "f" * 16


# -- posting and replying ----------------------------------------------------------------------


def test_post_makes_a_topic_in_one_delta(solo: Forum) -> None:
    (alice,) = solo.members
    before = alice.replica.vector[alice.endpoint.endpoint_id]
    topic = alice.tool.post("  Lunch?  ", "Where shall we go?")
    # In alice's namespace: <16 hex of her id>~<16 hex>.
    made_at = solo.clock.t  # views read the clock too (to clamp what they show)
    _namespace, _sep, local = topic.partition("~")
    assert topic == rdb.owned_id(alice.endpoint.endpoint_id, local)
    assert len(local) == 16 and int(local, 16) >= 0
    assert topic_of(topic) == topic and post_location(topic) == ("topics", topic)
    assert alice.replica.vector[alice.endpoint.endpoint_id] == before + 1
    assert len(alice.deltas) == 1
    post = alice.tool.get(topic)
    assert post.is_topic and post.parent == "" and post.topic == topic
    assert post.title == "Lunch?"  # stripped
    assert post.body == "Where shall we go?"
    assert post.author == alice.endpoint.endpoint_id
    assert post.author_name == "alice"
    assert post.created == made_at and post.edited == 0 and not post.deleted
    assert post.rev == (alice.endpoint.endpoint_id, before + 1)
    (summary,) = alice.tool.topics()
    assert summary.post.id == topic and summary.replies == 0
    assert summary.last_activity == post.created


def test_replies_nest_and_name_their_thread(solo: Forum) -> None:
    (alice,) = solo.members
    tool = alice.tool
    topic = tool.post("Plan", "")
    first = tool.reply(topic, "one")
    nested = tool.reply(first, "one.one")
    second = tool.reply(topic, "two")
    deeper = tool.reply(nested, "one.one.one")
    me = alice.endpoint.endpoint_id
    for reply in (first, nested, second, deeper):
        assert reply.startswith(topic + ".") and topic_of(reply) == topic
        table, record = post_location(reply)
        assert (table, rdb.namespace_of(record)) == (f"r:{topic}", rdb.namespace(me))
    assert tool.get(nested).parent == first
    assert tool.get(first).parent == topic
    assert shape(tool, topic) == [
        (0, topic, "Plan", "", False),
        (1, first, "", "one", False),
        (2, nested, "", "one.one", False),
        (3, deeper, "", "one.one.one", False),
        (1, second, "", "two", False),
    ]
    # thread() is the same tree, nested; any post id of the thread names it.
    root = tool.thread(deeper)
    assert root.id == topic
    assert [r.id for r in root.replies] == [first, second]
    assert [r.id for r in root.replies[0].replies] == [nested]
    (summary,) = tool.topics()
    assert summary.replies == 4
    assert summary.last_activity == tool.get(deeper).created


def test_siblings_have_a_stable_order(forum_of: Callable[[list[str]], Forum]) -> None:
    forum = forum_of(["alice", "bob"])
    alice, bob = forum.members
    forum.connect(0, 1)
    topic = alice.tool.post("Order", "")
    forum.sync()
    forum.clock.frozen = True  # every reply below has the same ``created``
    made = [alice.tool.reply(topic, "a1"), bob.tool.reply(topic, "b1")]
    made += [alice.tool.reply(topic, "a2"), bob.tool.reply(topic, "b2")]
    forum.clock.frozen = False
    later = bob.tool.reply(topic, "latest")
    forum.sync()
    ids = [p.id for _d, p in alice.tool.walk(topic)][1:]
    # Same time: by author id, then by post id; the later post comes last.
    tied = sorted(made, key=lambda r: (alice.tool.get(r).author, r))
    assert ids == [*tied, later]
    assert [p.id for _d, p in bob.tool.walk(topic)][1:] == ids
    low = min(alice.endpoint.endpoint_id, bob.endpoint.endpoint_id)
    assert {alice.tool.get(r).author for r in ids[:2]} == {low}
    # Asking again gives the same order.
    assert [p.id for _d, p in alice.tool.walk(topic)][1:] == ids


def test_topics_list_newest_activity_first(solo: Forum) -> None:
    tool = solo.members[0].tool
    old = tool.post("old", "")
    new = tool.post("new", "")
    assert [t.post.id for t in tool.topics()] == [new, old]
    tool.reply(old, "bump")
    assert [t.post.id for t in tool.topics()] == [old, new]
    tool.edit(new, "edited later")
    assert [t.post.id for t in tool.topics()] == [new, old]


# -- editing, deleting and undo ----------------------------------------------------------------


def test_edit_replaces_body_and_title(solo: Forum) -> None:
    (alice,) = solo.members
    tool = alice.tool
    topic = tool.post("Title", "body")
    reply = tool.reply(topic, "reply")
    tool.edit(topic, "new body", title="New title")
    tool.edit(reply, "new reply")
    post = tool.get(topic)
    assert (post.title, post.body) == ("New title", "new body")
    assert post.edited > post.created
    assert post.rev == (alice.endpoint.endpoint_id, alice.replica.vector[post.author] - 1)
    assert tool.get(reply).body == "new reply"
    tool.edit(topic, "only the body")
    assert tool.get(topic).title == "New title"
    with pytest.raises(LocalProtocolError, match="only a topic has a title"):
        tool.edit(reply, "x", title="no")


def test_only_the_author_edits_or_deletes(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Mine", "hands off")
    reply = alice.tool.reply(topic, "also mine")
    pair.sync()
    before = snapshot(bob)
    for post_id in (topic, reply):
        with pytest.raises(LocalProtocolError, match="only the author"):
            bob.tool.edit(post_id, "changed")
        with pytest.raises(LocalProtocolError, match="only the author"):
            bob.tool.delete(post_id)
    assert snapshot(bob) == before
    assert bob.deltas == []
    # Bob can still reply, and change his own reply.
    answer = bob.tool.reply(reply, "a reply is fine")
    bob.tool.edit(answer, "and my own edit")
    with pytest.raises(LocalProtocolError, match="no post"):
        alice.tool.delete(answer)  # not arrived yet
    pair.sync()
    with pytest.raises(LocalProtocolError, match="only the author"):
        alice.tool.delete(answer)
    assert alice.tool.get(answer).body == "and my own edit"


def test_delete_keeps_the_thread_shape(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Topic", "text")
    middle = alice.tool.reply(topic, "middle")
    pair.sync()
    under = bob.tool.reply(middle, "under the middle")
    pair.sync()
    before = [(d, p.id) for d, p in alice.tool.walk(topic)]
    alice.tool.delete(middle)
    pair.sync()
    for m in (alice, bob):
        assert [(d, p.id) for d, p in m.tool.walk(topic)] == before
        gone = m.tool.get(middle)
        assert gone.deleted and gone.body == ""
        assert m.tool.get(under).body == "under the middle"
        assert m.view.get(*post_location(middle)) is not None  # a tombstone, not an rdb delete
    with pytest.raises(LocalProtocolError, match="deleted"):
        bob.tool.reply(middle, "too late")
    with pytest.raises(LocalProtocolError, match="already deleted"):
        alice.tool.delete(middle)
    with pytest.raises(LocalProtocolError, match="deleted"):
        alice.tool.edit(middle, "revive?")
    alice.tool.delete(topic)
    pair.sync()
    for m in (alice, bob):
        assert shape(m.tool, topic) == [
            (0, topic, "", "", True),
            (1, middle, "", "", True),
            (2, under, "", "under the middle", False),
        ]
        (summary,) = m.tool.topics()
        # The count is of replies that say something: the deleted middle one is not counted.
        assert summary.post.deleted and summary.replies == 1


def test_undo_restores_exactly_what_was_replaced(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Title", "original")
    pair.sync()
    original = dict(alice.view.get("topics", topic) or {})

    alice.tool.edit(topic, "edited", title="Edited")
    assert alice.tool.last_change() == {
        "post": topic,
        "kind": "edit",
        "fields": {"body": "original", "edited": 0, "title": "Title"},
    }
    sent = len(alice.deltas)
    assert alice.tool.undo_last() == topic
    assert len(alice.deltas) == sent + 1  # undo is one new delta
    undo_delta = alice.deltas[-1]
    restored = dict(alice.view.get("topics", topic) or {})
    assert restored.pop("rev") == [alice.endpoint.endpoint_id, undo_delta.seq]
    assert restored == {k: v for k, v in original.items() if k != "rev"}
    assert alice.tool.last_change() is None
    # The undo is replicated like any change.
    pair.sync()
    assert bob.view.get("topics", topic) == alice.view.get("topics", topic)
    assert bob.replica.state_digest() == alice.replica.state_digest()
    assert [(e.kind, e.post) for e in bob.events[-2:]] == [("edited", topic), ("edited", topic)]

    # Undo of a delete brings the text back, in the same place.
    reply = alice.tool.reply(topic, "keep me")
    alice.tool.delete(reply)
    alice.tool.undo_last()
    pair.sync()
    for m in (alice, bob):
        back = m.tool.get(reply)
        assert not back.deleted and back.body == "keep me" and back.edited == 0
        assert shape(m.tool, topic)[1] == (1, reply, "", "keep me", False)
    # A topic's title comes back too.
    alice.tool.delete(topic)
    assert alice.tool.get(topic).title == ""
    alice.tool.undo_last()
    pair.sync()
    for m in (alice, bob):
        assert shape(m.tool, topic)[0] == (0, topic, "Title", "original", False)


def test_undo_reverts_only_the_last_change(solo: Forum) -> None:
    tool = solo.members[0].tool
    topic = tool.post("T", "t0")
    reply = tool.reply(topic, "r0")
    tool.edit(topic, "t1")
    tool.edit(reply, "r1")
    tool.reply(topic, "a reply is not a change to undo")
    assert tool.undo_last() == reply
    assert (tool.get(topic).body, tool.get(reply).body) == ("t1", "r0")
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        tool.undo_last()


def test_nothing_to_undo(pair: Forum) -> None:
    alice, bob = pair.members
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        alice.tool.undo_last()
    topic = alice.tool.post("T", "")
    alice.tool.reply(topic, "r")
    before = snapshot(alice)
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        alice.tool.undo_last()  # posts and replies are not undoable changes
    assert snapshot(alice) == before
    alice.tool.edit(topic, "e")
    pair.sync()
    # Undo is per endpoint: alice's edit is not bob's to undo.
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        bob.tool.undo_last()
    alice.tool.undo_last()
    with pytest.raises(LocalProtocolError, match="nothing to undo"):
        alice.tool.undo_last()


# -- sync status ---------------------------------------------------------------------------------


def test_status_is_pending_until_a_peer_acks(forum_of: Callable[[list[str]], Forum]) -> None:
    forum = forum_of(["alice", "bob", "carol"])
    alice, bob, carol = forum.members
    forum.connect(0, 1)  # carol stays offline for now
    topic = alice.tool.post("Status", "")
    status = alice.tool.get(topic).status
    assert status.pending and status.describe() == "pending"
    assert status.delivered == 1 and status.members == 3
    pump(forum.links)  # bob has it, but has not acknowledged it yet
    assert bob.tool.get(topic).body == ""
    assert alice.tool.get(topic).status.describe() == "pending"
    forum.sync()  # bob's ack arrives
    assert alice.tool.get(topic).status.describe() == "delivered to 2 of 3"
    assert not alice.tool.get(topic).status.pending
    # Bob sees the same count: he has it, and alice acknowledged her own change to him.
    assert bob.tool.get(topic).status.describe() == "delivered to 2 of 3"
    # Bob's reply is pending on his side; on alice's it never is (she did not make it), and
    # it counts as delivered to bob once his ack says so (creators ack every other tick).
    reply = bob.tool.reply(topic, "hi")
    assert bob.tool.get(reply).status.pending
    forum.sync()
    forum.sync()
    assert not alice.tool.get(reply).status.pending
    assert alice.tool.get(reply).status.describe() == "delivered to 2 of 3"
    assert bob.tool.get(reply).status.describe() == "delivered to 2 of 3"
    # Editing starts a new change: pending again until acknowledged.
    alice.tool.edit(topic, "edited")
    assert alice.tool.get(topic).status.pending
    assert alice.tool.topics()[0].post.status.pending
    forum.connect(0, 2)
    forum.connect(1, 2)
    assert alice.tool.get(topic).status.describe() == "delivered to 3 of 3"
    assert carol.tool.get(topic).status.describe() == "delivered to 3 of 3"
    summary = alice.tool.topics()[0].to_json()
    assert summary["status"] == "delivered to 3 of 3" and summary["delivered"] == 3


def test_status_counts_what_the_acks_callable_reports(
    forum_of: Callable[[list[str]], Forum],
) -> None:
    forum = forum_of(["alice", "bob", "carol"])
    alice = forum.members[0]
    me = alice.endpoint.endpoint_id
    bob_id, carol_id = (m.endpoint.endpoint_id for m in forum.members[1:])
    acks: dict[bytes, dict[bytes, int]] = {}
    tool = Discussion(
        alice.replica,
        commit=lambda c: alice.endpoint.create(forum.space, c, time=5),
        now=forum.clock,
        acks=lambda: acks,
    )
    topic = tool.post("T", "")
    seq = tool.get(topic).rev[1]
    assert tool.get(topic).status.describe() == "pending"
    acks[bob_id] = {me: seq - 1}  # an older ack does not cover it
    assert tool.get(topic).status.describe() == "pending"
    acks[bob_id] = {me: seq}
    assert tool.get(topic).status.describe() == "delivered to 2 of 3"
    acks[carol_id] = {me: seq + 5}
    assert tool.get(topic).status.describe() == "delivered to 3 of 3"
    acks[b"\x01" * 16] = {me: seq}  # acks of a non-member do not count
    assert tool.get(topic).status.members == 3
    assert tool.get(topic).status.delivered == 3


def test_status_alone_in_a_space_is_delivered(solo: Forum) -> None:
    tool = solo.members[0].tool
    topic = tool.post("Alone", "")
    assert tool.get(topic).status.describe() == "delivered to 1 of 1"


# -- change events -------------------------------------------------------------------------------


def test_change_events_come_from_executed_deltas(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("T", "")
    reply = alice.tool.reply(topic, "r")
    alice.tool.edit(reply, "r2")
    alice.tool.delete(reply)
    alice.tool.undo_last()
    alice.endpoint.create(pair.space, [rdb.create("other", "x", {"v": 1})], time=1)  # not ours
    alice.endpoint.create(
        pair.space, [rdb.create("other", "y", {"v": 1}, instance=INSTANCE)], time=1
    )  # our instance, not a post table
    expected = [
        ("added", topic),
        ("added", reply),
        ("edited", reply),
        ("deleted", reply),
        ("edited", reply),
    ]
    assert [(e.kind, e.post) for e in alice.events] == expected
    assert bob.events == []
    pair.sync()
    assert [(e.kind, e.post) for e in bob.events] == expected
    me = alice.endpoint.endpoint_id
    assert all(e.topic == topic and e.creator == me for e in bob.events)
    assert bob.events[1].to_json() == {
        "type": "discussion",
        "kind": "added",
        "post": reply,
        "topic": topic,
        "by": me.hex(),
    }
    # events() is a pure function of the deltas: replaying them gives the same list.
    assert alice.tool.events(alice.deltas) == alice.events


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda t, top, rep: t.post("", "body"), "title must not be empty"),
        (lambda t, top, rep: t.post("   \n", "body"), "title must not be empty"),
        (lambda t, top, rep: t.post("x" * (MAX_TITLE + 1), ""), "title is longer"),
        (lambda t, top, rep: t.post("t", "x" * (MAX_BODY + 1)), "body is longer"),
        (lambda t, top, rep: t.reply(top, ""), "body must not be empty"),
        (lambda t, top, rep: t.reply(top, "x" * (MAX_BODY + 1)), "body is longer"),
        (lambda t, top, rep: t.reply("not-an-id", "b"), "not a post id"),
        (lambda t, top, rep: t.reply(top.upper(), "b"), "not a post id"),
        (lambda t, top, rep: t.reply(top + ".", "b"), "not a post id"),
        (lambda t, top, rep: t.reply(top + ".123", "b"), "not a post id"),
        (lambda t, top, rep: t.reply(top[:-1], "b"), "not a post id"),
        (lambda t, top, rep: t.reply(f"{top}.{'0' * 8}.{'0' * 8}", "b"), "not a post id"),
        (lambda t, top, rep: t.reply("0" * 16, "b"), "not a post id"),  # earlier releases' form
        (lambda t, top, rep: t.reply(top.replace("~", "-"), "b"), "not a post id"),
        (lambda t, top, rep: t.reply(top.split("~")[1], "b"), "not a post id"),
        (lambda t, top, rep: t.reply(ABSENT, "b"), "no post"),
        (lambda t, top, rep: t.reply(top + ".0000000g", "b"), "not a post id"),
        (lambda t, top, rep: t.edit(rep, ""), "body must not be empty"),
        (lambda t, top, rep: t.edit(rep, "x" * (MAX_BODY + 1)), "body is longer"),
        (lambda t, top, rep: t.edit(top, "b", title=""), "title must not be empty"),
        (lambda t, top, rep: t.edit("nope", "b"), "not a post id"),
        (lambda t, top, rep: t.edit(top + ".0000000000000000", "b"), "not a post id"),
        (lambda t, top, rep: t.edit(f"{top}.{ABSENT}", "b"), "no post"),
        (lambda t, top, rep: t.delete("nope"), "not a post id"),
        (lambda t, top, rep: t.delete(ABSENT_F), "no post"),
        (lambda t, top, rep: t.get(ABSENT_F), "no post"),
        (lambda t, top, rep: t.get(""), "not a post id"),
        (lambda t, top, rep: t.thread(ABSENT), "no topic"),
        (lambda t, top, rep: list(t.walk("../etc")), "not a post id"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    solo: Forum, action: Callable[[Discussion, str, str], object], message: str
) -> None:
    (alice,) = solo.members
    topic = alice.tool.post("T", "b")
    reply = alice.tool.reply(topic, "r")
    before = snapshot(alice)
    sent = len(alice.deltas)
    with pytest.raises(LocalProtocolError, match=message):
        action(alice.tool, topic, reply)
    assert snapshot(alice) == before
    assert len(alice.deltas) == sent
    assert alice.tool.last_change() is None


def test_refusals_say_why_by_type(pair: Forum) -> None:
    """Every refusal is a LocalProtocolError; the subclass says which kind (the API maps it)."""
    alice, bob = pair.members
    topic = alice.tool.post("T", "")
    pair.sync()
    with pytest.raises(PermissionDeniedError):
        bob.tool.edit(topic, "not mine")
    with pytest.raises(NotFoundError):
        bob.tool.get(f"{topic}.{ABSENT}")
    with pytest.raises(NotFoundError):
        bob.tool.thread(ABSENT)
    with pytest.raises(ConflictError):
        bob.tool.undo_last()
    alice.tool.delete(topic)
    with pytest.raises(ConflictError):
        alice.tool.delete(topic)
    with pytest.raises(ConflictError):
        alice.tool.reply(topic, "to a deleted post")


def test_limits_are_inclusive(solo: Forum) -> None:
    tool = solo.members[0].tool
    topic = tool.post("x" * MAX_TITLE, "y" * MAX_BODY)
    assert len(tool.get(topic).title) == MAX_TITLE
    assert len(tool.get(tool.reply(topic, "z" * MAX_BODY)).body) == MAX_BODY


def test_a_space_without_the_tool_is_refused(tmp_path: Path) -> None:
    ep = open_endpoint(tmp_path / "x", seed=b"x", durability="normal")
    try:
        replica = ep.create_space("plain", time=1, engines={"db": "rdb"})
        with pytest.raises(LocalProtocolError, match="no discussion tool"):
            Discussion(replica, commit=lambda c: replica.create(c, time=1), now=lambda: 1)
        # ... unless the tool is pointed at an rdb instance the space has.
        tool = Discussion(
            replica, commit=lambda c: replica.create(c, time=1), now=lambda: 1, instance="db"
        )
        assert tool.get(tool.post("in db", "")).title == "in db"
    finally:
        ep.close()


# -- limits, ids and scans ------------------------------------------------------------------


def test_every_accepted_post_can_be_edited_deleted_and_undone(solo: Forum) -> None:
    tool = solo.members[0].tool
    long_text = "é" * (MAX_BODY // 2)  # the longest body post() accepts (limits are in bytes)
    with pytest.raises(LocalProtocolError, match="bytes"):
        tool.post("Too long", long_text + "x")
    topic = tool.post("Long", long_text)
    reply = tool.reply(topic, long_text)
    tool.delete(reply)
    tool.undo_last()
    tool.edit(topic, "ü" * (MAX_BODY // 2))
    tool.undo_last()
    assert tool.get(topic).body == long_text


def test_the_creator_of_a_change_counts_as_having_it(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("T", "")
    pair.sync()
    pair.sync()
    reply = bob.tool.reply(topic, "hi")
    pump(pair.links)  # alice received bob's reply from bob himself
    assert alice.tool.get(reply).status.describe() == "delivered to 2 of 2"


def test_concurrent_replies_never_share_an_id(pair: Forum) -> None:
    # Post ids derive from the creating delta's id: two endpoints replying at the same moment,
    # each unaware of the other, still make distinct posts, and neither is lost.
    alice, bob = pair.members
    topic = alice.tool.post("T", "")
    pair.sync()
    pair.disconnect()
    ids = [alice.tool.reply(topic, "from alice"), bob.tool.reply(topic, "from bob")]
    assert ids[0] != ids[1]
    pair.connect(0, 1)
    bodies = {p.body for _d, p in alice.tool.walk(topic)}
    assert {"from alice", "from bob"} <= bodies, ids


def _committer(m: Member, forum: Forum) -> Callable[[Any], Delta]:
    return lambda commands: m.endpoint.create(forum.space, commands, time=forum.clock.t)


def test_reading_a_thread_does_not_visit_other_threads(solo: Forum) -> None:
    (alice,) = solo.members
    tool = alice.tool
    topics = sorted(tool.post(f"t{i}", "") for i in range(4))
    first, last = topics[0], topics[-1]
    tool.reply(first, "the only reply of the first thread")
    db = alice.replica.store._db  # counting SQLite VM steps: deterministic, unlike timing
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def cost() -> int:
        nonlocal steps
        steps = 0
        db.set_progress_handler(count, 1)
        try:
            tool.thread(first)
        finally:
            db.set_progress_handler(None, 1)
        return steps

    alone = cost()
    alice.endpoint.create_many(
        solo.space,
        [
            [
                rdb.create(
                    f"r:{last}",
                    rdb.owned_id(alice.endpoint.endpoint_id, f"{k:016x}"),
                    {"parent": last, "rev": [alice.endpoint.endpoint_id, 1]},
                    instance=INSTANCE,
                    owned=True,
                )
            ]
            for k in range(300)
        ],
        time=1,
    )
    assert len(tool.thread(last).replies) == 300
    assert cost() < 2 * alone
