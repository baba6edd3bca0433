"""Serving the API: a loopback-only socket, hypercorn on trio, and ``home/api.json``.

Theory of operation. :func:`serve_api` is a trio service (``await nursery.start(serve_api,
node, host, port, token)``): it binds the socket itself -- so a refused host or a taken port
fails before anything is written, with our own error types -- writes ``home/api.json``
(``{"url", "pid"}``, mode 0600) naming where it serves, starts hypercorn on that socket, and only
then reports the URL (``task_status.started``) and sets ``node.api_url``. Connections made
before hypercorn accepts wait in the listen backlog.

The API is for programs of the same user on the same machine: it binds loopback addresses only
(:func:`loopback_host`), on a port kept in the home's config so the web UI's address is stable,
and every request passes the guard of :mod:`p2pspace.app.api.auth` (its own ``Host``, the token
or the UI cookie, same-origin JSON writes). The token is new on every start.

Shutdown. Hypercorn runs in a shielded scope so that when the caller's nursery is cancelled the
API ends its long-lived responses properly first: the stopper cancels event streams and
long-polls, which answer with what they have, then the server stops -- within
``ApiConfig.shutdown_grace`` seconds, whatever the clients do. ``api.json`` is removed last, and
only if it still names this server (another node may have taken the home over since).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.types import ASGIApp

from p2pspace.app.api.auth import ApiGuard, UiSessions, allowed_hosts
from p2pspace.app.api.context import DEFAULT_CONFIG, ApiConfig, RouteContext
from p2pspace.app.api.http import EXCEPTION_HANDLERS
from p2pspace.app.api.registry import RouteProvider, collect_routes, tool_route_providers
from p2pspace.errors import LocalProtocolError, StorageError, TransportError
from p2pspace.node.home import info_path, new_token, read_config, write_config, write_private
from p2pspace.sync.invitations import join_address

if TYPE_CHECKING:
    from hypercorn.typing import Framework

    from p2pspace.node.node import Node

log = logging.getLogger("p2pspace.app.api")


def loopback_host(host: str) -> str:
    """``host`` if it is a loopback address (``localhost`` means 127.0.0.1; ``[::1]`` is ::1).

    Raises :class:`LocalProtocolError` otherwise: the API must not be reachable from the network.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise LocalProtocolError(
            f"the API serves loopback addresses only (127.0.0.1, ::1), not {host!r}"
        )
    return str(address)


def build_app(
    context: RouteContext,
    token: str,
    providers: Mapping[str, RouteProvider],
    *,
    url: str,
    hosts: frozenset[str],
    sessions: UiSessions | None = None,
) -> ASGIApp:
    """The whole API as one ASGI app: every route, the error mapping, the guard outside
    (:mod:`p2pspace.app.api.auth`: the API at ``url``, answering to ``hosts``).

    A provider whose routes collide or are not routes is logged and left out.
    """
    app = Starlette(
        routes=collect_routes(context, providers, context.node.tools),
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    return ApiGuard(app, token, url=url, hosts=hosts, sessions=sessions or UiSessions())


async def serve_api(
    node: Node,
    host: str,
    port: int | None,
    token: str | None = None,
    *,
    config: ApiConfig = DEFAULT_CONFIG,
    route_providers: Mapping[str, RouteProvider] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the node's HTTP API on ``host:port`` (loopback only; port 0: any) until cancelled.

    ``port`` None: the port kept in the home's config (``api_port``), so the web UI's address
    stays the same across restarts; the first time, or if that port is taken, any free port,
    which is kept from then on. ``token``: the one requests must carry (None: a new one,
    written to ``home/api.token``: every start rotates it). ``route_providers``: the tools'
    API routes by name (None: those of the tools the node loaded; see
    :mod:`p2pspace.app.api.registry`). Once serving, it has written
    ``home/api.json``, set ``node.api_url`` and ``node.api_token`` and given
    ``task_status.started`` the URL; when it stops it clears ``node.api_url`` and removes
    ``api.json``.

    Raises :class:`LocalProtocolError` for a host that is not a loopback address or an empty
    token (a tool whose routes cannot be served is logged and left out, see
    :mod:`p2pspace.app.api.registry`); :class:`TransportError` if the port cannot be bound;
    :class:`StorageError` if the home folder cannot be written. Nothing is left behind when it
    raises.
    """
    bind_host = loopback_host(host)
    if token is not None and not token:
        raise LocalProtocolError("the API token must not be empty")
    providers = tool_route_providers(node.tools) if route_providers is None else route_providers
    context = RouteContext(node=node, config=config)
    listener = (
        _bind_kept(node.home, bind_host, backlog=config.backlog)
        if port is None
        else (_bind(bind_host, port, backlog=config.backlog))
    )
    bound = listener.getsockname()[1]
    url = f"http://{join_address(bind_host, bound)}"
    try:
        if token is None:
            token = new_token(node.home)
        app = build_app(context, token, providers, url=url, hosts=allowed_hosts(bind_host, bound))
    except BaseException:
        listener.close()
        raise
    info = info_path(node.home)
    try:
        write_private(info, json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    except StorageError:
        listener.close()
        raise
    hypercorn_config = Config()
    hypercorn_config.bind = [f"fd://{listener.detach()}"]  # hypercorn adopts (and closes) it
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("p2pspace.app.api.server")
    hypercorn_config.graceful_timeout = config.shutdown_grace / 2
    hypercorn_config.include_server_header = False
    shutdown = trio.Event()
    server_scope = trio.CancelScope(shield=True)

    async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with server_scope:
            await serve(
                cast("Framework", app),
                hypercorn_config,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_server)
            node.api_url = url
            node.api_token = token
            log.info("API at %s", url)
            try:
                task_status.started(url)
                await trio.sleep_forever()
            finally:
                node.api_url = None
                context.stopper.stop()
                shutdown.set()
                # Shielded: the server finishes its responses, but within the grace period.
                server_scope.deadline = trio.current_time() + config.shutdown_grace
    finally:
        _remove_info(info, url)


def _bind(host: str, port: int, *, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot serve the API on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


def _bind_kept(home: Path, host: str, *, backlog: int) -> socket.socket:
    """Bind the port kept in ``home``'s config, or a free one (then kept)."""
    kept = read_config(home).get("api_port")
    if isinstance(kept, int) and 0 < kept < 65536:
        try:
            return _bind(host, kept, backlog=backlog)
        except TransportError as exc:
            log.warning("%s; serving the API on another port (the web UI's address changes)", exc)
    sock = _bind(host, 0, backlog=backlog)
    try:
        write_config(home, api_port=sock.getsockname()[1])
    except StorageError:
        sock.close()
        raise
    return sock


def _remove_info(path: Path, url: str) -> None:
    # Only remove the file this server wrote (another node may since have taken the home over).
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(path.read_text("utf-8")).get("url") == url:
            path.unlink()


__all__ = ["build_app", "loopback_host", "serve_api"]
