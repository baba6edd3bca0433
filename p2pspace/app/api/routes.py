"""The node's own routes: status, spaces, members, invitations, joins, rdb records, presence,
events.

Theory of operation. Each handler reads the request, calls one :class:`Node` method and answers
its JSON; failures are raised and mapped to statuses by the app
(:data:`~p2pspace.app.api.http.EXCEPTION_HANDLERS`). ``{space}`` in a path is a space id, id
prefix or name. Two kinds of request may last: a join (up to its ``timeout_s``) and a read with
``?wait=SECONDS`` (a long-poll: it answers as soon as what it reads exists, or with what there is
when the wait is over). Both end early, answering, when the API stops.

A member in a request body is named as on the command line (``MEMBER``): an endpoint id in any
form the node prints, or a display name unique in the space (see
:meth:`Node.resolve_member <p2pspace.node.node.Node.resolve_member>`).

Tools' routes are not here: each tool declares its own (see :mod:`p2pspace.app.api.registry`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import segno
import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from p2pspace.app.api.events import EventStream
from p2pspace.app.api.http import HTTPError, json_response, seconds_field, text_field
from p2pspace.app.space_tools import DEFAULT_TOOL
from p2pspace.core.delta import Command
from p2pspace.errors import P2PSpaceError
from p2pspace.sync import invitations

if TYPE_CHECKING:
    from p2pspace.app.api.context import RouteContext
    from p2pspace.core.delta import Delta

SPACE = "/api/spaces/{space}"
RECORD = SPACE + "/rdb/{table}/{record:path}"


def delta_json(delta: Delta) -> dict[str, Any]:
    """What a write answers: the id and hash of the delta that made it."""
    return {"creator": delta.creator.hex(), "seq": delta.seq, "hash": delta.hash.hex()}


class NodeRoutes:
    """The node's routes, bound to one :class:`RouteContext`."""

    def __init__(self, context: RouteContext) -> None:
        self.context = context
        self.node = context.node

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/status", self.get_status, methods=["GET"]),
            Route("/api/spaces", self.list_spaces, methods=["GET"]),
            Route("/api/spaces", self.create_space, methods=["POST"]),
            Route(SPACE, self.get_space, methods=["GET"]),
            Route(SPACE + "/members", self.list_members, methods=["GET"]),
            Route(SPACE + "/members/remove", self.remove_member, methods=["POST"]),
            Route(SPACE + "/members/role", self.set_role, methods=["POST"]),
            Route(SPACE + "/rename", self.rename_space, methods=["POST"]),
            Route(SPACE + "/commit", self.commit, methods=["POST"]),
            Route(SPACE + "/leave", self.leave_space, methods=["POST"]),
            Route(SPACE + "/compact", self.compact_space, methods=["POST"]),
            Route(SPACE + "/invitations", self.create_invitation, methods=["POST"]),
            Route("/api/join", self.join, methods=["POST"]),
            Route(SPACE + "/rdb/{table}", self.get_table, methods=["GET"]),
            Route(RECORD, self.get_record, methods=["GET"]),
            Route(RECORD, self.put_record, methods=["PUT"]),
            Route(RECORD, self.delete_record, methods=["DELETE"]),
            Route(SPACE + "/presence", self.get_presence, methods=["GET"]),
            Route("/api/events", EventStream(self.context), methods=["GET"]),
        ]

    async def get_status(self, request: Request) -> Response:
        return json_response(self.node.status())

    async def list_spaces(self, request: Request) -> Response:
        return json_response(self.node.spaces())

    async def create_space(self, request: Request) -> Response:
        body = await self.context.body(request)
        name = text_field(body, "name")
        tool = text_field(body, "tool", default=DEFAULT_TOOL)
        engines = self.node.engines_for(tool)
        duplicate = body.get("allow_duplicate", False)
        if type(duplicate) is not bool:
            raise HTTPError(400, "'allow_duplicate' is true, false or absent")
        replica = self.node.create_space(name, engines=engines, allow_duplicate=duplicate)
        return json_response(self.node.space_info(replica.space_id), 201)

    async def get_space(self, request: Request) -> Response:
        return json_response(self.node.space_info(self.context.space(request)))

    async def list_members(self, request: Request) -> Response:
        space = self.context.space(request)
        return json_response({"space": space.hex(), "members": self.node.members(space)})

    async def remove_member(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        target = self.node.resolve_member(space, text_field(body, "member"))
        delta = self.node.remove_member(space, target.id)
        return json_response({"delta": delta_json(delta), "member": self._member(space, target.id)})

    async def set_role(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        target = self.node.resolve_member(space, text_field(body, "member"))
        delta = self.node.set_role(space, target.id, text_field(body, "role"))
        return json_response({"delta": delta_json(delta), "member": self._member(space, target.id)})

    async def rename_space(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        old = self.node.space_info(space).name
        delta = self.node.rename_space(space, text_field(body, "name"))
        info = self.node.space_info(space)
        return json_response({"delta": delta_json(delta), "old_name": old, "space": info})

    async def commit(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        tool = text_field(body, "tool")
        raw = body.get("commands")
        if not isinstance(raw, list):
            raise HTTPError(400, "'commands' must be a list of {engine, name, args} objects")
        commands = []
        for i, item in enumerate(raw):
            if (
                not isinstance(item, dict)
                or set(item) != {"engine", "name", "args"}
                or not isinstance(item["engine"], str)
                or not isinstance(item["name"], str)
                or not isinstance(item["args"], dict)
            ):
                raise HTTPError(
                    400, f"command {i} must be an object of engine (text), name (text), args"
                )
            try:
                commands.append(
                    Command(engine=item["engine"], name=item["name"], args=item["args"])
                )
            except P2PSpaceError as exc:
                raise HTTPError(400, f"command {i}: {exc}") from None
        delta = self.node.commit_for_tool(space, tool, commands)
        return json_response({"delta": delta_json(delta)}, 201)

    async def leave_space(self, request: Request) -> Response:
        space = self.context.space(request)
        delta = self.node.leave_space(space)
        return json_response({"delta": delta_json(delta), "space": self.node.space_info(space)})

    async def compact_space(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        keep = body.get("keep_history")
        if keep is not None and type(keep) is not bool:
            raise HTTPError(400, "keep_history is true, false or absent")
        return json_response({"compacted": self.node.compact_space(space, keep_history=keep)})

    def _member(self, space: bytes, member: bytes) -> object:
        return next(m for m in self.node.members(space) if m.id == member)

    async def create_invitation(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        role = text_field(body, "role", default="participant")
        ttl = seconds_field(body, "ttl_s")
        ttl_ms = invitations.DEFAULT_TTL_MS if ttl is None else max(1, round(ttl * 1000))
        code = self.node.invite(space, role=role, ttl_ms=ttl_ms)
        answer = {
            "code": code,
            "space": space.hex(),
            "role": role,
            "expires": self.node.clock.now_ms() + ttl_ms,
            "qr_svg": qr_svg(code),
        }
        return json_response(answer, 201)

    async def join(self, request: Request) -> Response:
        body = await self.context.body(request)
        code = text_field(body, "code")
        config = self.context.config
        timeout = seconds_field(body, "timeout_s")
        timeout = config.max_wait if timeout is None else min(timeout, config.max_join_wait)
        with self.context.stopper.cancellable() as scope:
            try:
                space = await self.node.join(code, timeout=timeout)
            except trio.TooSlowError:
                raise HTTPError(
                    504,
                    f"the join did not finish within {timeout:g} s "
                    "(is the inviter's node running and reachable?)",
                ) from None
        if scope.cancelled_caught:
            raise HTTPError(503, "the node stopped before the join finished")
        inviter = invitations.decode_code(code).inviter
        names = {m.id: m.display_name for m in self.node.members(space)}
        info = self.node.space_info(space)
        answer = {
            "space": space.hex(),
            "name": info.name,
            "members": len(info.members),
            "inviter": names.get(inviter, ""),
        }
        return json_response(answer)

    async def get_table(self, request: Request) -> Response:
        space, table = self.context.space(request), request.path_params["table"]
        await self.context.wait(request, lambda: bool(self.node.rdb_get(space, table)))
        records = self.node.rdb_get(space, table)
        return json_response({"space": space.hex(), "table": table, "records": records})

    async def get_record(self, request: Request) -> Response:
        space = self.context.space(request)
        table, record = request.path_params["table"], request.path_params["record"]
        await self.context.wait(request, lambda: bool(self.node.rdb_get(space, table, record)))
        found = self.node.rdb_get(space, table, record)
        if record not in found:
            raise HTTPError(404, f"no record {table}/{record} in space {space.hex()}")
        body = {"space": space.hex(), "table": table, "record": record, "fields": found[record]}
        return json_response(body)

    async def put_record(self, request: Request) -> Response:
        body = await self.context.body(request)
        space = self.context.space(request)
        fields = body.get("fields")
        if not isinstance(fields, dict):
            raise HTTPError(400, "'fields' must be a JSON object of field values")
        table, record = request.path_params["table"], request.path_params["record"]
        delta = self.node.rdb_set(space, table, record, fields)
        return json_response({"delta": delta_json(delta)})

    async def delete_record(self, request: Request) -> Response:
        space = self.context.space(request)
        table, record = request.path_params["table"], request.path_params["record"]
        delta = self.node.rdb_delete(space, table, record)
        return json_response({"delta": delta_json(delta)})

    async def get_presence(self, request: Request) -> Response:
        return json_response({"members": self.node.presence(self.context.space(request))})


def qr_svg(text: str) -> str:
    """``text`` as a QR code: an inline SVG element (no script, no style attribute), for a
    phone's camera to read an invitation code off the screen."""
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out,
        kind="svg",
        xmldecl=False,  # an element, not a document
        svgns=True,  # so that it parses as SVG on its own
        nl=False,
        omitsize=True,  # the page sizes it
        scale=4,
        border=2,
        dark="#000",
        light="#fff",
    )
    return out.getvalue().decode()


def node_routes(context: RouteContext) -> list[BaseRoute]:
    """The node's routes (a route provider, like each tool's, but always served)."""
    return NodeRoutes(context).routes()


__all__ = ["NodeRoutes", "delta_json", "node_routes"]
