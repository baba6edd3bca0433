"""How the discussion tool lays out its posts in its rdb instance, and how it reads them back.

Theory of operation. The record layout is the tool's real interface: replicas running other
versions of the tool agree because they agree on these records. In the instance (``discussion``
by default):

* table ``topics``: one record per topic; its id, ``<author's namespace>~<16 hex>``, is made by
  ``rdb.owned_id(author, ...)`` from a hash of the id of the delta that made it (so one author's
  ids never collide), and the topic's post id is the same string.
* table ``r:<topic>``: the topic's replies, record ids made the same way by each reply's author;
  a reply's *post id* is ``<topic>.<record id>``, so a post id names its thread. ``parent`` is
  the post id of the topic or of another reply of the same thread (nesting).
* a post's fields: ``title`` (topics), ``body``, ``author`` (endpoint id), ``created`` and
  ``edited`` (ms, informational), ``deleted`` (a tombstone: the body is cleared, the record and
  its place in the tree stay, so replies -- even ones made concurrently -- keep their parent),
  ``rev`` = ``[creator, seq]`` of the delta that last changed it (what sync status tracks).
* table ``undo``: per endpoint, record ``rdb.owned_id(endpoint, "last")``: the last edit or
  delete it made and the fields it replaced.

Posts and undo entries are owned records in their author's namespace, so the engine makes a
change by anyone else -- and a create of the same id by anyone else, even one that sorts first
-- a recorded no-op on every replica. A record that is not owned, or whose id is not in its
owner's namespace, is not a post (:func:`clean`).

Times. ``created`` and ``edited`` are whatever the author's clock (or software) wrote. Views show
and order a time by :func:`shown_time`: never more than :data:`FUTURE_SLACK_MS` ahead of the
reader's clock, never before 1970, and say when they clamped one; the stored fields and the
total order are never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from p2pspace.engines import rdb
from p2pspace.errors import LocalProtocolError

INSTANCE = "discussion"
TOPICS = "topics"
UNDO = "undo"
REPLY_PREFIX = "r:"
UNDO_RECORD = "last"  # local id of an endpoint's undo entry in its namespace
FUTURE_SLACK_MS = 10 * 60 * 1000  # how far ahead of the reader's clock a shown time may be
TOKEN_HEX = 16
_HEX = frozenset("0123456789abcdef")
_RECORD_LENGTH = rdb.NAMESPACE_HEX + 1 + TOKEN_HEX


def topic_of(post_id: str) -> str:
    return post_id.split(".", 1)[0]


def reply_table(topic: str) -> str:
    return REPLY_PREFIX + topic


def is_record_id(record: str) -> bool:
    """A topic's id, or a reply's record id: ``<namespace>~<16 hex>``."""
    return (
        len(record) == _RECORD_LENGTH
        and rdb.namespace_of(record) is not None
        and _HEX.issuperset(record[rdb.NAMESPACE_HEX + 1 :])
    )


def check_id(post_id: str) -> str:
    """``post_id`` if it is a post id (a topic's, or ``<topic>.<reply record>``); raises
    :class:`LocalProtocolError` otherwise."""
    parts = post_id.split(".") if isinstance(post_id, str) else []
    if not 1 <= len(parts) <= 2 or not all(is_record_id(p) for p in parts):
        raise LocalProtocolError(f"not a post id: {post_id!r}")
    return post_id


def well_formed(post_id: str, *, topic: bool) -> bool:
    """Whether ``post_id`` is a post id of a topic (``topic``) or of a reply."""
    try:
        check_id(post_id)
    except LocalProtocolError:
        return False
    return (post_id == topic_of(post_id)) == topic


def post_location(post_id: str) -> tuple[str, str]:
    """``(table, record id)`` of a post. Raises :class:`LocalProtocolError` for a non-post id."""
    check_id(post_id)
    topic, _dot, reply = post_id.partition(".")
    return (reply_table(topic), reply) if reply else (TOPICS, topic)


def post_id_at(table: str, record: str) -> str | None:
    """The post id of record ``record`` of ``table``, or None if the table holds no posts."""
    if table == TOPICS:
        return record
    if table.startswith(REPLY_PREFIX):
        return f"{table[len(REPLY_PREFIX) :]}.{record}"
    return None


def new_record_id(author: bytes, seq: int, salt: bytes) -> str:
    """The record id of a new post by ``author`` in its delta number ``seq``.

    ``seq`` makes it unique among the author's posts; ``salt`` keeps it so when the author's
    store was restored from a backup and a seq is made twice.
    """
    material = b"p2pspace-post\0" + author + seq.to_bytes(8, "big") + salt
    return rdb.owned_id(author, hashlib.sha256(material).hexdigest()[:TOKEN_HEX])


def undo_record_id(endpoint: bytes) -> str:
    return rdb.owned_id(endpoint, UNDO_RECORD)


def clean(record: str, fields: Mapping[str, Any], owner: bytes | None) -> dict[str, Any] | None:
    """A post record's fields, typed, or None if it is not a well-formed post.

    The author is the record's owner -- the signer of the delta that created it, recorded by
    the rdb engine -- never a field a member wrote; the record id must be in the author's
    namespace (the engine sees to it). Records any member could have written with other types
    (or without an owner) are left out rather than trusted.
    """
    if (
        owner is None
        or not is_record_id(record)
        or rdb.namespace_of(record) != rdb.namespace(owner)
    ):
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


def shown_time(value: int, now: int) -> tuple[int, bool]:
    """A stored time as views show and order it at reader time ``now`` (ms), and whether it was
    clamped: never more than :data:`FUTURE_SLACK_MS` ahead of ``now``, never before 0."""
    if value > now + FUTURE_SLACK_MS:
        return now + FUTURE_SLACK_MS, True
    if value < 0:
        return 0, True
    return value, False


def shown_activity(fields: Mapping[str, Any], now: int) -> tuple[int, bool]:
    """When a post (its :func:`clean` fields) last changed, as shown at ``now``: its edit time
    if it was edited, else its creation time; and whether that time was clamped."""
    edited = shown_time(fields["edited"], now)
    return edited if edited[0] else shown_time(fields["created"], now)
