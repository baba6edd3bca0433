"""What the discussion shows beyond the records: Markdown rendered inert, mentions, previews,
counts, unread marks (local) and full-text search kept consistent with the state."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from p2pspace.engines import rdb
from p2pspace.errors import NotFoundError
from p2pspace.tools.discussion import INSTANCE, Discussion, post_location
from p2pspace.tools.discussion_search import MARK_END, MARK_START, SearchIndex
from p2pspace.tools.discussion_text import handles, preview, render
from tests.tools.forum import Forum, Member, session_acks

# -- Markdown -----------------------------------------------------------------------------------

ALLOWED_TAGS = {
    "p", "br", "strong", "em", "s", "code", "pre", "blockquote", "ul", "ol", "li", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "span",
}  # fmt: skip
ALLOWED_ATTRS = {
    "a": {"href", "rel", "target"},
    "span": {"class", "data-member"},
    "ol": {"start"},
    "code": {"class"},
}

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click]( javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[api](/api/status)",
    "[vb](vbscript:msgbox)",
    "![pixel](http://192.0.2.1/track.png)",
    "<iframe src=http://example.com></iframe>",
    '<div style="position:fixed">over everything</div>',
    "```html\n<script>alert(1)</script>\n```",
    '<http://example.com/"onmouseover="alert(1)>',
    '[x](http://example.com/"onmouseover="alert(1))',
    "<!-- comment --> <svg onload=alert(1)>",
    "&lt;script&gt; &#x3C;script&#x3E;",
]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.seen


@pytest.mark.parametrize("body", HOSTILE)
def test_no_body_makes_markup_that_runs_loads_or_styles(body: str) -> None:
    html, _ = render(body)
    for tag, attrs in tags_of(html):
        assert tag in ALLOWED_TAGS, (body, html)
        assert set(attrs) <= ALLOWED_ATTRS.get(tag, set()), (body, html)
        if tag == "a":
            href = attrs["href"] or ""
            assert href.startswith(("http://", "https://", "mailto:")), (body, html)
            assert attrs["rel"] == "noopener noreferrer nofollow"
            assert '"' not in href
    assert "<script" not in html and "<img" not in html and "<iframe" not in html


def test_markdown_and_links_render() -> None:
    html, _ = render("**bold** and *it* ~~old~~\n\n- one\n- two\n\nsee https://example.com/a?b=1")
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html and "<s>old</s>" in html
    assert "<ul>\n<li>one</li>" in html
    assert (
        '<a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow" '
        'target="_blank">https://example.com/a?b=1</a>'
    ) in html


def test_mentions_name_current_members_by_handle() -> None:
    ann, bob, other = b"a" * 16, b"b" * 16, b"c" * 16
    known = handles([(ann, "Ann Lee"), (bob, "bob"), (other, "BOB")])  # "bob" is ambiguous
    html, mentioned = render("@annlee and @AnnLee, @bob, mail@annlee.org, @nobody", known)
    assert mentioned == (ann,)
    assert html.count('<span class="mention" data-member="' + ann.hex() + '">') == 2
    assert "@bob" in html and "@nobody" in html and "mention" not in html.split("@bob")[1][:20]


def test_preview_is_one_plain_line() -> None:
    assert preview("\n\n# **Lunch** at [noon](http://x)?\nsecond line") == "Lunch at noon?"
    assert preview("---\n> quoted `code`") == "quoted code"
    assert preview("") == ""
    long = preview("word " * 100)
    assert len(long) == 160 and long.endswith("…")


# -- the tool's views ----------------------------------------------------------------------------


def test_thread_renders_bodies_with_mentions_and_counts_skip_deleted(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Plan", "**soon**, @bob")
    pair.sync()
    gone = bob.tool.reply(topic, "wrong thread")
    bob.tool.reply(topic, "<b>not bold</b>")
    bob.tool.delete(gone)
    pair.sync()
    thread = bob.tool.thread(topic)
    assert thread.body_html.startswith('<p><strong>soon</strong>, <span class="mention"')
    assert thread.mentions == (bob.endpoint.endpoint_id,)
    assert [r.body_html for r in thread.replies] == ["", "<p>&lt;b&gt;not bold&lt;/b&gt;</p>\n"]
    (summary,) = alice.tool.topics()
    assert summary.replies == 1 and summary.preview == "soon, @bob"
    assert "body_html" not in summary.to_json() and summary.to_json()["preview"] == "soon, @bob"


def test_unread_marks_are_local_late_posts_count_and_survive_a_restart(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Hello", "first")
    pair.sync()
    # Alice wrote it: not unread for her. Bob has not read it.
    assert alice.tool.topics()[0].unread == 0
    assert bob.tool.topics()[0].unread == 1
    assert bob.tool.get(topic).unread
    assert bob.tool.mark_read(topic) == 1
    assert bob.tool.mark_read(topic) == 0
    assert bob.tool.topics()[0].unread == 0

    # A reply dated long ago, arriving now, is still new for alice.
    pair.clock.t = 10
    reply = bob.tool.reply(topic, "from the past")
    pair.clock.t = 100_000
    pair.sync()
    (summary,) = alice.tool.topics()
    assert summary.unread == 1
    assert [r.unread for r in alice.tool.thread(topic).replies] == [True]
    # Marks are not replicated: bob's reading changed nothing in the space's state.
    assert alice.replica.state_digest() == bob.replica.state_digest()

    # A new tool over the same store (a restart) remembers what was read.
    again = Discussion(alice.replica, commit=lambda c: alice.endpoint.create(pair.space, c, time=1),
                       now=pair.clock)  # fmt: skip
    assert again.get(reply).unread
    assert again.mark_read(reply) == 1  # a reply's id names its thread
    fresh = Discussion(alice.replica, commit=lambda c: alice.endpoint.create(pair.space, c, time=1),
                       now=pair.clock)  # fmt: skip
    assert fresh.topics()[0].unread == 0
    with pytest.raises(NotFoundError):
        fresh.mark_read("0" * 16 + "~" + "0" * 16)


# -- search --------------------------------------------------------------------------------------


def _found(tool: Discussion, text: str) -> list[str]:
    return [r.post for r in tool.search(text)]


def _fresh(tool: Discussion, text: str) -> list[str]:
    """The same search on an index built from the state now (what the kept one must equal)."""
    index = SearchIndex(tool.replica, tool._index_rows, tool._index_row)
    try:
        return [h.post for h in index.search(text)]
    finally:
        index.close()


def test_search_by_word_prefix_title_first_and_follows_edits_and_deletes(pair: Forum) -> None:
    alice, bob = pair.members
    lunch = alice.tool.post("Lunch on Friday", "pizza or noodles")
    about = alice.tool.post("Other things", "we could have lunch later")
    pair.sync()
    reply = bob.tool.reply(lunch, "Noodles, with extra lunch")
    pair.sync()
    for m in (alice, bob):
        assert _found(m.tool, "lunch") == [lunch, reply, about]  # the title weighs most
        assert sorted(_found(m.tool, "NOOD")) == sorted([lunch, reply])
        assert sorted(_found(m.tool, "lunch noodles")) == sorted([lunch, reply])
        assert _found(m.tool, "sushi") == []
    (hit,) = [r for r in bob.tool.search("pizza")]
    assert hit.topic == lunch and hit.topic_title == "Lunch on Friday"
    assert hit.author_name == "alice"
    assert f"{MARK_START}pizza{MARK_END}" in hit.snippet

    bob.tool.edit(reply, "Sushi instead")
    alice.tool.delete(about)
    pair.sync()
    for m in (alice, bob):
        assert _found(m.tool, "lunch") == [lunch]
        assert _found(m.tool, "sushi") == [reply]
    alice.tool.undo_last()  # the delete undone: the post is back, and found again
    pair.sync()
    for m in (alice, bob):
        assert _found(m.tool, "lunch") == [lunch, about]


@pytest.mark.parametrize(
    "query",
    ['"', "*", "lunch*", "NEAR(a b)", "title:lunch", "a AND OR NOT", "(", "^lunch", "", "  ",
     "\x02\x03", "ランチ", "a" * 500],
)  # fmt: skip
def test_any_query_text_is_words_never_syntax(solo: Forum, query: str) -> None:
    (alice,) = solo.members
    alice.tool.post("lunch", "ランチ AND title")
    found = alice.tool.search(query)  # never an error
    assert all(r.post for r in found)


def test_search_stays_consistent_through_a_merge_that_undoes(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Shared", "apples")
    pair.sync()
    assert _found(alice.tool, "apples") == [topic]
    pair.disconnect()
    # Both write while apart, on the same record (bob's software writes alice's topic: the
    # engine makes it a no-op, but it conflicts), so joining again undoes on one side.
    alice.tool.edit(topic, "bananas")
    table, record = post_location(topic)
    bob.endpoint.create(
        pair.space, [rdb.set_fields(table, record, {"body": "figs"}, instance=INSTANCE)], time=5
    )
    for i in range(3):
        bob.tool.reply(topic, f"cherries {i}")
        alice.tool.reply(topic, f"dates {i}")
    assert _found(alice.tool, "bananas") == [topic]
    undone = sum(m.replica.stats.undone for m in pair.members)
    pair.connect(0, 1)
    assert sum(m.replica.stats.undone for m in pair.members) > undone
    for m in pair.members:
        for word in ("apples", "bananas", "cherries", "dates", "shared"):
            assert _found(m.tool, word) == _fresh(m.tool, word), word
        assert len(_found(m.tool, "cherries")) == 3 and len(_found(m.tool, "dates")) == 3


def _fresh_topics(m: Member, forum: Forum) -> list[dict[str, object]]:
    """The thread list as a new tool over the same replica computes it from state."""
    tool = Discussion(m.replica, commit=lambda c: m.endpoint.create(forum.space, c, time=1),
                      now=lambda: forum.clock.t,
                      acks=lambda: session_acks(m.endpoint, forum.space))  # fmt: skip
    return [t.to_json() for t in tool.topics(now=forum.clock.t)]


def test_the_kept_thread_summaries_equal_a_fresh_read_through_changes_and_merges(
    pair: Forum,
) -> None:
    alice, bob = pair.members
    pair.clock.frozen = True

    def same() -> None:
        for m in pair.members:
            kept = [t.to_json() for t in m.tool.topics(now=pair.clock.t)]
            assert kept == _fresh_topics(m, pair)

    one = alice.tool.post("One", "first")
    two = bob.tool.post("Two", "second")
    pair.sync()
    same()
    r1 = bob.tool.reply(one, "a reply")
    alice.tool.reply(two, "another")
    pair.sync()
    same()
    bob.tool.delete(r1)
    alice.tool.edit(one, "changed")
    alice.tool.mark_read(two)
    pair.sync()
    same()
    # Apart, then together again: a merge that undoes; the summaries follow.
    pair.disconnect()
    table, record = post_location(one)
    bob.endpoint.create(
        pair.space, [rdb.set_fields(table, record, {"body": "x"}, instance=INSTANCE)], time=5
    )
    bob.tool.reply(one, "while apart")
    alice.tool.edit(one, "apart too")
    alice.tool.post("Three", "")
    pair.connect(0, 1)
    same()
    assert {t.post.title: t.replies for t in alice.tool.topics()} == {
        "One": 1,
        "Two": 1,
        "Three": 0,
    }


def test_a_tool_nobody_tells_of_executed_deltas_still_shows_the_state(pair: Forum) -> None:
    alice, bob = pair.members
    quiet = Discussion(alice.replica, commit=lambda c: alice.endpoint.create(pair.space, c, time=1),
                       now=pair.clock)  # fmt: skip
    topic = bob.tool.post("Hello", "there")
    pair.sync()
    assert [t.post.id for t in quiet.topics()] == [topic]
    assert [r.post for r in quiet.search("there")] == [topic]
    bob.tool.reply(topic, "more")
    pair.sync()  # quiet's owner never calls quiet.executed(...)
    assert quiet.topics()[0].replies == 1
    assert len(quiet.search("more")) == 1


def test_search_folds_case_as_the_index_does_and_marks_only_what_was_shown(pair: Forum) -> None:
    alice, bob = pair.members
    topic = alice.tool.post("Straße", "ÜBER alles")
    pair.sync()
    assert [r.post for r in bob.tool.search("straße")] == [topic]
    assert [r.post for r in bob.tool.search("über")] == [topic]
    late = alice.tool.reply(topic, "arrived while bob read")
    pair.sync()
    # bob's page showed him the topic only: the reply that came meanwhile stays new.
    assert bob.tool.mark_read(topic, [topic, "not-in-this-thread"]) == 1
    assert [r.unread for r in bob.tool.thread(topic).replies] == [True]
    assert bob.tool.mark_read(topic, [late]) == 1
    assert bob.tool.topics()[0].unread == 0


def test_pathological_markdown_is_rendered_as_text_in_bounded_time() -> None:
    html, _ = render("[" * 24_000)
    assert html.startswith("<p>[[[") and "<a" not in html
    assert preview("`a " * 8_000).startswith("`a `a")  # cut before the patterns run
