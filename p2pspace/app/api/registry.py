"""Which routes the API serves: the node's, every installed tool's, and the web UI.

Theory of operation. A tool adds routes by declaring an entry point in the
:data:`ROUTES_GROUP` group of its distribution's metadata, naming a *route provider*: a callable
that takes the :class:`~p2pspace.app.api.context.RouteContext` and returns Starlette routes. In
``pyproject.toml``::

    [project.entry-points."p2pspace.api_routes"]
    discussion = "p2pspace.app.api.discussion_routes:routes"

Entry points are read when a server starts (:func:`installed_route_providers`), never at import,
so a program that only imports p2pspace does not load any tool's route module. A server can also
be given its providers explicitly (tests, embedders), which skips the entry points. An entry
point that cannot be loaded is logged and left out (as a broken engine plugin is), so one broken
tool does not take the node's API down with it.

The table is built in a fixed order -- the node's routes, then each provider's in the order of
their names, then the UI's -- and a route that would answer a path and method already taken is
refused (the server does not start) rather than silently shadowed: which tool answers a URL must
not depend on what else is installed. Every route ends up behind the token guard and the
error mapping of the app; a provider cannot opt out of either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points

from starlette.routing import BaseRoute, Route

from p2pspace.app.api.context import RouteContext
from p2pspace.app.api.routes import node_routes
from p2pspace.app.web import ui_routes
from p2pspace.errors import LocalProtocolError

ROUTES_GROUP = "p2pspace.api_routes"
NODE = "node"  # the name the node's own routes are reported under
UI = "ui"

log = logging.getLogger("p2pspace.app.api")

RouteProvider = Callable[[RouteContext], Sequence[BaseRoute]]


def installed_route_providers() -> dict[str, RouteProvider]:
    """Every route provider declared in the :data:`ROUTES_GROUP` entry-point group, loaded
    (see :func:`load_route_providers`)."""
    return load_route_providers(entry_points(group=ROUTES_GROUP))


def load_route_providers(points: Iterable[EntryPoint]) -> dict[str, RouteProvider]:
    """The providers ``points`` name, by entry-point name.

    An entry point that fails to import, names something that is not callable, or repeats a
    name already loaded is logged and left out, as a broken engine plugin is: one broken tool
    must not keep the node's API -- and every other tool's routes -- from serving. Its paths
    then answer 404.
    """
    providers: dict[str, RouteProvider] = {}
    for point in sorted(points, key=lambda p: (p.name, p.value)):
        if point.name in providers:
            log.error("API routes %r (%s): the name is taken; left out", point.name, point.value)
            continue
        try:
            provider = point.load()
        except Exception:
            log.exception("API routes %r (%s) failed to load; left out", point.name, point.value)
            continue
        if not callable(provider):
            log.error("API routes %r (%s) are not a callable; left out", point.name, point.value)
            continue
        providers[point.name] = provider
    return providers


def collect_routes(
    context: RouteContext, providers: Mapping[str, RouteProvider]
) -> list[BaseRoute]:
    """The app's route table: the node's routes, each provider's (by name), the UI's.

    Raises :class:`LocalProtocolError` if a provider fails, returns something that is not a
    route, or a route whose path and method another route already answers.
    """
    table: list[BaseRoute] = []
    taken: dict[tuple[str, str], str] = {}
    sources: list[tuple[str, Iterable[object]]] = [(NODE, node_routes(context))]
    for name in sorted(providers):
        if name in (NODE, UI):
            raise LocalProtocolError(f"{name!r} is reserved; a route provider needs another name")
        try:
            sources.append((name, providers[name](context)))
        except Exception as exc:
            raise LocalProtocolError(f"the API routes {name!r} failed: {exc!r}") from exc
    sources.append((UI, ui_routes()))
    for name, routes in sources:
        for route in routes:
            if not isinstance(route, BaseRoute):
                raise LocalProtocolError(
                    f"the API routes {name!r} gave {type(route).__name__}, not a route"
                )
            for key in _claims(route):
                if key in taken:
                    raise LocalProtocolError(
                        f"the API routes {name!r} and {taken[key]!r} both answer {key[1]} {key[0]}"
                    )
                taken[key] = name
            table.append(route)
    return table


def _claims(route: BaseRoute) -> list[tuple[str, str]]:
    # Only plain routes name their methods; other kinds (mounts, websockets) are not checked.
    if not isinstance(route, Route):
        return []
    return [(route.path, method) for method in sorted(route.methods or ())]


__all__ = [
    "ROUTES_GROUP",
    "RouteProvider",
    "collect_routes",
    "installed_route_providers",
    "load_route_providers",
]
