"""The threaded discussion tool, built on one rdb engine instance (``discussion``).

Theory of operation. Every operation is one delta of rdb commands; concurrency resolves by the
space's shared total order like any rdb change (the later ``set`` wins). The records and their
ids are laid out as :mod:`p2pspace.tools.discussion_layout` describes: topics and replies are
owned records in their author's namespace, deletes are tombstones, and each endpoint has one undo
entry (its last edit or delete and the fields it replaced). "Undo my last change" is a new delta
that writes those fields back: ordinary replicated history, resolved by the total order like any
edit.

Edits and deletes by anyone but the author are recorded no-ops in the engine; the tool checks
authorship locally too, to refuse early with a clear error. Times come from the caller (``now``)
and post ids from the creating delta's id, so the tool is deterministic under the simulator.
Views show and order times clamped to the reader's clock (``now``, ms): a post dated in 2100
shows at most ten minutes ahead, flagged ``time_clamped``, whatever was stored.

Beside the replicated records the tool keeps what is this endpoint's alone: which posts it has
read (:mod:`p2pspace.tools.discussion_reads`) and a full-text index of the posts
(:mod:`p2pspace.tools.discussion_search`). Bodies are Markdown, shown as inert HTML with
mentions marked (:mod:`p2pspace.tools.discussion_text`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pspace.core.delta import Command, Delta
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.engines.members import display_names
from p2pspace.errors import (
    ConflictError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
)
from p2pspace.tools.discussion_layout import (
    FUTURE_SLACK_MS,
    INSTANCE,
    REPLY_PREFIX,
    TOPICS,
    UNDO,
    check_id,
    clean,
    new_record_id,
    post_id_at,
    post_location,
    reply_table,
    shown_time,
    topic_of,
    undo_record_id,
    well_formed,
)
from p2pspace.tools.discussion_reads import ReadMarks
from p2pspace.tools.discussion_search import SearchIndex
from p2pspace.tools.discussion_text import Handles, handles, preview, render
from p2pspace.tools.discussion_threads import ThreadSummaries
from p2pspace.tools.plugin import ToolContext, ToolPlugin

MAX_TITLE = 200
# Bytes of UTF-8. An edit carries the new body and, for undo, the replaced one: both must fit a
# delta (64 KiB) with room to spare.
MAX_BODY = 24_000

Commit = Callable[[Sequence[Command]], Delta]
_StatusContext = tuple[dict[bytes, int], list[tuple[bytes, dict[bytes, int]]], int]
Acks = Callable[[], Mapping[bytes, Mapping[bytes, int]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStatus:
    """Where a post's latest change has got to (after Chrome's entity tracker)."""

    pending: bool  # a change made here that no peer has acknowledged yet
    delivered: int  # members known to have the change (this endpoint included)
    members: int

    def describe(self) -> str:
        if self.pending:
            return "pending"
        return f"delivered to {self.delivered} of {self.members}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Post:
    """One post as a view shows it: ``created`` and ``edited`` are shown times (see
    :func:`~p2pspace.tools.discussion_layout.shown_time`), ``time_clamped`` says that one of
    them is not what was stored."""

    id: str
    topic: str  # the thread's topic id (equal to ``id`` for a topic)
    parent: str  # "" for a topic
    title: str
    body: str
    author: bytes
    author_name: str
    created: int
    edited: int
    deleted: bool
    rev: tuple[bytes, int]
    status: SyncStatus
    time_clamped: bool = False
    replies: tuple[Post, ...] = field(default=())
    unread: bool = False  # someone else's post this endpoint has not read yet
    body_html: str = ""  # the body rendered (threads and single posts; "" in thread lists)
    mentions: tuple[bytes, ...] = ()  # members the body mentions (where it is rendered)

    @property
    def is_topic(self) -> bool:
        return not self.parent

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ids hex), replies nested."""
        return {
            "id": self.id,
            "topic": self.topic,
            "parent": self.parent or None,
            "title": self.title,
            "body": self.body,
            "author": self.author.hex(),
            "author_name": self.author_name,
            "created": self.created,
            "edited": self.edited or None,
            "deleted": self.deleted,
            "time_clamped": self.time_clamped,
            "status": self.status.describe(),
            "pending": self.status.pending,
            "delivered": self.status.delivered,
            "members": self.status.members,
            "unread": self.unread,
            "body_html": self.body_html,
            "mentions": [m.hex() for m in self.mentions],
            "replies": [r.to_json() for r in self.replies],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSummary:
    post: Post
    replies: int  # replies not deleted
    last_activity: int  # shown: the latest shown creation or edit time in the thread
    last_activity_clamped: bool = False  # it comes from a clamped time
    unread: int = 0  # posts of the thread (the topic included) this endpoint has not read
    preview: str = ""  # one line of the topic's body, plain text

    def to_json(self) -> dict[str, Any]:
        out = self.post.to_json()
        # A list shows a line of each thread, not its text: the body stays in the thread view.
        for key in ("replies", "body", "body_html", "mentions"):
            out.pop(key)
        out["reply_count"] = self.replies
        out["last_activity"] = self.last_activity
        out["last_activity_clamped"] = self.last_activity_clamped
        out["unread_count"] = self.unread
        out["preview"] = self.preview
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """A post matching a search: where it is, who wrote it, and the matching words."""

    post: str
    topic: str
    topic_title: str
    author_name: str
    created: int  # shown time
    snippet: str  # matched words between MARK_START and MARK_END of discussion_search

    def to_json(self) -> dict[str, Any]:
        return {
            "post": self.post,
            "topic": self.topic,
            "topic_title": self.topic_title,
            "author_name": self.author_name,
            "created": self.created,
            "snippet": self.snippet,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent:
    """A change to a post seen in executed deltas: ``added``, ``edited`` or ``deleted``.

    (The node adds ``{"type": "status", "space", "peer"}`` events of its own whenever a peer's
    acknowledgement advances: sync statuses of posts may then have changed.)
    """

    kind: str
    post: str
    topic: str
    creator: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "discussion",
            "kind": self.kind,
            "post": self.post,
            "topic": self.topic,
            "by": self.creator.hex(),
        }


def _text(value: str, label: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{label} must be text")
    value = value.strip()
    if not value and not empty:
        raise LocalProtocolError(f"{label} must not be empty")
    if len(value.encode("utf-8")) > limit:
        raise LocalProtocolError(f"{label} is longer than {limit} bytes")
    return value


def has_discussion(replica: Replica, instance: str = INSTANCE) -> bool:
    info = replica.members().space()
    return info is not None and info.engines.get(instance) == "rdb"


class Discussion:
    """The discussion in one space, as seen by (and written as) this endpoint.

    The views (:meth:`get`, :meth:`topics`, :meth:`thread`, :meth:`walk`) take the reader's
    clock as ``now`` (ms; the tool's own ``now`` callable when not given), against which they
    clamp the times they show and order by.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        commit: Commit,
        now: Callable[[], int],
        acks: Acks = dict,
        random: Callable[[int], bytes] = os.urandom,
        instance: str = INSTANCE,
    ) -> None:
        if not has_discussion(replica, instance):
            raise LocalProtocolError("this space has no discussion tool")
        self.replica = replica
        self.instance = instance
        self._commit = commit
        self._now = now
        self._acks = acks
        self._random = random
        self.reads = ReadMarks(replica.store, replica.space_id)
        self._told = 0  # deltas this tool was told were executed (:meth:`executed`)
        self.index = SearchIndex(replica, self._index_rows, self._index_row, self._version)
        self.threads = ThreadSummaries(
            posts=self._posts, fields=self._fields, me=self.me, version=self._version
        )

    @property
    def me(self) -> bytes:
        return self.replica.endpoint_id

    # -- reading ------------------------------------------------------------------------------

    def _view(self) -> rdb.RdbView:
        return rdb.view(self.replica, self.instance)

    def _fields(self, post_id: str) -> dict[str, Any] | None:
        table, record = post_location(post_id)
        view = self._view()
        fields = view.get(table, record)
        return None if fields is None else clean(record, fields, view.owner(table, record))

    def _posts(self, table: str) -> Iterable[tuple[str, dict[str, Any]]]:
        """``(post id, clean fields)`` of the well-formed posts of ``table``: the topics'
        table, or the replies' table of a topic id already checked (:func:`clean` checks each
        record id, so the post id it makes is well formed)."""
        if table != TOPICS and not well_formed(table[len(REPLY_PREFIX) :], topic=True):
            return
        prefix = "" if table == TOPICS else table[len(REPLY_PREFIX) :] + "."
        for record, raw, owner in self._view().owned_records(table):
            fields = clean(record, raw, owner)
            if fields is not None:
                yield prefix + record, fields

    def _status_context(self) -> _StatusContext:
        vector = self.replica.vector
        members = self.replica.member_ids()
        acks = self._acks()
        # The creator of a change has it: it counts even before it acknowledges anything.
        peers = [(m, dict(acks.get(m, {}))) for m in members if m != self.me]
        return vector, peers, len(members)

    def _status(self, rev: tuple[bytes, int], context: _StatusContext) -> SyncStatus:
        vector, peers, count = context
        creator, seq = rev
        have = 1 if vector.get(creator, 0) >= seq else 0
        acked = sum(1 for peer, p in peers if p.get(creator, 0) >= seq or peer == creator)
        pending = creator == self.me and acked == 0 and count > 1
        return SyncStatus(pending=pending, delivered=have + acked, members=count)

    def _names(self) -> dict[bytes, str]:
        # Everyone ever admitted (a removed member's posts keep its name), a name shared by
        # two members shown with a short id.
        return display_names(self.replica.members().everyone())

    def _post(
        self,
        post_id: str,
        fields: Mapping[str, Any],
        names: Mapping[bytes, str],
        context: _StatusContext,
        now: int,
        replies: tuple[Post, ...] = (),
        known: Handles | None = None,
    ) -> Post:
        """``known``: the mention handles of the members, to render the body with (None: not
        rendered)."""
        author: bytes = fields["author"]
        rev: tuple[bytes, int] = fields["rev"]
        created, created_clamped = shown_time(fields["created"], now)
        edited, edited_clamped = shown_time(fields["edited"], now)
        deleted: bool = fields["deleted"]
        html, mentions = ("", ()) if known is None or deleted else render(fields["body"], known)
        return Post(
            id=post_id,
            topic=topic_of(post_id),
            parent=fields["parent"],
            title=fields["title"],
            body=fields["body"],
            author=author,
            author_name=names.get(author, "") or author.hex()[:8],
            created=created,
            edited=edited,
            deleted=deleted,
            rev=rev,
            status=self._status(rev, context),
            time_clamped=created_clamped or edited_clamped,
            replies=replies,
            unread=self._unread(post_id, author, deleted),
            body_html=html,
            mentions=mentions,
        )

    def _unread(self, post_id: str, author: bytes, deleted: bool) -> bool:
        return not deleted and author != self.me and not self.reads.is_read(post_id)

    def _handles(self) -> Handles:
        return handles((m.id, m.name) for m in self.replica.members().members())

    def get(self, post_id: str, *, now: int | None = None) -> Post:
        """One post (without replies). Raises LocalProtocolError if there is none."""
        fields = self._fields(post_id)
        if fields is None:
            raise NotFoundError(f"no post {post_id}")
        now = self._now() if now is None else now
        names, context = self._names(), self._status_context()
        return self._post(post_id, fields, names, context, now, known=self._handles())

    def topics(self, *, now: int | None = None) -> list[TopicSummary]:
        """Every thread, newest shown activity first (ties by shown creation, then id: the same
        order on every replica holding the same state and reading at the same ``now``).

        Each thread's counts come from its summary, kept between calls
        (:mod:`p2pspace.tools.discussion_threads`): only threads that executed deltas touched
        are read again."""
        now = self._now() if now is None else now
        names, context = self._names(), self._status_context()
        read = self.reads.is_read
        out = []
        for topic_id, thread in self.threads.current().items():
            post = self._post(topic_id, thread.topic, names, context, now)
            last, clamped = thread.shown_activity(now)
            summary = TopicSummary(
                post=post,
                replies=thread.replies,
                last_activity=last,
                last_activity_clamped=clamped,
                unread=sum(1 for p in thread.others if not read(p)),
                preview=thread.preview,
            )
            out.append(summary)
        out.sort(key=lambda t: (-t.last_activity, -t.post.created, t.post.id))
        return out

    def _version(self) -> tuple[int, ...]:
        """What moves when the posts may have changed in a way :meth:`executed` did not report:
        an undo or redo (a merge), a snapshot, or deltas executed that nobody told this tool of
        (an owner that does not call :meth:`executed`). The kept summaries and the search index
        are rebuilt from state when it moves."""
        stats = self.replica.stats
        return (stats.undone, stats.snapshots, stats.executed - self._told)

    def thread(self, topic_id: str, *, now: int | None = None) -> Post:
        """The topic with its reply tree; siblings in (shown created, author, id) order."""
        topic_id = topic_of(check_id(topic_id))
        root = self._fields(topic_id)
        if root is None:
            raise NotFoundError(f"no topic {topic_id}")
        now = self._now() if now is None else now
        names, context, known = self._names(), self._status_context(), self._handles()
        children: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for reply_id, fields in self._posts(reply_table(topic_id)):
            children.setdefault(fields["parent"] or topic_id, []).append((reply_id, fields))

        def build(post_id: str, fields: Mapping[str, Any], depth: int) -> Post:
            kids = sorted(
                children.get(post_id, ()),
                key=lambda kv: (shown_time(kv[1]["created"], now)[0], kv[1]["author"], kv[0]),
            )
            replies = tuple(build(rid, f, depth + 1) for rid, f in kids) if depth < 200 else ()
            return self._post(post_id, fields, names, context, now, replies, known)

        return build(topic_id, root, 0)

    def walk(self, topic_id: str, *, now: int | None = None) -> Iterable[tuple[int, Post]]:
        """``(depth, post)`` of a thread in display order."""
        stack = [(0, self.thread(topic_id, now=now))]
        while stack:
            depth, post = stack.pop()
            yield depth, post
            stack.extend((depth + 1, r) for r in reversed(post.replies))

    def label(self, post_id: str) -> str:
        """A post in a few words, to say what happened to it: a topic's title, or "reply
        “first words”" (from its body as it is now; "" for a post with no text left)."""
        fields = self._fields(post_id)
        if fields is None:
            raise NotFoundError(f"no post {post_id}")
        if post_id == topic_of(post_id):
            return f"{fields['title']!r}" if fields["title"] else ""
        words = preview(fields["body"], 40)
        return f"reply “{words}”" if words else ""

    def mark_read(self, topic_id: str, posts: Iterable[str] | None = None) -> int:
        """Mark the posts of the thread ``topic_id`` read here -- all of them, or only those
        of ``posts`` that are in it (what a reader was shown); how many were unread."""
        topic_id = topic_of(check_id(topic_id))
        root = self._fields(topic_id)
        if root is None:
            raise NotFoundError(f"no topic {topic_id}")
        # Only others' posts are marked: this endpoint's own are never unread.
        shown = None if posts is None else set(posts)
        thread = [(topic_id, root), *self._posts(reply_table(topic_id))]
        return self.reads.mark(
            p
            for p, fields in thread
            if fields["author"] != self.me and (shown is None or p in shown)
        )

    # -- search -------------------------------------------------------------------------------

    def _index_rows(self) -> Iterable[tuple[str, str, str, str, bool]]:
        for topic_id, fields in self._posts(TOPICS):
            yield topic_id, topic_id, fields["title"], fields["body"], fields["deleted"]
            for reply_id, reply in self._posts(reply_table(topic_id)):
                yield reply_id, topic_id, "", reply["body"], reply["deleted"]

    def _index_row(self, post_id: str) -> tuple[str, str, str, bool] | None:
        if not well_formed(post_id, topic=post_id == topic_of(post_id)):
            return None  # an id a hostile command named: no post can live there
        fields = self._fields(post_id)
        if fields is None:
            return None
        return topic_of(post_id), fields["title"], fields["body"], fields["deleted"]

    def search(self, text: str, *, limit: int = 50, now: int | None = None) -> list[SearchResult]:
        """The posts whose title or body holds every word of ``text`` (as word prefixes),
        best match first; see :mod:`p2pspace.tools.discussion_search`."""
        if not isinstance(text, str):
            raise LocalProtocolError("a search is text")
        now = self._now() if now is None else now
        names = self._names()
        titles: dict[str, str] = {}
        out = []
        for hit in self.index.search(text, limit=limit):
            fields = self._fields(hit.post)
            if fields is None:
                continue
            if hit.topic not in titles:
                topic = fields if hit.topic == hit.post else self._fields(hit.topic)
                titles[hit.topic] = "" if topic is None else topic["title"]
            author: bytes = fields["author"]
            out.append(
                SearchResult(
                    post=hit.post,
                    topic=hit.topic,
                    topic_title=titles[hit.topic],
                    author_name=names.get(author, "") or author.hex()[:8],
                    created=shown_time(fields["created"], now)[0],
                    snippet=hit.snippet,
                )
            )
        return out

    # -- writing ------------------------------------------------------------------------------

    def _new_record(self) -> str:
        # Bound to the delta that creates the post (this endpoint's next one) and in this
        # endpoint's namespace: concurrent posts never collide, and no other member can create
        # the id first.
        seq = self.replica.vector.get(self.me, 0) + 1
        return new_record_id(self.me, seq, self._random(8))

    def _rev(self) -> list[Any]:
        # The delta this change goes into is this endpoint's next one.
        return [self.me, self.replica.vector.get(self.me, 0) + 1]

    def post(self, title: str, body: str) -> str:
        """Start a thread. Returns the topic id."""
        title = _text(title, "title", MAX_TITLE)
        body = _text(body, "body", MAX_BODY, empty=True)
        topic = self._new_record()
        now = self._now()
        fields = {
            "title": title,
            "body": body,
            "author": self.me,
            "created": now,
            "edited": 0,
            "deleted": False,
            "rev": self._rev(),
        }
        self._commit([rdb.create(TOPICS, topic, fields, instance=self.instance, owned=True)])
        return topic

    def reply(self, parent_id: str, body: str) -> str:
        """Reply to a topic or a reply. Returns the new reply's post id."""
        body = _text(body, "body", MAX_BODY)
        parent = self._fields(parent_id)
        if parent is None:
            raise NotFoundError(f"no post {parent_id}")
        if parent.get("deleted"):
            raise ConflictError("that post was deleted; reply to another one")
        topic = topic_of(parent_id)
        record = self._new_record()
        fields = {
            "parent": parent_id,
            "body": body,
            "author": self.me,
            "created": self._now(),
            "edited": 0,
            "deleted": False,
            "rev": self._rev(),
        }
        table = reply_table(topic)
        self._commit([rdb.create(table, record, fields, instance=self.instance, owned=True)])
        return f"{topic}.{record}"

    def _own(self, post_id: str) -> tuple[str, str, dict[str, Any]]:
        """``(table, record, fields)`` of a post of this endpoint's."""
        fields = self._fields(post_id)
        if fields is None:
            raise NotFoundError(f"no post {post_id}")
        if fields["author"] != self.me:
            raise PermissionDeniedError("only the author can change a post")
        return (*post_location(post_id), fields)

    def _change(self, post_id: str, kind: str, new: dict[str, Any]) -> None:
        table, record, fields = self._own(post_id)
        replaced = {k: fields.get(k) for k in new if k in fields}
        new = {**new, "rev": self._rev()}
        undo = {"post": post_id, "kind": kind, "fields": replaced}
        # The undo entry is created empty (a no-op once it exists) and then set, so the
        # replaced text travels once, not twice.
        empty = {"post": "", "kind": "none", "fields": {}}
        entry = undo_record_id(self.me)
        self._commit(
            [
                rdb.set_fields(table, record, new, instance=self.instance),
                rdb.create(UNDO, entry, empty, instance=self.instance, owned=True),
                rdb.set_fields(UNDO, entry, undo, instance=self.instance),
            ]
        )

    def edit(self, post_id: str, body: str, title: str | None = None) -> None:
        """Replace a post's body (and a topic's title). Author only; not on a deleted post."""
        body = _text(body, "body", MAX_BODY, empty=title is not None)
        table, _record, fields = self._own(post_id)
        if fields.get("deleted"):
            raise ConflictError("that post was deleted")
        new: dict[str, Any] = {"body": body, "edited": self._now()}
        if title is not None:
            if table != TOPICS:
                raise LocalProtocolError("only a topic has a title")
            new["title"] = _text(title, "title", MAX_TITLE)
        self._change(post_id, "edit", new)

    def delete(self, post_id: str) -> None:
        """Tombstone a post: its text goes, its place in the thread stays. Author only."""
        _table, _record, fields = self._own(post_id)
        if fields.get("deleted"):
            raise ConflictError("that post is already deleted")
        new: dict[str, Any] = {"deleted": True, "body": "", "edited": self._now()}
        if fields["title"]:
            new["title"] = ""
        self._change(post_id, "delete", new)

    def last_change(self) -> dict[str, Any] | None:
        """This endpoint's last edit or delete not yet undone: ``{post, kind, fields}``."""
        view = self._view()
        entry_id = undo_record_id(self.me)
        entry = view.get(UNDO, entry_id)
        if entry is None or view.owner(UNDO, entry_id) != self.me:
            return None  # absent, or not ours to trust
        post, kind, fields = entry.get("post"), entry.get("kind"), entry.get("fields")
        if kind not in ("edit", "delete") or type(post) is not str or type(fields) is not dict:
            return None
        if not set(fields) <= {"title", "body", "edited", "deleted"}:
            return None
        return entry

    def undo_last(self) -> str:
        """Undo this endpoint's last edit or delete with a new delta. Returns the post id.

        Raises LocalProtocolError when there is nothing to undo.
        """
        entry = self.last_change()
        if entry is None:
            raise ConflictError("nothing to undo")
        post_id = str(entry["post"])
        table, record, _fields = self._own(post_id)
        restore = dict(entry["fields"])
        restore["rev"] = self._rev()
        done = {"post": post_id, "kind": "undone", "fields": {}}
        self._commit(
            [
                rdb.set_fields(table, record, restore, instance=self.instance),
                rdb.set_fields(UNDO, undo_record_id(self.me), done, instance=self.instance),
            ]
        )
        return post_id

    # -- events -------------------------------------------------------------------------------

    def executed(self, deltas: Iterable[Delta]) -> list[ChangeEvent]:
        """What its owner calls with the deltas the replica executed (its listener): their
        change events (:meth:`events`), the posts they touched noted for the search index."""
        deltas = list(deltas)
        self._told += len(deltas)
        changes = self.events(deltas)
        self.index.touched(change.post for change in changes)
        self.threads.touched(change.topic for change in changes)
        return changes

    def events(self, executed: Iterable[Delta]) -> list[ChangeEvent]:
        """Change events for the discussion commands in ``executed`` deltas."""
        out: list[ChangeEvent] = []
        for delta in executed:
            for command in delta.commands:
                if command.engine != self.instance:
                    continue
                post_id = post_id_at(
                    str(command.args.get("table", "")), str(command.args.get("record", ""))
                )
                if post_id is None:
                    continue
                fields = command.args.get("fields", {})
                if command.name == "create":
                    kind = "added"
                elif fields.get("deleted") is True:
                    kind = "deleted"
                else:
                    kind = "edited"
                out.append(
                    ChangeEvent(
                        kind=kind, post=post_id, topic=topic_of(post_id), creator=delta.creator
                    )
                )
        return out


def _open(context: ToolContext) -> Discussion:
    return Discussion(context.replica, commit=context.commit, now=context.now, acks=context.acks)


# The discussion as an installed tool (the ``discussion`` entry point of p2pspace itself). Its
# page is the node's own web UI (``/``); its API lives under /tools/discussion/api/.
PLUGIN = ToolPlugin(
    name="discussion",
    title="Discussion",
    engines={INSTANCE: "rdb"},
    open=_open,
    routes="p2pspace.app.api.discussion_routes:routes",
    description="threads of topics and replies, with Markdown, search and unread marks",
)


__all__ = [
    "FUTURE_SLACK_MS",
    "PLUGIN",
    "INSTANCE",
    "REPLY_PREFIX",
    "TOPICS",
    "ChangeEvent",
    "Discussion",
    "Post",
    "SearchResult",
    "SyncStatus",
    "TopicSummary",
    "has_discussion",
    "post_location",
    "topic_of",
]
