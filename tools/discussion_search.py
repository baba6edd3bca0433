"""Full-text search over a space's posts: an SQLite FTS5 index kept beside the replica.

Theory of operation. The index lives in memory (one in-memory SQLite database per space, never
on disk: a post's words are stored only where the replica stores them, encrypted at rest when
the replica is). It is built from the discussion's state on the first search, then kept
current lazily: the node tells it which posts executed deltas touched (:meth:`SearchIndex.touched`)
and the next search re-reads just those posts from state. Undo and redo can change posts no
executed delta names (a late delta sorting before them), and a snapshot replaces the whole
state, so whenever the replica's undo or snapshot count has moved since the index last caught
up, the next search rebuilds it from state instead. Either
way a search answers from the state as it is when the search runs, never from a stale index.

A query is words, not FTS5 syntax: it is split into words (letters and digits), each matched as
a prefix (``lun`` finds "lunch"), all required; quotes, operators and column filters in what the
user typed are just characters. Matches are ranked by BM25 with a topic's title weighted
above bodies; deleted posts are not indexed. Each hit carries a snippet with the matched words
between :data:`MARK_START` and :data:`MARK_END` (control characters the index takes out of
posts' text), which the page turns into highlighting without parsing any HTML.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2pspace.core.replica import Replica

MARK_START = "\x02"
MARK_END = "\x03"
MAX_QUERY_WORDS = 16
MAX_RESULTS = 200
_WORD = re.compile(r"\w+")

# (post id, topic id, title, body, deleted) of every post, and of one post (None: gone).
AllPosts = Callable[[], Iterable[tuple[str, str, str, str, bool]]]
OnePost = Callable[[str], tuple[str, str, str, bool] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    post: str
    topic: str
    snippet: str  # matched words between MARK_START and MARK_END

    def to_json(self) -> dict[str, Any]:
        return {"post": self.post, "topic": self.topic, "snippet": self.snippet}


def query_words(text: str) -> list[str]:
    """The words a query searches for (at most :data:`MAX_QUERY_WORDS`), in lower case."""
    # lower(), not casefold(): the index's tokenizer folds case the same way ("ß" stays "ß").
    return [w.lower() for w in _WORD.findall(text)][:MAX_QUERY_WORDS]


def _plain(text: str) -> str:
    return text.replace(MARK_START, " ").replace(MARK_END, " ")


class SearchIndex:
    """The FTS5 index of one space's posts."""

    def __init__(
        self,
        replica: Replica,
        all_posts: AllPosts,
        one_post: OnePost,
        version: Callable[[], tuple[int, ...]] | None = None,
    ) -> None:
        """``version``: what moves when posts may have changed in a way :meth:`touched` was not
        told (default: the replica's undo and snapshot counts); the index is rebuilt then."""
        self._replica = replica
        self._all = all_posts
        self._one = one_post
        self._version = version or self._counts
        self._db: sqlite3.Connection | None = None
        self._seen: tuple[int, ...] = ()
        self._touched: set[str] = set()

    def touched(self, posts: Iterable[str]) -> None:
        """Executed deltas changed ``posts``: re-read them before the next search."""
        if self._db is not None:
            self._touched.update(posts)

    def _counts(self) -> tuple[int, ...]:
        stats = self._replica.stats
        return (stats.undone, stats.snapshots)

    def _current(self) -> sqlite3.Connection:
        seen = self._version()
        if self._db is None or seen != self._seen:
            self._rebuild()
        elif self._touched:
            self._refresh(sorted(self._touched))
        self._touched.clear()
        self._seen = seen
        assert self._db is not None
        return self._db

    def _rebuild(self) -> None:
        if self._db is not None:
            self._db.close()
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.execute(
            "CREATE VIRTUAL TABLE posts USING fts5("
            "post UNINDEXED, topic UNINDEXED, title, body, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        )
        rows = [
            (post, topic, _plain(title), _plain(body))
            for post, topic, title, body, deleted in self._all()
            if not deleted
        ]
        with db:
            db.executemany("INSERT INTO posts (post, topic, title, body) VALUES (?, ?, ?, ?)", rows)
        self._db = db

    def _refresh(self, posts: list[str]) -> None:
        assert self._db is not None
        with self._db:
            for post in posts:
                self._db.execute("DELETE FROM posts WHERE post = ?", (post,))
                found = self._one(post)
                if found is not None and not found[3]:
                    topic, title, body, _deleted = found
                    self._db.execute(
                        "INSERT INTO posts (post, topic, title, body) VALUES (?, ?, ?, ?)",
                        (post, topic, _plain(title), _plain(body)),
                    )

    def search(self, text: str, *, limit: int = 50) -> list[Hit]:
        """The posts matching every word of ``text``, best first (at most ``limit``, capped at
        :data:`MAX_RESULTS`); none for a query without words."""
        words = query_words(text)
        if not words:
            return []
        match = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
        db = self._current()
        rows = db.execute(
            "SELECT post, topic, "
            "snippet(posts, -1, ?, ?, '…', 12) FROM posts WHERE posts MATCH ? "
            "ORDER BY bm25(posts, 0, 0, 4.0, 1.0), post LIMIT ?",
            (MARK_START, MARK_END, match, max(1, min(limit, MAX_RESULTS))),
        ).fetchall()
        return [Hit(post=p, topic=t, snippet=s) for p, t, s in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


__all__ = ["MARK_END", "MARK_START", "Hit", "SearchIndex", "query_words"]
