"""A node with its local HTTP API on loopback, and clients for it (shared by the API tests)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import trio

from p2pspace.app.api import ApiConfig, RouteProvider, serve_api
from p2pspace.app.api.context import DEFAULT_CONFIG
from p2pspace.node.config import NodeConfig
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from tests.helpers import TIMEOUT

LOOPBACK = ("127.0.0.1", 0)
# The API is started next to the node, as a program does, not by open_node.
NODE_CONFIG = NodeConfig(listen=LOOPBACK, discovery=False)


@asynccontextmanager
async def api_node(
    home: Path,
    *,
    host: str = LOOPBACK[0],
    port: int | None = LOOPBACK[1],
    token: str | None = None,
    config: ApiConfig = DEFAULT_CONFIG,
    route_providers: Mapping[str, RouteProvider] | None = None,
    **options: Any,
) -> AsyncIterator[Node]:
    """A node on ``home`` serving its API (``serve_api`` started in a nursery of its own;
    ``port`` None: the one kept in the home).

    Leaving the block stops the API first, then the node. ``options`` change fields of
    :data:`NODE_CONFIG`.
    """
    serve = functools.partial(serve_api, config=config, route_providers=route_providers)
    async with (
        open_node(home, dataclasses.replace(NODE_CONFIG, **options)) as node,
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(serve, node, host, port, token)
        assert url == node.api_url
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client_of(node: Node, *, token: str | None = "") -> AsyncIterator[httpx.AsyncClient]:
    """A client for the node's API; ``token=""`` means the node's own, None means none."""
    assert node.api_url is not None
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or node.api_token}"
    async with httpx.AsyncClient(base_url=node.api_url, headers=headers, timeout=TIMEOUT) as c:
        yield c


class EventClient:
    """A minimal HTTP/1.1 client (h11 over a trio stream) reading ``/api/events`` line by line.

    h11 checks the framing, so a stream that breaks off instead of ending is an error here.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.buffer = b""
        self.ended = False

    @classmethod
    async def open(cls, node: Node, *, query: str = "") -> tuple[EventClient, h11.Response]:
        assert node.api_url is not None and node.api_token is not None
        host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
        client = cls(await trio.open_tcp_stream(host, int(port)))
        headers = [("Host", f"{host}:{port}"), ("Authorization", f"Bearer {node.api_token}")]
        request = h11.Request(method="GET", target="/api/events" + query, headers=headers)
        await client.stream.send_all(
            client.conn.send(request) + client.conn.send(h11.EndOfMessage())
        )
        response = await client._next()
        assert isinstance(response, h11.Response)
        return client, response

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def line(self) -> str | None:
        """The next line of the body; None once the response has ended properly."""
        while b"\n" not in self.buffer:
            if self.ended:
                return None
            event = await self._next()
            if isinstance(event, h11.Data):
                self.buffer += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.ended = True
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def data(self) -> dict[str, Any]:
        while (line := await self.line()) is not None:
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[len("data: ") :])
                return event
        raise AssertionError("the event stream ended")

    async def aclose(self) -> None:
        await self.stream.aclose()
