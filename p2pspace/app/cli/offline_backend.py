"""The endpoint commands on the store itself, when no node runs on the home folder.

Each command opens a temporary node that neither listens, nor discovers, nor serves the API,
holding the home's lock for the duration of the command (so it cannot run beside a node), and
closes it before returning. This is the slow path: it loads trio, the core and SQLite, which the
fast path (:mod:`~p2pspace.app.cli.http_backend`) never does; :mod:`choose_backend
<p2pspace.app.cli.choose_backend>` imports this module only when it is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.rendering import ProgressPrinter
from p2pspace.errors import LocalProtocolError
from p2pspace.node.config import NodeConfig
from p2pspace.node.home import home_lock, is_initialized
from p2pspace.node.runtime import open_node
from p2pspace.sync.invitations import decode_code

if TYPE_CHECKING:
    from p2pspace.node.node import Node
    from p2pspace.tools.discussion import Discussion

T = TypeVar("T")
# A node for one command: it neither listens nor discovers.
OFFLINE = NodeConfig(listen=None, discovery=False)


def require_endpoint(home: Path) -> Path:
    """``home`` if it holds an endpoint's identity; else :class:`CliError` saying how to make
    one."""
    if not is_initialized(home):
        raise CliError(f"no endpoint in {home}; create one with: p2pspace init --home {home}")
    return home


class OfflineBackend:
    """The store itself, through a node that neither listens nor discovers."""

    online = False

    def __init__(self, home: Path, why_not_online: str | None = None) -> None:
        self.home = home
        self.why_not_online = why_not_online

    def check_lock(self) -> None:
        """Raise :class:`CliError` if another process (a running node) holds the home."""
        try:
            with home_lock(self.home):
                pass
        except LocalProtocolError as exc:
            if self.why_not_online:
                raise CliError(
                    f"a node is running on {self.home} but its API does not answer "
                    f"({self.why_not_online})"
                ) from None
            raise CliError(str(exc)) from None

    def _with_node(self, use: Callable[[Node], T]) -> T:
        self.check_lock()

        async def main() -> T:
            async with open_node(self.home, OFFLINE) as node:
                return use(node)

        return trio.run(main)

    def status(self) -> dict[str, Any]:
        return self._with_node(lambda node: node.status().to_json())

    def spaces(self) -> list[dict[str, Any]]:
        return self._with_node(lambda node: [s.to_json() for s in node.spaces()])

    def create_space(self, name: str, tool: str, allow_duplicate: bool = False) -> dict[str, Any]:
        def create(node: Node) -> dict[str, Any]:
            engines = node.engines_for(tool)
            replica = node.create_space(name, engines=engines, allow_duplicate=allow_duplicate)
            return node.space_info(replica.space_id).to_json()

        return self._with_node(create)

    def invite(self, space: str, role: str, ttl_s: float | None) -> str:
        raise CliError(
            "an invitation needs the running node (the code carries its address); "
            f"start it with: p2pspace run --home {self.home}"
        )

    def members(self, space: str) -> list[dict[str, Any]]:
        return self._with_node(
            lambda node: [m.to_json() for m in node.members(node.resolve_space(space))]
        )

    def remove_member(self, space: str, member: str) -> dict[str, Any]:
        def remove(node: Node) -> dict[str, Any]:
            space_id = node.resolve_space(space)
            target = node.resolve_member(space_id, member)
            node.remove_member(space_id, target.id)
            return _member_json(node, space_id, target.id)

        return self._with_node(remove)

    def set_role(self, space: str, member: str, role: str) -> dict[str, Any]:
        def change(node: Node) -> dict[str, Any]:
            space_id = node.resolve_space(space)
            target = node.resolve_member(space_id, member)
            node.set_role(space_id, target.id, role)
            return _member_json(node, space_id, target.id)

        return self._with_node(change)

    def rename_space(self, space: str, name: str) -> tuple[str, dict[str, Any]]:
        def rename(node: Node) -> tuple[str, dict[str, Any]]:
            space_id = node.resolve_space(space)
            old = node.space_info(space_id).name
            node.rename_space(space_id, name)
            return old, node.space_info(space_id).to_json()

        return self._with_node(rename)

    def leave_space(self, space: str) -> dict[str, Any]:
        def leave(node: Node) -> dict[str, Any]:
            space_id = node.resolve_space(space)
            node.leave_space(space_id)
            return node.space_info(space_id).to_json()

        return self._with_node(leave)

    def compact_space(self, space: str, keep_history: bool | None) -> dict[str, Any]:
        def compact(node: Node) -> dict[str, Any]:
            return node.compact_space(node.resolve_space(space), keep_history=keep_history)

        return self._with_node(compact)

    def web_ui_url(self, space: str | None) -> str:
        self.check_lock()  # a node runs but its API does not answer: says so
        raise CliError(
            f"no node is running on {self.home} (the web UI is served by the node); "
            f"start it with: p2pspace run --home {self.home}"
        )

    def join(self, code: str, timeout: float) -> dict[str, Any]:
        self.check_lock()
        progress = ProgressPrinter()

        async def main() -> dict[str, Any]:
            async with open_node(self.home, OFFLINE) as node:
                try:
                    space = await node.join(code, timeout=timeout, progress=progress)
                except trio.TooSlowError:
                    raise CliError(
                        f"the join did not finish within {timeout:g} s (is the inviter's node "
                        "running and reachable?)"
                    ) from None
                inviter = decode_code(code).inviter
                names = {m.id: m.display_name for m in node.members(space)}
                info = node.space_info(space)
                return {
                    "space": space.hex(),
                    "name": info.name,
                    "members": len(info.members),
                    "inviter": names.get(inviter, ""),
                }

        joined = trio.run(main)
        progress.done()  # only once it did catch up
        return joined

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None:
        self._with_node(lambda node: node.rdb_set(node.resolve_space(space), table, record, fields))

    def rdb_delete(self, space: str, table: str, record: str) -> None:
        self._with_node(lambda node: node.rdb_delete(node.resolve_space(space), table, record))

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]:
        def read(node: Node) -> tuple[str, dict[str, Any]]:
            space_id = node.resolve_space(space)
            return space_id.hex(), node.rdb_get(space_id, table, record)

        space_hex, found = self._with_node(read)
        if record is None:
            return found
        if record not in found:
            hint = " (no node runs here to receive it: start one with p2pspace run)" if wait else ""
            raise CliError(f"no record {table}/{record} in space {space_hex}{hint}")
        fields: dict[str, Any] = found[record]
        return fields

    def _with_discussion(self, space: str, use: Callable[[Discussion], T]) -> T:
        def run(node: Node) -> T:
            tool = node.discussion(node.resolve_space(space))
            if tool is None:  # pragma: no cover - required=True raises instead
                raise CliError("this space has no discussion tool")
            return use(tool)

        return self._with_node(run)

    def discuss_post(self, space: str, title: str, body: str) -> str:
        return self._with_discussion(space, lambda tool: tool.post(title, body))

    def discuss_reply(self, space: str, post: str, body: str) -> dict[str, Any]:
        def reply(tool: Discussion) -> dict[str, Any]:
            made = tool.reply(post, body)
            return {"id": made, "parent_author_name": tool.get(post).author_name}

        return self._with_discussion(space, reply)

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> dict[str, Any]:
        def edit(tool: Discussion) -> dict[str, Any]:
            tool.edit(post, body, title)
            return {"id": post, "label": tool.label(post)}

        return self._with_discussion(space, edit)

    def discuss_delete(self, space: str, post: str) -> dict[str, Any]:
        def delete(tool: Discussion) -> dict[str, Any]:
            label = tool.label(post)
            tool.delete(post)
            return {"id": post, "label": label}

        return self._with_discussion(space, delete)

    def discuss_undo(self, space: str) -> dict[str, Any]:
        def undo(tool: Discussion) -> dict[str, Any]:
            change = tool.last_change()
            post = tool.undo_last()
            kind = change["kind"] if change is not None else ""
            return {"id": post, "kind": kind, "label": tool.label(post)}

        return self._with_discussion(space, undo)

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        def threads(tool: Discussion) -> list[dict[str, Any]]:
            ids = [topic] if topic is not None else [t.post.id for t in tool.topics()]
            return [tool.thread(i).to_json() for i in ids]

        return self._with_discussion(space, threads)


def _member_json(node: Node, space: bytes, member: bytes) -> dict[str, Any]:
    return next(m.to_json() for m in node.members(space) if m.id == member)


__all__ = ["OfflineBackend", "require_endpoint"]
