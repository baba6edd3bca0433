"""The token guard: no request reaches a route unless it carries the API token.

Theory of operation. The API is for programs of the same user on the same machine; loopback
binding keeps other machines out, the token keeps other users of this machine out (it lives in
``home/api.token``, mode 0600). :class:`TokenGuard` wraps the whole app, outside the router, so
every route -- the node's, each tool's, the web UI and its assets, unknown paths -- is behind it;
a route cannot opt out. The token is accepted as ``Authorization: Bearer TOKEN`` or, where a
client cannot set headers (EventSource, a browser loading the page), as ``?token=TOKEN``; it is
compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from p2pspace.app.api.http import error_response

REFUSED = "missing or wrong API token"
WEBSOCKET_POLICY_VIOLATION = 1008


class TokenGuard:
    """ASGI middleware: 401 (a websocket: close 1008) unless the request carries the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "http":
                await error_response(401, REFUSED)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
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


__all__ = ["REFUSED", "TokenGuard"]
