"""What a route gets to work with: the node, the API's limits, and the stopper.

Theory of operation. Handlers run on the node's trio thread and call :class:`Node` methods
directly (no locks: there is one thread). Every route -- the node's and each tool's -- is built
from one :class:`RouteContext`, so they share the limits of one :class:`ApiConfig` and one
:class:`Stopper`. A request that may last (a join, a long-poll, the event stream) runs inside
``stopper.cancellable()``: when the API stops, the stopper cancels them all at once, and each
answers with what it has instead of being cut off by the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request

from p2pspace.app.api.http import read_json, seconds_param
from p2pspace.errors import LocalProtocolError

if TYPE_CHECKING:
    from p2pspace.node.node import Node


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """The local API's limits and timings (every one must be > 0).

    ``max_body``: bytes of a request body. ``max_wait``: seconds a long-poll (``?wait=``) or a
    join without ``timeout_s`` may take. ``max_join_wait``: the cap on a join's ``timeout_s``.
    ``keepalive_seconds``: idle time on the event stream before a keepalive comment.
    ``event_queue``: events an event stream may fall behind by before it is dropped.
    ``shutdown_grace``: seconds the server has, once stopping, to finish its responses.
    ``backlog``: connections waiting to be accepted.

    Raises :class:`LocalProtocolError` for a value that is not positive.
    """

    max_body: int = 1024 * 1024
    max_wait: float = 60.0
    max_join_wait: float = 600.0
    keepalive_seconds: float = 15.0
    event_queue: int = 1024
    shutdown_grace: float = 2.0
    backlog: int = 64

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise LocalProtocolError(f"ApiConfig.{item.name} must be > 0, not {value!r}")


DEFAULT_CONFIG = ApiConfig()


class Stopper:
    """Cancel scopes of long-lived requests, cancelled together when the API stops."""

    def __init__(self) -> None:
        self.stopping = False
        self._scopes: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[trio.CancelScope]:
        """A scope the stopper cancels (at once, if it has already stopped)."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteContext:
    """The node and the API's shared state, handed to every route provider."""

    node: Node
    config: ApiConfig = DEFAULT_CONFIG
    stopper: Stopper = field(default_factory=Stopper)

    def space(self, request: Request) -> bytes:
        """The space named by the ``{space}`` path parameter (an id, id prefix or name).

        Raises :class:`~p2pspace.errors.NotFoundError` (404) if there is no such space here.
        """
        return self.node.resolve_space(request.path_params["space"])

    async def body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object body, within :attr:`ApiConfig.max_body` (see
        :func:`~p2pspace.app.api.http.read_json`)."""
        return await read_json(request, max_body=self.config.max_body)

    async def wait(self, request: Request, ready: Callable[[], bool]) -> None:
        """A long-poll: return once ``ready()`` holds, the request's ``?wait=`` seconds (capped
        at :attr:`ApiConfig.max_wait`) have passed, or the API stops; at once without
        ``?wait=``. The caller then answers with what there is.
        """
        wait = seconds_param(request.query_params.get("wait"), "wait", cap=self.config.max_wait)
        if not wait or ready():
            return
        with self.stopper.cancellable(), trio.move_on_after(wait):
            await self.node.wait_until(ready)


__all__ = ["DEFAULT_CONFIG", "ApiConfig", "RouteContext", "Stopper"]
