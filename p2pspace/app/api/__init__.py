"""The local HTTP API of a node: JSON over loopback HTTP, and server-sent events.

What it decides: who may talk to a node from this machine (loopback only, the token in
``home/api.token``), how a node's operations and errors look as HTTP (paths, JSON shapes,
statuses) and which routes are served -- the node's own, and each loaded tool's API and page
under ``/tools/NAME/`` (see :mod:`p2pspace.app.api.registry`).

What it may import: anything below the app layer (core, sync, engines, tools, node, errors), the
app's stdlib-only :mod:`p2pspace.app.space_tools` and :mod:`p2pspace.app.web`; trio,
hypercorn and starlette. Nothing below imports it: a program starts the API next to its node,
``await nursery.start(serve_api, node, host, port, token)``.

Modules: :mod:`~p2pspace.app.api.http` (responses, the error -> status table, request bodies),
:mod:`~p2pspace.app.api.auth` (the token guard), :mod:`~p2pspace.app.api.context` (what every
route gets: node, limits, stopper), :mod:`~p2pspace.app.api.routes` (the node's routes),
:mod:`~p2pspace.app.api.events` (the event stream), :mod:`~p2pspace.app.api.registry` (the route
table and the tools' entry points), :mod:`~p2pspace.app.api.discussion_routes` (the discussion
tool's routes, declared as an entry point), :mod:`~p2pspace.app.api.server` (socket, hypercorn,
``home/api.json``). The routes, shapes and statuses are documented in ``docs/local-api.md``.
"""

from __future__ import annotations

from p2pspace.app.api.context import ApiConfig, RouteContext
from p2pspace.app.api.registry import TOOLS, RouteProvider
from p2pspace.app.api.server import loopback_host, serve_api

__all__ = [
    "TOOLS",
    "ApiConfig",
    "RouteContext",
    "RouteProvider",
    "loopback_host",
    "serve_api",
]
