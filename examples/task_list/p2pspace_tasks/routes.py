"""The task list's HTTP API (mounted by the node under /tools/tasks/api)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from p2pspace.app.api import RouteContext
from p2pspace.app.api.http import json_response, text_field
from p2pspace_tasks.tasks import TaskList


def routes(context: RouteContext) -> list[BaseRoute]:
    def tool(request: Request) -> TaskList:
        found: TaskList = context.node.tool(context.space(request), "tasks")
        return found

    async def list_tasks(request: Request) -> Response:
        tasks = tool(request)
        names = {m.id: m.display_name for m in context.node.members(tasks.replica.space_id)}
        shown = [{**t.to_json(), "assignee_name": names.get(t.assignee, "")} for t in tasks.tasks()]
        return json_response({"tasks": shown})

    async def add(request: Request) -> Response:
        body = await context.body(request)
        return json_response({"id": tool(request).add(text_field(body, "title"))}, 201)

    async def change(request: Request) -> Response:
        body = await context.body(request)
        tasks, task = tool(request), request.path_params["task"]
        what = text_field(body, "change")
        if what == "done":
            tasks.done(task)
        elif what == "reopen":
            tasks.reopen(task)
        elif what == "assign":
            member = text_field(body, "member", default="")
            space = tasks.replica.space_id
            tasks.assign(task, context.node.resolve_member(space, member).id if member else b"")
        elif what == "rename":
            tasks.rename(task, text_field(body, "title"))
        else:
            return json_response({"error": "'change' is done, reopen, assign or rename"}, 400)
        return json_response({"task": tasks.get(task).to_json()})

    return [
        Route("/spaces/{space}/tasks", list_tasks, methods=["GET"]),
        Route("/spaces/{space}/tasks", add, methods=["POST"]),
        Route("/spaces/{space}/tasks/{task}", change, methods=["POST"]),
    ]
