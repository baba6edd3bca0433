"""The local HTTP API of a node: JSON over loopback HTTP, and server-sent events.

Theory of operation. :func:`serve_api` runs a Starlette app under hypercorn on the node's trio
thread; handlers call :class:`~p2pspace.node.node.Node` methods directly (no locks: everything runs
on one thread). The API is for programs of the same user on the same machine, so it binds loopback
addresses only and every request must carry the token kept in ``home/api.token`` (mode 0600) --
``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` where a client cannot set headers
(EventSource). While the API serves, ``home/api.json`` says where (``{"url", "pid"}``); the command
line reads it to reach a running node, and it is removed when the API stops.

Errors: a :class:`LocalProtocolError` naming an unknown space, post or topic is 404, a change to
someone else's post 403, a change that conflicts with the post's state (already deleted, nothing
to undo) 409, other misuse 400; :class:`InvitationError` 403; :class:`TransportError` 502; any
other :class:`P2PSpaceError` 400; a join or long-poll that runs out of time 504. Every error body
is ``{"error": "..."}``.

Routes: ``/api/status``, ``/api/spaces[/{space}]`` (``{space}`` is an id, id prefix or name),
invitations and joins, records (``/rdb/...``), the discussion tool (``/discussion/...``),
presence, the event stream ``/api/events``, and the web UI (``/`` and ``/ui/...``, from
:mod:`p2pspace.app.web`). Every one of them needs the token.

Shutdown. Hypercorn runs in a shielded scope so that when the node's nursery is cancelled the
API can end its long-lived responses properly first: event streams send their last chunk,
long-polls answer with what they have, then the server stops (at most ``SHUTDOWN_GRACE``
seconds later, whatever the clients do).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from p2pspace.errors import (
    ConflictError,
    InvitationError,
    LocalProtocolError,
    NotFoundError,
    P2PSpaceError,
    PermissionDeniedError,
    StorageError,
    TransportError,
)
from p2pspace.sync.invitations import join_address

if TYPE_CHECKING:
    from hypercorn.typing import Framework

    from p2pspace.core.delta import Delta
    from p2pspace.node.node import Node
    from p2pspace.tools.discussion import Discussion

TOKEN_FILE = "api.token"
INFO_FILE = "api.json"
MAX_BODY = 1024 * 1024
MAX_WAIT = 60.0
MAX_SECONDS = 10.0**9  # any duration given in a request (about 30 years)
MAX_JOIN_WAIT = 600.0
KEEPALIVE_SECONDS = 15.0
SHUTDOWN_GRACE = 2.0
BACKLOG = 64
# ``"tool"`` of a new space -> its engines (None: the node's default, which holds the discussion).
SPACE_TOOLS: dict[str, dict[str, str] | None] = {"discussion": None, "none": {"db": "rdb"}}
DEFAULT_TOOL = "discussion"

log = logging.getLogger("p2pspace.app.api")


class HTTPError(Exception):
    """An error response (status and message) raised inside a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- files in the home folder -------------------------------------------------------------------


def load_or_create_token(home: Path) -> str:
    """The API token kept in ``home/api.token``; created (mode 0600) if missing or empty.

    Raises :class:`StorageError` if the file cannot be read or written.
    """
    path = home / TOKEN_FILE
    try:
        token = path.read_text("ascii").strip()
    except FileNotFoundError:
        token = ""
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    if token:
        return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def read_token(home: Path) -> str | None:
    """The token in ``home/api.token``, or None if there is none (never creates one)."""
    try:
        return (home / TOKEN_FILE).read_text("ascii").strip() or None
    except (OSError, ValueError):
        return None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from None


def _remove_info(path: Path, url: str) -> None:
    # Only remove the file this server wrote (another node may since have taken the home over).
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text("utf-8")).get("url") == url:
            path.unlink()


def loopback_host(host: str) -> str:
    """``host`` if it is a loopback address (``localhost`` means 127.0.0.1).

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


# -- responses ----------------------------------------------------------------------------------


def _jsonable(value: object) -> object:
    # Records may hold byte strings (CBOR allows them); JSON shows them as hex.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_response(data: object, status: int = 200) -> Response:
    body = json.dumps(data, default=_jsonable, ensure_ascii=False, allow_nan=False)
    return Response(body.encode("utf-8"), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def status_of(exc: P2PSpaceError) -> int:
    """The HTTP status an error from the node maps to."""
    for kind, status in (
        (NotFoundError, 404),
        (PermissionDeniedError, 403),
        (ConflictError, 409),
        (LocalProtocolError, 400),
        (InvitationError, 403),
        (TransportError, 502),
    ):
        if isinstance(exc, kind):
            return status
    return 400


def delta_json(delta: Delta) -> dict[str, Any]:
    return {"creator": delta.creator.hex(), "seq": delta.seq, "hash": delta.hash.hex()}


# -- request parsing ----------------------------------------------------------------------------


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body ({} if empty), read up to :data:`MAX_BODY` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPError(413, f"request body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY:
                raise HTTPError(413, f"request body is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise HTTPError(400, "request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _seconds(text: str | None, label: str, *, cap: float) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPError(400, f"{label} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPError(400, f"{label} must be a number of seconds")
    return min(value, cap)


def _text(body: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise HTTPError(400, f"{key!r} must be a non-empty string")
    return value


def _string(body: dict[str, Any], key: str, *, default: str | None = None) -> str:
    """A string field that may be empty (the discussion tool checks and trims the text)."""
    value = body.get(key, default)
    if not isinstance(value, str):
        raise HTTPError(400, f"{key!r} must be a string")
    return value


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_SECONDS
    ):
        raise HTTPError(400, f"{key!r} must be a positive number of seconds")
    return float(value)


# -- the app ------------------------------------------------------------------------------------


class Stopper:
    """Cancel scopes of long-lived requests, cancelled together when the API stops."""

    def __init__(self) -> None:
        self.stopping = False
        self._scopes: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def stop(self) -> None:
        self.stopping = True
        for scope in list(self._scopes):
            scope.cancel()


Handler = Callable[[Request], Awaitable[Response]]


class Api:
    """The routes, bound to one node."""

    def __init__(self, node: Node, token: str) -> None:
        self.node = node
        self.token = token
        self.stopper = Stopper()

    def app(self) -> ASGIApp:
        from p2pspace.app.web import ui_routes

        guard = self._guard
        space = "/api/spaces/{space}"
        talk = space + "/discussion"
        routes: list[BaseRoute] = [
            Route("/api/status", guard(self.get_status), methods=["GET"]),
            Route("/api/spaces", guard(self.list_spaces), methods=["GET"]),
            Route("/api/spaces", guard(self.create_space), methods=["POST"]),
            Route("/api/spaces/{space}", guard(self.get_space), methods=["GET"]),
            Route(
                "/api/spaces/{space}/invitations", guard(self.create_invitation), methods=["POST"]
            ),
            Route("/api/join", guard(self.join), methods=["POST"]),
            Route("/api/spaces/{space}/rdb/{table}", guard(self.get_table), methods=["GET"]),
            Route(
                "/api/spaces/{space}/rdb/{table}/{record:path}",
                guard(self.get_record),
                methods=["GET"],
            ),
            Route(
                "/api/spaces/{space}/rdb/{table}/{record:path}",
                guard(self.put_record),
                methods=["PUT"],
            ),
            Route(
                "/api/spaces/{space}/rdb/{table}/{record:path}",
                guard(self.delete_record),
                methods=["DELETE"],
            ),
            Route(space + "/presence", guard(self.get_presence), methods=["GET"]),
            Route(talk + "/topics", guard(self.list_topics), methods=["GET"]),
            Route(talk + "/topics", guard(self.create_topic), methods=["POST"]),
            Route(talk + "/threads/{topic}", guard(self.get_thread), methods=["GET"]),
            Route(talk + "/posts/{post}", guard(self.get_post), methods=["GET"]),
            Route(talk + "/posts/{post}", guard(self.edit_post), methods=["PUT"]),
            Route(talk + "/posts/{post}", guard(self.delete_post), methods=["DELETE"]),
            Route(talk + "/posts/{post}/replies", guard(self.create_reply), methods=["POST"]),
            Route(talk + "/undo", guard(self.undo), methods=["POST"]),
            Route(talk + "/last-change", guard(self.get_last_change), methods=["GET"]),
            Route("/api/events", EventStream(self), methods=["GET"]),
            *ui_routes(),
        ]
        app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: _http_exception},
        )
        return TokenGuard(app, self.token)

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        """Map the errors a handler raises to JSON error responses."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPError as exc:
                return error_response(exc.status, str(exc))
            except P2PSpaceError as exc:
                return error_response(status_of(exc), str(exc))
            except trio.TooSlowError:
                return error_response(504, "timed out")

        return guarded

    def _space(self, request: Request) -> bytes:
        return self.node.resolve_space(request.path_params["space"])

    def _discussion(self, request: Request) -> Discussion:
        tool = self.node.discussion(self._space(request))
        if tool is None:  # pragma: no cover - required=True raises instead
            raise LocalProtocolError("this space has no discussion tool")
        return tool

    # -- handlers --------------------------------------------------------------------------------

    async def get_status(self, request: Request) -> Response:
        return json_response(self.node.status())

    async def list_spaces(self, request: Request) -> Response:
        return json_response(self.node.spaces())

    async def create_space(self, request: Request) -> Response:
        body = await read_json(request)
        name = _text(body, "name")
        tool = _text(body, "tool", default=DEFAULT_TOOL)
        if tool not in SPACE_TOOLS:
            raise HTTPError(400, f"'tool' must be one of {', '.join(SPACE_TOOLS)}")
        replica = self.node.create_space(name, engines=SPACE_TOOLS[tool])
        return json_response(self.node.space_info(replica.space_id), 201)

    async def get_space(self, request: Request) -> Response:
        return json_response(self.node.space_info(self._space(request)))

    async def create_invitation(self, request: Request) -> Response:
        body = await read_json(request)
        space = self._space(request)
        role = _text(body, "role", default="participant")
        ttl = _number(body, "ttl_s")
        if ttl is None:
            code = self.node.invite(space, role=role)
        else:
            code = self.node.invite(space, role=role, ttl_ms=max(1, round(ttl * 1000)))
        return json_response({"code": code, "space": space.hex()}, 201)

    async def join(self, request: Request) -> Response:
        body = await read_json(request)
        code = _text(body, "code")
        timeout = _number(body, "timeout_s")
        timeout = MAX_WAIT if timeout is None else min(timeout, MAX_JOIN_WAIT)
        with self.stopper.cancellable() as scope:
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
        return json_response({"space": space.hex()})

    async def _wait(self, request: Request, ready: Callable[[], bool]) -> None:
        wait = _seconds(request.query_params.get("wait"), "wait", cap=MAX_WAIT)
        if not wait or ready():
            return
        with self.stopper.cancellable(), trio.move_on_after(wait):
            await self.node.wait_until(ready)

    async def get_table(self, request: Request) -> Response:
        space, table = self._space(request), request.path_params["table"]
        await self._wait(request, lambda: bool(self.node.rdb_get(space, table)))
        records = self.node.rdb_get(space, table)
        return json_response({"space": space.hex(), "table": table, "records": records})

    async def get_record(self, request: Request) -> Response:
        space = self._space(request)
        table, record = request.path_params["table"], request.path_params["record"]
        await self._wait(request, lambda: bool(self.node.rdb_get(space, table, record)))
        found = self.node.rdb_get(space, table, record)
        if record not in found:
            raise HTTPError(404, f"no record {table}/{record} in space {space.hex()}")
        body = {"space": space.hex(), "table": table, "record": record, "fields": found[record]}
        return json_response(body)

    async def put_record(self, request: Request) -> Response:
        body = await read_json(request)
        space = self._space(request)
        fields = body.get("fields")
        if not isinstance(fields, dict):
            raise HTTPError(400, "'fields' must be a JSON object of field values")
        table, record = request.path_params["table"], request.path_params["record"]
        delta = self.node.rdb_set(space, table, record, fields)
        return json_response({"delta": delta_json(delta)})

    async def delete_record(self, request: Request) -> Response:
        space = self._space(request)
        table, record = request.path_params["table"], request.path_params["record"]
        delta = self.node.rdb_delete(space, table, record)
        return json_response({"delta": delta_json(delta)})

    async def get_presence(self, request: Request) -> Response:
        return json_response({"members": self.node.presence(self._space(request))})

    # The discussion tool: reads answer the tool's JSON forms; writes answer the post's id.

    async def list_topics(self, request: Request) -> Response:
        topics = self._discussion(request).topics()
        return json_response({"topics": [t.to_json() for t in topics]})

    async def create_topic(self, request: Request) -> Response:
        body = await read_json(request)
        title, text = _string(body, "title"), _string(body, "body", default="")
        return json_response({"id": self._discussion(request).post(title, text)}, 201)

    async def get_thread(self, request: Request) -> Response:
        thread = self._discussion(request).thread(request.path_params["topic"])
        return json_response({"thread": thread.to_json()})

    async def get_post(self, request: Request) -> Response:
        post = self._discussion(request).get(request.path_params["post"])
        return json_response({"post": post.to_json()})

    async def create_reply(self, request: Request) -> Response:
        body = await read_json(request)
        text = _string(body, "body")
        reply = self._discussion(request).reply(request.path_params["post"], text)
        return json_response({"id": reply}, 201)

    async def edit_post(self, request: Request) -> Response:
        body = await read_json(request)
        text = _string(body, "body")
        title = None if body.get("title") is None else _string(body, "title")
        post = request.path_params["post"]
        self._discussion(request).edit(post, text, title)
        return json_response({"id": post})

    async def delete_post(self, request: Request) -> Response:
        post = request.path_params["post"]
        self._discussion(request).delete(post)
        return json_response({"id": post})

    async def undo(self, request: Request) -> Response:
        return json_response({"id": self._discussion(request).undo_last()})

    async def get_last_change(self, request: Request) -> Response:
        return json_response({"change": self._discussion(request).last_change()})


async def _http_exception(request: Request, exc: Exception) -> Response:
    # Unknown routes and methods answer in the same JSON shape as every other error.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error_response(status, str(detail))


class TokenGuard:
    """ASGI middleware: 401 unless the request carries the API token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "http":
                await error_response(401, "missing or wrong API token")(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                kind, _, credential = bytes(value).partition(b" ")
                if kind.lower() == b"bearer":
                    given = credential.strip()
        if not given:
            request = Request(scope)
            given = request.query_params.get("token", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, self.token)


class EventStream:
    """``GET /api/events``: every node event as ``data: <json>``, keepalive comments between.

    The stream ends when the client disconnects, when the subscriber falls too far behind (the
    node closes its channel) or when the API stops.
    """

    def __init__(self, api: Api) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        # Subscribe before the headers go out: a client that has the headers sees every event
        # that happens after.
        with self.api.node.subscribe() as events:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b": events\n\n", "more_body": True})
            disconnected = False
            with self.api.stopper.cancellable():
                async with trio.open_nursery() as nursery:

                    async def watch_disconnect() -> None:
                        nonlocal disconnected
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        disconnected = True
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_disconnect)
                    await self._pump(events, send)
                    nursery.cancel_scope.cancel()
        if not disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _pump(events: trio.MemoryReceiveChannel[dict[str, Any]], send: Send) -> None:
        while True:
            with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                try:
                    event = await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            if idle.cancelled_caught:
                chunk = b": keepalive\n\n"
            else:
                text = json.dumps(event, default=_jsonable, ensure_ascii=False)
                chunk = b"data: " + text.encode("utf-8") + b"\n\n"
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


# -- serving ------------------------------------------------------------------------------------


async def serve_api(
    node: Node,
    host: str,
    port: int,
    token: str | None = None,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the node's HTTP API on ``host:port`` (loopback only) until cancelled.

    Sets ``node.api_url`` and ``node.api_token`` and writes ``home/api.json`` once listening;
    ``task_status.started`` gets the URL. Raises :class:`LocalProtocolError` for a host that is
    not a loopback address (misuse) and :class:`TransportError` if the port cannot be bound.
    """
    bind_host = loopback_host(host)
    if token is None:
        token = load_or_create_token(node.home)
    elif not token:
        raise LocalProtocolError("the API token must not be empty")
    api = Api(node, token)
    # Bound (and listening) here rather than by hypercorn: a failed bind then leaks no socket and
    # is a TransportError, and api.json can name the URL before the server task starts --
    # connections made meanwhile wait in the backlog.
    listener = _bind(bind_host, port)
    url = f"http://{join_address(bind_host, listener.getsockname()[1])}"
    info_path = node.home / INFO_FILE
    try:
        _write_private(info_path, json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    except StorageError:
        listener.close()
        raise
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn adopts (and closes) the socket
    config.accesslog = None
    config.errorlog = logging.getLogger("p2pspace.app.api.server")
    config.graceful_timeout = SHUTDOWN_GRACE / 2
    config.include_server_header = False
    shutdown = trio.Event()
    server_scope = trio.CancelScope(shield=True)

    async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with server_scope:
            await serve(
                cast("Framework", api.app()),
                config,
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
                api.stopper.stop()
                shutdown.set()
                # Shielded: the server finishes its responses, but within SHUTDOWN_GRACE.
                server_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
    finally:
        _remove_info(info_path, url)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot serve the API on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


__all__ = [
    "DEFAULT_TOOL",
    "INFO_FILE",
    "MAX_BODY",
    "SPACE_TOOLS",
    "TOKEN_FILE",
    "Api",
    "load_or_create_token",
    "loopback_host",
    "read_token",
    "serve_api",
]
