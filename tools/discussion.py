"""The threaded discussion tool, built on one rdb engine instance (``discussion``).

Theory of operation. Every operation is one delta of rdb commands; concurrency resolves by the
space's shared total order like any rdb change (the later ``set`` wins). Layout in the instance:

* table ``topics``: one record per topic, id = 16 hex characters (a hash of the id of the
  delta that made it, so ids never collide).
* table ``r:<topic>``: the topic's replies, id = ``<topic>.<16 hex>`` (so a reply id names its
  thread). ``parent`` is the topic or another reply of the same thread (nesting).
* a post's fields: ``title`` (topics), ``body``, ``author`` (endpoint id), ``created`` and
  ``edited`` (ms, informational), ``deleted`` (a tombstone: the body is cleared, the record and
  its place in the tree stay, so replies -- even ones made concurrently -- keep their parent),
  ``rev`` = ``[creator, seq]`` of the delta that last changed it (what sync status tracks).
* table ``undo``: per endpoint id, the last edit or delete it made and the fields it replaced.
  "Undo my last change" is a new delta that writes those fields back: ordinary replicated
  history, resolved by the total order like any edit.

Edits and deletes are allowed for the author only; the tool checks that locally (roles are not
yet enforced inside commands, DESIGN §8). Times come from the caller (``now``) and post ids
from the creating delta's id, so the tool is deterministic under the simulator.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pspace.core.delta import Command, Delta
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.errors import (
    ConflictError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
)

INSTANCE = "discussion"
TOPICS = "topics"
UNDO = "undo"
REPLY_PREFIX = "r:"
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
    replies: tuple[Post, ...] = field(default=())

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
            "status": self.status.describe(),
            "pending": self.status.pending,
            "delivered": self.status.delivered,
            "members": self.status.members,
            "replies": [r.to_json() for r in self.replies],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSummary:
    post: Post
    replies: int
    last_activity: int

    def to_json(self) -> dict[str, Any]:
        out = self.post.to_json()
        out.pop("replies")
        out["reply_count"] = self.replies
        out["last_activity"] = self.last_activity
        return out


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


def topic_of(post_id: str) -> str:
    return post_id.split(".", 1)[0]


def _table(topic: str) -> str:
    return REPLY_PREFIX + topic


def _check_id(post_id: str) -> str:
    parts = post_id.split(".")
    ok = 1 <= len(parts) <= 2 and all(p and all(c in "0123456789abcdef" for c in p) for p in parts)
    if not ok or any(len(p) != 16 for p in parts):
        raise LocalProtocolError(f"not a post id: {post_id!r}")
    return post_id


def _well_formed_id(post_id: str, *, topic: bool) -> bool:
    try:
        _check_id(post_id)
    except LocalProtocolError:
        return False
    return (post_id == topic_of(post_id)) == topic


def _text(value: str, label: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{label} must be text")
    value = value.strip()
    if not value and not empty:
        raise LocalProtocolError(f"{label} must not be empty")
    if len(value.encode("utf-8")) > limit:
        raise LocalProtocolError(f"{label} is longer than {limit} bytes")
    return value


def _clean(fields: Mapping[str, Any], owner: bytes | None) -> dict[str, Any] | None:
    """A post record's fields, typed, or None if it is not a well-formed post.

    The author is the record's owner -- the signer of the delta that created it, recorded by
    the rdb engine -- never a field a member wrote. Records any member could have written with
    other types (or without an owner) are left out rather than trusted.
    """
    if owner is None:
        return None
    rev = fields.get("rev")
    if not (
        type(rev) is list
        and len(rev) == 2
        and type(rev[0]) is bytes
        and len(rev[0]) == 16
        and type(rev[1]) is int
        and 0 <= rev[1] < 2**53
    ):
        return None
    out: dict[str, Any] = {"author": owner, "rev": (rev[0], rev[1])}
    for name, kind, default in (
        ("title", str, ""),
        ("body", str, ""),
        ("parent", str, ""),
        ("created", int, 0),
        ("edited", int, 0),
        ("deleted", bool, False),
    ):
        value = fields.get(name, default)
        if type(value) is not kind:
            return None
        out[name] = value
    return out


def has_discussion(replica: Replica, instance: str = INSTANCE) -> bool:
    info = replica.members().space()
    return info is not None and info.engines.get(instance) == "rdb"


class Discussion:
    """The discussion in one space, as seen by (and written as) this endpoint."""

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

    @property
    def me(self) -> bytes:
        return self.replica.endpoint_id

    # -- reading ------------------------------------------------------------------------------

    def _view(self) -> rdb.RdbView:
        return rdb.view(self.replica, self.instance)

    def _fields(self, post_id: str) -> dict[str, Any] | None:
        _check_id(post_id)
        topic = topic_of(post_id)
        table = TOPICS if post_id == topic else _table(topic)
        view = self._view()
        fields = view.get(table, post_id)
        return None if fields is None else _clean(fields, view.owner(table, post_id))

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
        return {m.id: m.name for m in self.replica.members().members()}

    def _post(
        self,
        post_id: str,
        fields: Mapping[str, Any],
        names: Mapping[bytes, str],
        context: _StatusContext,
        replies: tuple[Post, ...] = (),
    ) -> Post:
        author: bytes = fields["author"]
        rev: tuple[bytes, int] = fields["rev"]
        return Post(
            id=post_id,
            topic=topic_of(post_id),
            parent=fields["parent"],
            title=fields["title"],
            body=fields["body"],
            author=author,
            author_name=names.get(author, "") or author.hex()[:8],
            created=fields["created"],
            edited=fields["edited"],
            deleted=fields["deleted"],
            rev=rev,
            status=self._status(rev, context),
            replies=replies,
        )

    def get(self, post_id: str) -> Post:
        """One post (without replies). Raises LocalProtocolError if there is none."""
        fields = self._fields(post_id)
        if fields is None:
            raise NotFoundError(f"no post {post_id}")
        return self._post(post_id, fields, self._names(), self._status_context())

    def topics(self) -> list[TopicSummary]:
        """Every thread, newest activity first (ties by creation, then id: the same order on
        every replica holding the same state)."""
        view = self._view()
        names, context = self._names(), self._status_context()
        out = []
        for topic_id, raw, owner in view.owned_records(TOPICS):
            fields = _clean(raw, owner)
            if fields is None or not _well_formed_id(topic_id, topic=True):
                continue
            count, last = 0, fields["edited"] or fields["created"]
            for rid, raw_reply, reply_owner in view.owned_records(_table(topic_id)):
                reply = _clean(raw_reply, reply_owner)
                if reply is None or not _well_formed_id(rid, topic=False):
                    continue
                count += 1
                last = max(last, reply["edited"] or reply["created"])
            post = self._post(topic_id, fields, names, context)
            out.append(TopicSummary(post=post, replies=count, last_activity=last))
        out.sort(key=lambda t: (-t.last_activity, -t.post.created, t.post.id))
        return out

    def thread(self, topic_id: str) -> Post:
        """The topic with its reply tree; siblings in (created, author, id) order."""
        _check_id(topic_id)
        topic_id = topic_of(topic_id)
        view = self._view()
        root = self._fields(topic_id)
        if root is None:
            raise NotFoundError(f"no topic {topic_id}")
        names, context = self._names(), self._status_context()
        children: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for rid, raw, owner in view.owned_records(_table(topic_id)):
            fields = _clean(raw, owner)
            if fields is None or not _well_formed_id(rid, topic=False):
                continue
            children.setdefault(fields["parent"] or topic_id, []).append((rid, fields))

        def build(post_id: str, fields: Mapping[str, Any], depth: int) -> Post:
            kids = sorted(
                children.get(post_id, ()),
                key=lambda kv: (kv[1]["created"], kv[1]["author"], kv[0]),
            )
            replies = tuple(build(rid, f, depth + 1) for rid, f in kids) if depth < 200 else ()
            return self._post(post_id, fields, names, context, replies)

        return build(topic_id, root, 0)

    def walk(self, topic_id: str) -> Iterable[tuple[int, Post]]:
        """``(depth, post)`` of a thread in display order."""
        stack = [(0, self.thread(topic_id))]
        while stack:
            depth, post = stack.pop()
            yield depth, post
            stack.extend((depth + 1, r) for r in reversed(post.replies))

    # -- writing ------------------------------------------------------------------------------

    def _new_id(self) -> str:
        # Bound to the id of the delta that creates the post (this endpoint's next one), which
        # no other delta shares, so concurrent posts never collide; and salted, so no member
        # can predict it and take the id first.
        seq = self.replica.vector.get(self.me, 0) + 1
        material = b"p2pspace-post\0" + self.me + seq.to_bytes(8, "big") + self._random(8)
        return hashlib.sha256(material).hexdigest()[:16]

    def _rev(self) -> list[Any]:
        # The delta this change goes into is this endpoint's next one.
        return [self.me, self.replica.vector.get(self.me, 0) + 1]

    def post(self, title: str, body: str) -> str:
        """Start a thread. Returns the topic id."""
        title = _text(title, "title", MAX_TITLE)
        body = _text(body, "body", MAX_BODY, empty=True)
        topic = self._new_id()
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
        """Reply to a topic or a reply. Returns the new reply's id."""
        body = _text(body, "body", MAX_BODY)
        parent = self._fields(parent_id)
        if parent is None:
            raise NotFoundError(f"no post {parent_id}")
        if parent.get("deleted"):
            raise ConflictError("that post was deleted; reply to another one")
        topic = topic_of(parent_id)
        reply_id = f"{topic}.{self._new_id()}"
        fields = {
            "parent": parent_id,
            "body": body,
            "author": self.me,
            "created": self._now(),
            "edited": 0,
            "deleted": False,
            "rev": self._rev(),
        }
        self._commit(
            [rdb.create(_table(topic), reply_id, fields, instance=self.instance, owned=True)]
        )
        return reply_id

    def _own(self, post_id: str) -> tuple[str, dict[str, Any]]:
        fields = self._fields(post_id)
        if fields is None:
            raise NotFoundError(f"no post {post_id}")
        if fields["author"] != self.me:
            raise PermissionDeniedError("only the author can change a post")
        topic = topic_of(post_id)
        return (TOPICS if post_id == topic else _table(topic)), fields

    def _change(self, post_id: str, kind: str, new: dict[str, Any]) -> None:
        table, fields = self._own(post_id)
        replaced = {k: fields.get(k) for k in new if k in fields}
        new = {**new, "rev": self._rev()}
        undo = {"post": post_id, "kind": kind, "fields": replaced}
        # The undo entry is created empty (a no-op once it exists) and then set, so the
        # replaced text travels once, not twice.
        empty = {"post": "", "kind": "none", "fields": {}}
        self._commit(
            [
                rdb.set_fields(table, post_id, new, instance=self.instance),
                rdb.create(UNDO, self.me.hex(), empty, instance=self.instance, owned=True),
                rdb.set_fields(UNDO, self.me.hex(), undo, instance=self.instance),
            ]
        )

    def edit(self, post_id: str, body: str, title: str | None = None) -> None:
        """Replace a post's body (and a topic's title). Author only; not on a deleted post."""
        body = _text(body, "body", MAX_BODY, empty=title is not None)
        table, fields = self._own(post_id)
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
        _table_name, fields = self._own(post_id)
        if fields.get("deleted"):
            raise ConflictError("that post is already deleted")
        new: dict[str, Any] = {"deleted": True, "body": "", "edited": self._now()}
        if fields["title"]:
            new["title"] = ""
        self._change(post_id, "delete", new)

    def last_change(self) -> dict[str, Any] | None:
        """This endpoint's last edit or delete not yet undone: ``{post, kind, fields}``."""
        view = self._view()
        entry = view.get(UNDO, self.me.hex())
        if entry is None or view.owner(UNDO, self.me.hex()) != self.me:
            return None  # absent, or written by someone else: not ours to trust
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
        table, _fields = self._own(post_id)
        restore = dict(entry["fields"])
        restore["rev"] = self._rev()
        done = {"post": post_id, "kind": "undone", "fields": {}}
        self._commit(
            [
                rdb.set_fields(table, post_id, restore, instance=self.instance),
                rdb.set_fields(UNDO, self.me.hex(), done, instance=self.instance),
            ]
        )
        return post_id

    # -- events -------------------------------------------------------------------------------

    def events(self, executed: Iterable[Delta]) -> list[ChangeEvent]:
        """Change events for the discussion commands in ``executed`` deltas."""
        out: list[ChangeEvent] = []
        for delta in executed:
            for command in delta.commands:
                if command.engine != self.instance:
                    continue
                table = command.args.get("table", "")
                if table != TOPICS and not str(table).startswith(REPLY_PREFIX):
                    continue
                post_id = str(command.args.get("record", ""))
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


__all__ = [
    "INSTANCE",
    "ChangeEvent",
    "Discussion",
    "Post",
    "SyncStatus",
    "TopicSummary",
    "has_discussion",
    "topic_of",
]
