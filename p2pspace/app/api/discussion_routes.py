"""The discussion tool's routes, under ``/tools/discussion/api/spaces/{space}/``.

Theory of operation. A route provider (see :mod:`p2pspace.app.api.registry`), named by the
discussion tool's plugin (:data:`p2pspace.tools.discussion.PLUGIN`); the api package itself does
not name it. Reads answer the tool's JSON forms (``to_json()`` of its views); writes answer
the id of the post they made or changed. Text is checked and trimmed by the tool
(:class:`~p2pspace.tools.discussion.Discussion`), which raises the errors the app maps to
statuses: an unknown topic or post is 404, a change to someone else's post 403, a change that
conflicts with the post's state (already deleted, nothing to undo) 409, and a space without the
tool 400. Reads pass the node clock's time, against which the tool clamps the times it shows
(``time_clamped`` and ``last_activity_clamped`` in the JSON say when it did).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from p2pspace.app.api.http import HTTPError, json_response, string_field
from p2pspace.errors import LocalProtocolError
from p2pspace.tools.discussion import MAX_BODY, MAX_TITLE
from p2pspace.tools.discussion_search import MAX_RESULTS, query_words

if TYPE_CHECKING:
    from p2pspace.app.api.context import RouteContext
    from p2pspace.tools.discussion import Discussion

PREFIX = "/spaces/{space}"  # mounted under /tools/discussion/api
# What a topic's title and a post's body may hold, in bytes of UTF-8 (the page counts the same).
LIMITS = {"title": MAX_TITLE, "body": MAX_BODY}
MAX_QUERY = 500
MAX_MARKED = 10_000  # post ids one "read" request may name
DIGITS = re.compile(r"[0-9]{1,4}")
POST = PREFIX + "/posts/{post}"


class DiscussionRoutes:
    """The discussion tool's routes, bound to one :class:`RouteContext`."""

    def __init__(self, context: RouteContext) -> None:
        self.context = context

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX + "/topics", self.list_topics, methods=["GET"]),
            Route(PREFIX + "/topics", self.create_topic, methods=["POST"]),
            Route(PREFIX + "/threads/{topic}", self.get_thread, methods=["GET"]),
            Route(PREFIX + "/threads/{topic}/read", self.mark_read, methods=["POST"]),
            Route(PREFIX + "/search", self.search, methods=["GET"]),
            Route(POST, self.get_post, methods=["GET"]),
            Route(POST, self.edit_post, methods=["PUT"]),
            Route(POST, self.delete_post, methods=["DELETE"]),
            Route(POST + "/replies", self.create_reply, methods=["POST"]),
            Route(PREFIX + "/undo", self.undo, methods=["POST"]),
            Route(PREFIX + "/last-change", self.get_last_change, methods=["GET"]),
        ]

    def _tool(self, request: Request) -> Discussion:
        tool = self.context.node.discussion(self.context.space(request))
        if tool is None:  # pragma: no cover - required=True raises instead
            raise LocalProtocolError("this space has no discussion tool")
        return tool

    def _now(self) -> int:
        return self.context.node.clock.now_ms()

    async def list_topics(self, request: Request) -> Response:
        topics = self._tool(request).topics(now=self._now())
        return json_response({"topics": [t.to_json() for t in topics], "limits": LIMITS})

    async def create_topic(self, request: Request) -> Response:
        body = await self.context.body(request)
        title, text = string_field(body, "title"), string_field(body, "body", default="")
        return json_response({"id": self._tool(request).post(title, text)}, 201)

    async def get_thread(self, request: Request) -> Response:
        thread = self._tool(request).thread(request.path_params["topic"], now=self._now())
        return json_response({"thread": thread.to_json()})

    async def mark_read(self, request: Request) -> Response:
        body = await self.context.body(request)
        posts = body.get("posts")
        if posts is not None and not (
            isinstance(posts, list)
            and len(posts) <= MAX_MARKED
            and all(isinstance(p, str) for p in posts)
        ):
            raise HTTPError(400, f"'posts' is a list of at most {MAX_MARKED} post ids")
        marked = self._tool(request).mark_read(request.path_params["topic"], posts)
        return json_response({"marked": marked})

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        if len(query) > MAX_QUERY:
            raise HTTPError(400, f"a search is at most {MAX_QUERY} characters")
        limit = request.query_params.get("limit", "50")
        if not DIGITS.fullmatch(limit) or not 0 < int(limit) <= MAX_RESULTS:
            raise HTTPError(400, f"limit is a whole number in 1..{MAX_RESULTS}")
        results = self._tool(request).search(query, limit=int(limit), now=self._now())
        return json_response(
            {"results": [r.to_json() for r in results], "words": query_words(query)}
        )

    async def get_post(self, request: Request) -> Response:
        post = self._tool(request).get(request.path_params["post"], now=self._now())
        return json_response({"post": post.to_json()})

    async def create_reply(self, request: Request) -> Response:
        body = await self.context.body(request)
        text = string_field(body, "body")
        tool = self._tool(request)
        reply = tool.reply(request.path_params["post"], text)
        parent = tool.get(request.path_params["post"], now=self._now())
        return json_response({"id": reply, "parent_author_name": parent.author_name}, 201)

    async def edit_post(self, request: Request) -> Response:
        body = await self.context.body(request)
        text = string_field(body, "body")
        title = None if body.get("title") is None else string_field(body, "title")
        post = request.path_params["post"]
        tool = self._tool(request)
        tool.edit(post, text, title)
        return json_response({"id": post, "label": tool.label(post)})

    async def delete_post(self, request: Request) -> Response:
        post = request.path_params["post"]
        tool = self._tool(request)
        label = tool.label(post)
        tool.delete(post)
        return json_response({"id": post, "label": label})

    async def undo(self, request: Request) -> Response:
        tool = self._tool(request)
        change = tool.last_change()
        post = tool.undo_last()
        kind = change["kind"] if change is not None else ""
        return json_response({"id": post, "kind": kind, "label": tool.label(post)})

    async def get_last_change(self, request: Request) -> Response:
        return json_response({"change": self._tool(request).last_change()})


def routes(context: RouteContext) -> list[BaseRoute]:
    """The route provider named by the ``discussion`` entry point."""
    return DiscussionRoutes(context).routes()


__all__ = ["DiscussionRoutes", "routes"]
