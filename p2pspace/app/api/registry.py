"""Which routes the API serves: the node's, every tool's API and page, and the web UI.

Theory of operation. The node loads the installed tools (:mod:`p2pspace.tools.plugin`); a tool
that declares ``routes`` (``"module:callable"``) has a *route provider*: a callable that takes
the :class:`~p2pspace.app.api.context.RouteContext` and returns Starlette routes. The providers
are imported when a server starts (:func:`tool_route_providers`), never at import, so a program
that only imports p2pspace loads no tool's route module. A server can also be given its
providers explicitly (tests, embedders), which skips the tools' own. A provider that cannot be
imported is logged and left out, as a broken tool is: one broken tool does not take the node's
API -- and every other tool's routes -- down with it.

A tool whose provider fails or gives something that is not a route list (or one answering a
path and method twice) is logged and left out the same way.

Each tool gets a URL space of its own, ``/tools/NAME/``: its provider's routes are mounted under
``/tools/NAME/api`` (a route ``/spaces/{space}/topics`` answers
``/tools/NAME/api/spaces/{space}/topics``), and a tool that declares a ``page`` has it served
at ``/tools/NAME/`` (its ``index.html``) and ``/tools/NAME/FILE`` (the other files of its page
folder, by an allow-list of names and kinds: no part of a request path reaches the file
system). So no tool can answer another's URLs or the node's, whatever is installed. Within a
tool, two routes answering one path and method leave that tool's API out (logged) rather than
one silently shadowing the other. Every route ends up behind the token guard and the
error mapping of the app; a provider cannot opt out of either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from p2pspace.app.api.context import RouteContext
from p2pspace.app.api.routes import node_routes
from p2pspace.app.web import COMMON_HEADERS, PAGE_HEADERS, ui_routes
from p2pspace.errors import LocalProtocolError, NotFoundError, P2PSpaceError
from p2pspace.tools.plugin import ToolPlugin, asset_type

NODE = "node"  # the name the node's own routes are reported under
UI = "ui"
TOOLS = "/tools"

log = logging.getLogger("p2pspace.app.api")

RouteProvider = Callable[[RouteContext], Sequence[BaseRoute]]


def tool_route_providers(tools: Mapping[str, ToolPlugin]) -> dict[str, RouteProvider]:
    """The route provider of every tool in ``tools`` that declares one, imported now. One that
    cannot be imported, or is not a callable, is logged and left out."""
    providers: dict[str, RouteProvider] = {}
    for name in sorted(tools):
        plugin = tools[name]
        if not plugin.routes:
            continue
        try:
            provider = plugin.load(plugin.routes)
        except P2PSpaceError as exc:
            log.error("API routes of the tool %r: %s; left out", name, exc)
            continue
        if not callable(provider):
            log.error(
                "API routes of the tool %r (%s): not a callable; left out", name, plugin.routes
            )
            continue
        providers[name] = provider
    return providers


def collect_routes(
    context: RouteContext,
    providers: Mapping[str, RouteProvider],
    pages: Mapping[str, ToolPlugin] | None = None,
) -> list[BaseRoute]:
    """The app's route table: the node's routes, each tool's API (by name) under
    ``/tools/NAME/api``, each tool's page (``pages``: the tools, by name) under
    ``/tools/NAME/``, the UI's.

    A provider that fails, returns something that is not a route, or two routes answering the
    same path and method is logged and left out (its paths answer 404): one broken tool does
    not keep the API -- the node's routes and every other tool's -- from serving.
    """
    table: list[BaseRoute] = list(node_routes(context))
    for name in sorted(providers):
        try:
            routes = _checked_routes(name, providers[name], context)
        except LocalProtocolError as exc:
            log.error("%s; its API is left out", exc)
            continue
        table.append(Mount(f"{TOOLS}/{name}/api", routes=routes))
    for _name, plugin in sorted((pages or {}).items()):
        if plugin.page:
            table += page_routes(plugin)
    table += ui_routes()
    return table


def _checked_routes(name: str, provider: RouteProvider, context: RouteContext) -> list[BaseRoute]:
    """What ``provider`` gives, checked. Raises :class:`LocalProtocolError` if it fails, gives
    something that is not a route, or two routes answering the same path and method."""
    try:
        routes = list(provider(context))
    except Exception as exc:
        raise LocalProtocolError(f"the API routes {name!r} failed: {exc!r}") from exc
    taken: set[tuple[str, str]] = set()
    for route in routes:
        if not isinstance(route, BaseRoute):
            raise LocalProtocolError(
                f"the API routes {name!r} gave {type(route).__name__}, not a route"
            )
        for key in _claims(route):
            if key in taken:
                raise LocalProtocolError(f"the API routes {name!r} answer {key[1]} {key[0]} twice")
            taken.add(key)
    return routes


def page_routes(plugin: ToolPlugin) -> list[BaseRoute]:
    """``GET /tools/NAME/`` (the tool's ``index.html``) and ``GET /tools/NAME/FILE`` (the
    other files of its page folder), with the headers of the node's own page."""
    folder = plugin.page

    def read(name: str) -> bytes:
        try:
            return resources.files(folder).joinpath(name).read_bytes()
        except (OSError, ModuleNotFoundError, TypeError) as exc:
            raise NotFoundError(
                f"the tool {plugin.name!r} has no page file {name}: {exc}"
            ) from None

    async def page(request: Request) -> Response:
        return Response(
            read("index.html"), media_type=asset_type("index.html"), headers=PAGE_HEADERS
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        kind = asset_type(name)
        if kind is None or name == "index.html":
            raise NotFoundError(f"the tool {plugin.name!r} serves no file {name!r}")
        # A page, or an SVG (it can hold script when opened by itself): the page's policy.
        active = kind.startswith("text/html") or kind.startswith("image/svg")
        headers = PAGE_HEADERS if active else COMMON_HEADERS
        return Response(read(name), media_type=kind, headers=headers)

    base = f"{TOOLS}/{plugin.name}"
    return [
        Route(base + "/", page, methods=["GET"]),
        Route(base + "/{name}", asset, methods=["GET"]),
    ]


def _claims(route: BaseRoute) -> Iterable[tuple[str, str]]:
    # Only plain routes name their methods; other kinds (mounts, websockets) are not checked.
    if not isinstance(route, Route):
        return []
    return [(route.path, method) for method in sorted(route.methods or ())]


__all__ = [
    "TOOLS",
    "RouteProvider",
    "collect_routes",
    "page_routes",
    "tool_route_providers",
]
