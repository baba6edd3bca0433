"""What the thread list needs of each thread, kept between reads of it.

Theory of operation. Listing threads used to read every post of every thread on every call.
:class:`ThreadSummaries` keeps one :class:`ThreadSummary` per topic -- its fields, its live
replies, the posts by others that can be unread, the latest raw activity time and the preview
line -- and re-reads only the threads its owner says executed deltas touched
(:meth:`ThreadSummaries.touched`). Whenever ``version()`` moves (an undo or redo, a snapshot,
deltas nobody reported: see ``Discussion._version``) it rebuilds every summary from state
instead, so what it answers is always the state as it is. Times are kept raw: clamping to the
reader's clock commutes with the maximum, so it is applied per read
(:meth:`ThreadSummary.shown_activity`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2pspace.tools.discussion_layout import (
    FUTURE_SLACK_MS,
    TOPICS,
    reply_table,
    well_formed,
)
from p2pspace.tools.discussion_text import preview

Posts = Callable[[str], Iterable[tuple[str, dict[str, Any]]]]  # a table's (post id, fields)
Fields = Callable[[str], dict[str, Any] | None]  # one post's fields, or None


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadSummary:
    """One thread as the list shows it: the topic's fields, its live replies, the posts by
    others that can be unread, the latest raw activity time (an edit's, else a creation's) and
    whether any was negative (shown clamped to 0), the preview line."""

    topic: dict[str, Any]
    replies: int
    others: list[str]
    activity: int
    negative: bool
    preview: str

    def shown_activity(self, now: int) -> tuple[int, bool]:
        """The latest activity as shown at reader time ``now``, and whether it was clamped
        (what the maximum of each post's shown activity is)."""
        cap = now + FUTURE_SLACK_MS
        if self.activity > cap:
            return cap, True
        if self.activity <= 0:
            return 0, self.activity < 0 or self.negative
        return self.activity, False


class ThreadSummaries:
    """The summaries of one discussion's threads, kept current."""

    def __init__(
        self, *, posts: Posts, fields: Fields, me: bytes, version: Callable[[], tuple[int, ...]]
    ) -> None:
        self._posts = posts
        self._fields = fields
        self._me = me
        self._version = version
        self._kept: dict[str, ThreadSummary] | None = None
        self._seen: tuple[int, ...] = ()
        self._stale: set[str] = set()

    def touched(self, topics: Iterable[str]) -> None:
        """Executed deltas changed posts of these threads: read them again before the next
        :meth:`current`."""
        self._stale.update(topics)

    def current(self) -> dict[str, ThreadSummary]:
        """Every thread's summary, by topic id: rebuilt from state at the first call and
        whenever ``version()`` moved, else re-read for the threads touched since the last."""
        seen = self._version()
        if self._kept is None or seen != self._seen:
            self._kept = {t: self._summarise(t, f) for t, f in self._posts(TOPICS)}
        else:
            for topic_id in sorted(self._stale):
                fields = self._fields(topic_id) if well_formed(topic_id, topic=True) else None
                if fields is None:
                    self._kept.pop(topic_id, None)
                else:
                    self._kept[topic_id] = self._summarise(topic_id, fields)
        self._stale.clear()
        self._seen = seen
        return self._kept

    def _summarise(self, topic_id: str, fields: dict[str, Any]) -> ThreadSummary:
        me = self._me
        activity = fields["edited"] if fields["edited"] > 0 else fields["created"]
        negative = activity < 0
        others = [topic_id] if fields["author"] != me and not fields["deleted"] else []
        replies = 0
        for reply_id, reply in self._posts(reply_table(topic_id)):
            if not reply["deleted"]:
                replies += 1
                if reply["author"] != me:
                    others.append(reply_id)
            raw = reply["edited"] if reply["edited"] > 0 else reply["created"]
            negative = negative or raw < 0
            activity = max(activity, raw)
        return ThreadSummary(
            topic=fields,
            replies=replies,
            others=others,
            activity=activity,
            negative=negative,
            preview="" if fields["deleted"] else preview(fields["body"]),
        )


__all__ = ["ThreadSummaries", "ThreadSummary"]
