"""``GET /api/events``: the node's change events as server-sent events.

Theory of operation. Each stream is one subscription to the node (``Node.subscribe``), taken
before the response headers go out, so a client that has the headers sees every event that
happens after. Events are sent as ``data: <json>`` lines; after ``keepalive_seconds`` without
one, a ``: keepalive`` comment keeps proxies and clients from timing the stream out.

Bounded: the subscription is a queue of ``ApiConfig.event_queue`` events. A client that reads
too slowly to keep up is dropped, not buffered for -- the node closes its queue once it is full,
and the stream ends, properly, after what was already queued. The stream also ends, with a
proper last chunk, when the API stops, and at once when the client disconnects.

The event vocabulary (``type`` values and fields) is the node's; this module encodes whatever
the node emits, records with ``to_json()`` included.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio
from starlette.types import Receive, Scope, Send

from p2pspace.app.api.http import jsonable

if TYPE_CHECKING:
    from p2pspace.app.api.context import RouteContext

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # reverse proxies must pass each event on at once
]
OPENING = b": events\n\n"
KEEPALIVE = b": keepalive\n\n"


def event_chunk(event: object) -> bytes:
    """One event as a server-sent-events message."""
    text = json.dumps(event, default=jsonable, ensure_ascii=False)
    return b"data: " + text.encode("utf-8") + b"\n\n"


class EventStream:
    """The ASGI app of ``GET /api/events`` (a raw app: the response is written as it goes)."""

    def __init__(self, context: RouteContext) -> None:
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.context.node.subscribe(self.context.config.event_queue) as events:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": OPENING, "more_body": True})
            disconnected = False
            with self.context.stopper.cancellable():
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

    async def _pump(self, events: trio.MemoryReceiveChannel[object], send: Send) -> None:
        # Returns when the node closes the subscription (this client fell behind, or the node
        # stops); the caller's scopes end it on disconnect and when the API stops.
        keepalive = self.context.config.keepalive_seconds
        while True:
            with trio.move_on_after(keepalive) as idle:
                try:
                    event = await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            chunk = KEEPALIVE if idle.cancelled_caught else event_chunk(event)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


__all__ = ["EventStream", "event_chunk"]
