"""What an endpoint command needs from the endpoint, whoever serves it, and how it fails.

Two implementations: :class:`~p2pspace.app.cli.http_backend.HttpBackend` (a running node's local
API; standard library only, the fast path) and
:class:`~p2pspace.app.cli.offline_backend.OfflineBackend` (the store itself, through a
temporary node). :func:`~p2pspace.app.cli.choose_backend.connect` picks one.
"""

from __future__ import annotations

from typing import Any, Protocol


class CliError(Exception):
    """Something the user can fix; printed as one ``p2pspace: error:`` line."""


class ApiError(CliError):
    """The node's API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    """What the endpoint commands need; served by the running node's API or offline.

    Every method raises :class:`CliError` (or a :class:`~p2pspace.errors.P2PSpaceError`) for
    something the user can fix: an unknown space, a malformed value, a refused command.
    """

    online: bool

    def status(self) -> dict[str, Any]: ...

    def spaces(self) -> list[dict[str, Any]]: ...

    def create_space(self, name: str, tool: str, allow_duplicate: bool = False) -> dict[str, Any]:
        """Found a space; its view (``SpaceView.to_json()``). Refused if a space here has
        the name already, unless ``allow_duplicate``."""
        ...

    def invite(self, space: str, role: str, ttl_s: float | None) -> str: ...

    def members(self, space: str) -> list[dict[str, Any]]:
        """``SpaceMemberView.to_json()`` of everyone ever admitted: current members first."""
        ...

    def remove_member(self, space: str, member: str) -> dict[str, Any]:
        """Remove ``member``; its view afterwards."""
        ...

    def set_role(self, space: str, member: str, role: str) -> dict[str, Any]:
        """Give ``member`` ``role``; its view afterwards."""
        ...

    def rename_space(self, space: str, name: str) -> tuple[str, dict[str, Any]]:
        """Rename ``space``; its old name and its view afterwards (``SpaceView.to_json()``)."""
        ...

    def leave_space(self, space: str) -> dict[str, Any]:
        """Leave ``space``; the space's view afterwards (``SpaceView.to_json()``)."""
        ...

    def compact_space(self, space: str, keep_history: bool | None) -> dict[str, Any]:
        """Compact ``space`` (setting whether it keeps its history first, unless None); the
        outcome (``Node.compact_space``)."""
        ...

    def join(self, code: str, timeout: float) -> dict[str, Any]:
        """Redeem ``code``; once caught up, ``{"space", "name", "members", "inviter"}``."""
        ...

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None: ...

    def rdb_delete(self, space: str, table: str, record: str) -> None: ...

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]: ...

    def discuss_post(self, space: str, title: str, body: str) -> str: ...

    def discuss_reply(self, space: str, post: str, body: str) -> dict[str, Any]:
        """``{"id", "parent_author_name"}`` of the reply made."""
        ...

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> dict[str, Any]:
        """``{"id", "label"}``: the post and its label (``Discussion.label``) after the edit."""
        ...

    def discuss_delete(self, space: str, post: str) -> dict[str, Any]:
        """``{"id", "label"}``: the post and its label before the delete."""
        ...

    def discuss_undo(self, space: str) -> dict[str, Any]:
        """``{"id", "kind", "label"}``: the post changed back, which change was undone
        (``edit`` or ``delete``), and the post's label now."""
        ...

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        """``Post.to_json()`` of one thread, or of every thread (newest activity first)."""
        ...

    def web_ui_url(self, space: str | None) -> str:
        """The web UI's address with the token, opened on ``space`` if given; the UI is
        served by the running node, so offline this raises :class:`CliError`."""
        ...


__all__ = ["ApiError", "Backend", "CliError"]
