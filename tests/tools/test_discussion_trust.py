"""What another member's software can write into the discussion cannot take a post over or break
the views: ids are in their author's namespace, and shown times are clamped to the reader's clock.
"""

from __future__ import annotations

import pytest

from p2pspace.engines import rdb
from p2pspace.tools.discussion import FUTURE_SLACK_MS, TOPICS
from p2pspace.tools.discussion_layout import UNDO, post_location, shown_time, undo_record_id
from tests.tools.forum import Forum, post_fields, raw_create

YEAR_2100 = 4_102_444_800_000  # ms


# -- squats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["topic", "reply"])
def test_a_post_id_created_first_by_another_member_stays_the_authors(
    pair: Forum, kind: str
) -> None:
    alice, bob = pair.members
    me = alice.endpoint.endpoint_id
    topic = alice.tool.post("Thread", "")
    pair.sync()
    pair.disconnect()
    alice.tool.post("warm-up", "")  # alice's next delta gets a higher rank than bob's
    post = alice.tool.post("Mine", "by alice") if kind == "topic" else alice.tool.reply(topic, "a")
    made = alice.deltas[-1]
    # Bob's software, having seen the id on the wire, creates it first: its delta depends only
    # on older history, so it sorts before alice's in the total order.
    table, record = post_location(post)
    forged = post_fields(bob, title="Mine" if kind == "topic" else "", body="by bob", parent="")
    if kind == "reply":
        forged["parent"] = topic
    squat = raw_create(bob, pair, table, record, forged)
    assert squat.order_key < made.order_key
    pair.connect(0, 1)
    assert bob.replica.state_digest() == alice.replica.state_digest()
    body = "by alice" if kind == "topic" else "a"
    for m in (alice, bob):
        assert m.view.owner(table, record) == me  # the squat was a recorded no-op
        shown = m.tool.get(post)
        assert (shown.author, shown.body) == (me, body)
    # The author still edits her post, on every replica.
    alice.tool.edit(post, "edited by alice")
    pair.sync()
    for m in (alice, bob):
        assert m.tool.get(post).body == "edited by alice"


def test_the_undo_entry_cannot_be_created_first_by_another_member(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("T", "original")
    pair.sync()
    pair.disconnect()
    alice.tool.post("warm-up", "")
    alice.tool.edit(topic, "edited")
    made = alice.deltas[-1]
    # Bob creates alice's undo entry first, pointing her undo at words of his.
    forged = {"post": topic, "kind": "edit", "fields": {"body": "words of bob's"}}
    squat = raw_create(bob, pair, UNDO, undo_record_id(alice.endpoint.endpoint_id), forged)
    assert squat.order_key < made.order_key
    pair.connect(0, 1)
    assert alice.tool.last_change() == {
        "post": topic,
        "kind": "edit",
        "fields": {"body": "original", "edited": 0},
    }
    alice.tool.undo_last()
    pair.sync()
    for m in (alice, bob):
        assert m.tool.get(topic).body == "original"


def test_a_post_outside_its_authors_namespace_is_not_a_post(pair: Forum) -> None:
    alice, bob = pair.members
    # Bob's software can only make ids in his own namespace; one in alice's never takes effect.
    theirs = rdb.owned_id(alice.endpoint.endpoint_id, "0" * 16)
    raw_create(bob, pair, TOPICS, theirs, post_fields(bob, title="as alice"))
    mine = rdb.owned_id(bob.endpoint.endpoint_id, "0" * 16)
    raw_create(bob, pair, TOPICS, mine, post_fields(bob, title="bob's own"))
    pair.sync()
    for m in (alice, bob):
        assert m.view.get(TOPICS, theirs) is None
        assert [t.post.title for t in m.tool.topics()] == ["bob's own"]


# -- times -----------------------------------------------------------------------------------


def test_shown_time_bounds() -> None:
    now = 1_700_000_000_000
    assert shown_time(now, now) == (now, False)
    assert shown_time(now + FUTURE_SLACK_MS, now) == (now + FUTURE_SLACK_MS, False)
    assert shown_time(now + FUTURE_SLACK_MS + 1, now) == (now + FUTURE_SLACK_MS, True)
    assert shown_time(2**64 - 1, now) == (now + FUTURE_SLACK_MS, True)
    assert shown_time(0, now) == (0, False)
    assert shown_time(-1, now) == (0, True)
    assert FUTURE_SLACK_MS == 10 * 60 * 1000


def test_a_time_far_ahead_is_shown_and_ordered_clamped(solo: Forum) -> None:
    (alice,) = solo.members
    tool = alice.tool
    honest = tool.post("honest", "")
    now = solo.clock.t + 1
    ahead = now + FUTURE_SLACK_MS
    me = alice.endpoint.endpoint_id
    # Ids chosen so that the clamped order differs from the stored one.
    far, y2100 = rdb.owned_id(me, "2" * 16), rdb.owned_id(me, "1" * 16)
    skewed = rdb.owned_id(me, "3" * 16)
    raw_create(alice, solo, TOPICS, far, post_fields(alice, title="far", created=2**53 - 1))
    raw_create(alice, solo, TOPICS, y2100, post_fields(alice, title="2100", created=YEAR_2100))
    raw_create(alice, solo, TOPICS, skewed, post_fields(alice, title="skew", created=now + 300_000))

    shown = tool.get(far, now=now)
    assert (shown.created, shown.time_clamped) == (ahead, True)
    as_json = shown.to_json()
    assert (as_json["created"], as_json["time_clamped"]) == (ahead, True)
    assert tool.get(skewed, now=now).created == now + 300_000  # within the slack: as stored
    assert not tool.get(skewed, now=now).time_clamped
    assert not tool.get(honest, now=now).time_clamped
    assert alice.view.get(TOPICS, far)["created"] == 2**53 - 1  # stored data untouched

    # Both far-future topics show the same time: the id decides between them, then the skewed
    # one, then the honest one.
    summaries = tool.topics(now=now)
    assert [t.post.id for t in summaries] == [y2100, far, skewed, honest]
    listed = {t.post.id: t.to_json() for t in summaries}
    assert listed[far]["last_activity"] == ahead and listed[far]["last_activity_clamped"]
    assert listed[skewed]["last_activity"] == now + 300_000
    assert not listed[skewed]["last_activity_clamped"] and not listed[skewed]["time_clamped"]
    # The bound follows the reader's clock; with none given, the tool's own.
    assert tool.get(far, now=now + 1).created == ahead + 1
    assert tool.get(far).created == solo.clock.t + FUTURE_SLACK_MS


def test_replies_are_ordered_and_thread_activity_shown_by_clamped_times(solo: Forum) -> None:
    (alice,) = solo.members
    tool = alice.tool
    topic = tool.post("T", "")
    honest = tool.reply(topic, "honest")
    now = solo.clock.t + 1
    me = alice.endpoint.endpoint_id
    table = f"r:{topic}"
    far, soon = rdb.owned_id(me, "1" * 16), rdb.owned_id(me, "2" * 16)
    raw_create(alice, solo, table, soon, post_fields(alice, parent=topic, created=now + 1_200_000))
    raw_create(alice, solo, table, far, post_fields(alice, parent=topic, created=2**53 - 1))
    # Stored times would order honest, soon, far; shown, soon and far tie (same author): by id.
    order = [p.id for _d, p in tool.walk(topic, now=now)]
    assert order == [topic, honest, f"{topic}.{far}", f"{topic}.{soon}"]
    thread = tool.thread(topic, now=now).to_json()
    assert [r["time_clamped"] for r in thread["replies"]] == [False, True, True]
    assert not thread["time_clamped"]
    (summary,) = tool.topics(now=now)
    assert summary.last_activity == now + FUTURE_SLACK_MS and summary.last_activity_clamped
    assert not summary.post.time_clamped


def test_times_that_break_a_date_are_shown_within_range(solo: Forum) -> None:
    (alice,) = solo.members
    me = alice.endpoint.endpoint_id
    now = 1_700_000_000_000
    ancient = rdb.owned_id(me, "1" * 16)
    raw_create(alice, solo, TOPICS, ancient, post_fields(alice, title="a", created=-(2**63)))
    edited = rdb.owned_id(me, "2" * 16)
    raw_create(alice, solo, TOPICS, edited, post_fields(alice, title="e", created=5, edited=2**60))
    old = alice.tool.get(ancient, now=now).to_json()
    assert (old["created"], old["edited"], old["time_clamped"]) == (0, None, True)
    late = alice.tool.get(edited, now=now).to_json()
    assert (late["created"], late["edited"], late["time_clamped"]) == (
        5,
        now + FUTURE_SLACK_MS,
        True,
    )
    # JavaScript dates (|t| <= 8.64e15 ms) hold every shown time.
    for post in (old, late):
        assert all(0 <= t <= 8.64e15 for t in (post["created"], post["edited"] or 0))
