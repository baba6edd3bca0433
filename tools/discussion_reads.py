"""Which posts this endpoint has read: unread marks, kept on this endpoint only.

Theory of operation. Reading is nobody else's business: the marks are not deltas, they live in
the store's local table for tools (``Store.tool_local``, never replicated, encrypted at rest with
the rest of the store) under the tool name :data:`TOOL`, one row per post read. A post is unread
until the reader opens its thread (:meth:`ReadMarks.mark`) -- whatever its time says, so a post
that arrives late from a member who was offline, dated last week, is still new here. Posts this
endpoint wrote are never unread. The set is loaded once per space and kept in memory; marking
writes only the new rows, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2pspace.core.store import Store

TOOL = "discussion.read"


class ReadMarks:
    """The posts of one space this endpoint has read."""

    def __init__(self, store: Store, space: bytes) -> None:
        self._store = store
        self._space = space
        self._read: set[str] | None = None

    def _loaded(self) -> set[str]:
        if self._read is None:
            self._read = set(self._store.tool_local(TOOL, self._space))
        return self._read

    def is_read(self, post: str) -> bool:
        return post in self._loaded()

    def mark(self, posts: Iterable[str]) -> int:
        """Mark ``posts`` read; how many were not yet. Raises StorageError if the store cannot
        be written (nothing is marked then)."""
        read = self._loaded()
        new = sorted(set(posts) - read)
        if new:
            with self._store.transaction(sync=False):
                self._store.set_tool_local(TOOL, self._space, [(p, b"") for p in new])
            read.update(new)
        return len(new)


__all__ = ["TOOL", "ReadMarks"]
