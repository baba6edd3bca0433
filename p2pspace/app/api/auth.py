"""The API's guard: who may reach a route, from where, and how a browser gets in.

Theory of operation. The API is for programs of the same user on the same machine. Loopback
binding keeps other machines out; the token (``home/api.token``, mode 0600, new on every node
start) keeps other users of this machine out. What is left is the owner's own browser, where any
web page may send requests to ``127.0.0.1`` -- directly (CSRF) or under a name of its own that
resolves to it (DNS rebinding). :class:`ApiGuard` wraps the whole app, outside the router, so
every route -- the node's, each tool's, the web UI and its assets, unknown paths -- is behind it;
a route cannot opt out. In order, for every request:

1. **Host**: the ``Host`` header must name this API -- a loopback name or address with the API's
   port (:func:`allowed_hosts`). Anything else is 403 whatever the credentials: a rebound name is
   not us.
2. **Credentials**, one of: ``Authorization: Bearer TOKEN`` (programs, the command line);
   ``?token=TOKEN`` on ``GET /api/events`` only (an EventSource cannot set headers) -- a token in
   any other query string is refused (401): URLs end up in histories and logs; or, for a
   browser, the UI cookie *and* the page's session secret. A browser gets both by opening a
   *one-time link*: ``/?nonce=N``, where ``N`` was made for the command line by ``POST
   /api/ui-link`` (token required), is valid for :data:`NONCE_SECONDS` and works once. It answers
   with the cookie (``HttpOnly; SameSite=Strict``, named after the port: nodes on one machine do
   not overwrite each other's) and a redirect to ``/#session=S``: the page keeps ``S`` in its
   origin's storage and sends it as ``X-P2PSpace-Session`` (``?session=`` on the event stream).
   Cookies for ``127.0.0.1`` go to every port of it, so the cookie alone opens only the page and
   its assets, and the tools' pages (``/tools/NAME/`` and ``/tools/NAME/FILE``, not their
   ``/tools/NAME/api/``), which hold no data; every API route needs ``S`` too, which no other
   origin -- not even a listener on another local port -- can read. So no lasting secret is
   ever on a command line, and nothing another local listener can catch opens the API.
3. **Writes** (any method but GET and HEAD): an ``Origin`` header, if sent, must be this API's
   own origin (else 403: another page's form or script), and a body must be
   ``Content-Type: application/json`` (else 415: forms can send ``text/plain``, which must not be
   parsed as JSON).

Every response carries ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff`` and
frame denial (``X-Frame-Options: DENY``, ``frame-ancestors 'none'``); no CORS header is ever set,
so no other origin can read an answer. ``GET /api/proof?challenge=HEX`` needs no credentials:
it answers an HMAC of the challenge and the API's own URL under the token, so the command line
can check that the listener named in ``home/api.json`` is its own node before it sends the
token (a listener that took over a dead node's port cannot compute it, nor relay it from
another port). Tokens and secrets are compared in constant time.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pspace.app.api.http import error_response, json_response
from p2pspace.node.home import token_proof

REFUSED = "missing or wrong API token"
WEBSOCKET_POLICY_VIOLATION = 1008
COOKIE = "p2pspace_ui"  # + "_<port>"
SESSION_HEADER = "x-p2pspace-session"
NONCE_SECONDS = 60.0
MAX_NONCES = 64  # one-time links outstanding at once
MAX_CHALLENGE = 64  # bytes of a proof challenge
EVENTS_PATH = "/api/events"
LINK_PATH = "/api/ui-link"
PROOF_PATH = "/api/proof"
SAFE_METHODS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
FRAME_POLICY = b"frame-ancestors 'none'"
# A tool's page or one of its files (p2pspace.app.api.registry.page_routes), never its API.
TOOL_PAGE = re.compile(r"/tools/[a-z][a-z0-9-]{0,31}/(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")

SIGN_IN_PAGE = (
    "<!doctype html><meta charset=utf-8><title>p2pspace</title>"
    "<p>Open the web UI with <code>p2pspace open</code>: it gives this browser a one-time link."
)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values that name an API bound to ``host:port`` (a loopback address)."""
    names = {"localhost", "127.0.0.1", "[::1]"}
    names.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"{name}:{port}" for name in names)


class UiSessions:
    """One-time links and the browser cookie of one API run."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cookie = secrets.token_urlsafe(32)
        self.session = secrets.token_urlsafe(32)
        self._clock = clock
        self._nonces: dict[str, float] = {}  # nonce -> when it expires

    def issue(self) -> str:
        """A new nonce for a one-time link (the oldest outstanding one gives way)."""
        self._expire()
        while len(self._nonces) >= MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        nonce = secrets.token_urlsafe(24)
        self._nonces[nonce] = self._clock() + NONCE_SECONDS
        return nonce

    def redeem(self, nonce: str) -> bool:
        """True once for a nonce that was issued and has not expired."""
        self._expire()
        for known in list(self._nonces):
            if hmac.compare_digest(known.encode(), nonce.encode("utf-8", "replace")):
                del self._nonces[known]
                return True
        return False

    def _expire(self) -> None:
        now = self._clock()
        for nonce, expires in list(self._nonces.items()):
            if expires <= now:
                del self._nonces[nonce]


class ApiGuard:
    """ASGI middleware enforcing the rules of the module docstring around ``app``."""

    def __init__(
        self, app: ASGIApp, token: str, *, url: str, hosts: frozenset[str], sessions: UiSessions
    ) -> None:
        self.app = app
        self.token = token
        self.url = url
        self.origin = url.rstrip("/")
        self.origins = frozenset(f"http://{host}" for host in hosts)
        self.hosts = hosts
        self.sessions = sessions
        self.cookie_name = f"{COOKIE}_{url.rsplit(':', 1)[-1]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = _headers(scope)
        if headers.get("host", "").lower() not in self.hosts:
            await self._refuse(
                scope, receive, send, 403, "this API answers only to its own address"
            )
            return
        path, method = scope["path"], scope.get("method", "GET")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if path == PROOF_PATH and method in SAFE_METHODS:
            await self._prove(query.get("challenge", ""))(scope, receive, send)
            return
        if path == "/" and method in SAFE_METHODS and "nonce" in query:
            await self._open_link(query)(scope, receive, send)
            return
        if not self._authenticated(headers, path, method, query):
            if path == "/" and scope["type"] == "http":
                await HTMLResponse(SIGN_IN_PAGE, status_code=401)(scope, receive, send)
            else:
                await self._refuse(scope, receive, send, 401, REFUSED)
            return
        if method not in SAFE_METHODS and scope["type"] == "http":
            problem = self._write_problem(headers)
            if problem is not None:
                await error_response(*problem)(scope, receive, send)
                return
        if path == LINK_PATH and method == "POST":
            await self._link()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    # -- the decisions ----------------------------------------------------------------------

    def _authenticated(
        self, headers: dict[str, str], path: str, method: str, query: dict[str, str]
    ) -> bool:
        kind, _, credential = headers.get("authorization", "").partition(" ")
        if kind.lower() == "bearer" and credential.strip():
            return _same(credential.strip(), self.token)
        if "token" in query and path == EVENTS_PATH and method in SAFE_METHODS:
            return _same(query["token"], self.token)
        cookie = _cookie(headers.get("cookie", ""), self.cookie_name)
        if cookie is None or not _same(cookie, self.sessions.cookie):
            return False
        if path == "/" or path.startswith("/ui/"):
            return True  # the page and its assets: no data, no secret
        if method in SAFE_METHODS and TOOL_PAGE.fullmatch(path):
            return True  # a tool's page and its files (not its API): no data either
        session = headers.get(SESSION_HEADER)
        if session is None and path == EVENTS_PATH and method in SAFE_METHODS:
            session = query.get("session")
        return session is not None and _same(session, self.sessions.session)

    def _write_problem(self, headers: dict[str, str]) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.origins:
            return 403, "writes are accepted from this API's own page only"
        has_body = headers.get("content-length", "0") not in ("", "0") or (
            "transfer-encoding" in headers
        )
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if has_body and media != "application/json":
            return 415, "a request body must be Content-Type: application/json"
        return None

    # -- the guard's own answers ------------------------------------------------------------

    def _prove(self, challenge: str) -> Response:
        try:
            raw = bytes.fromhex(challenge)
        except ValueError:
            raw = b""
        if not 16 <= len(raw) <= MAX_CHALLENGE:
            return error_response(400, "challenge: 16 to 64 bytes in hex")
        return json_response({"proof": token_proof(self.token, self.url, raw)})

    def _open_link(self, query: dict[str, str]) -> Response:
        if not self.sessions.redeem(query.pop("nonce")):
            return error_response(
                401, "this link was already used or has expired: run p2pspace open again"
            )
        # The session secret travels in the fragment: it never reaches a server or a log.
        fragment = urlencode({"session": self.sessions.session, **query})
        response = RedirectResponse(f"/#{fragment}", status_code=303)
        response.set_cookie(
            self.cookie_name, self.sessions.cookie, httponly=True, samesite="strict", path="/"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    def _link(self) -> Response:
        return json_response({"url": f"{self.origin}/?nonce={self.sessions.issue()}"}, 201)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, why: str) -> None:
        if scope["type"] == "http":
            await error_response(status, why)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
    return out


def _cookie(header: str, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no credential, not a crash
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value


def _with_security_headers(send: Send) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {bytes(name).lower() for name, _value in headers}
            headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
            if b"content-security-policy" not in present:
                headers.append((b"content-security-policy", FRAME_POLICY))
            message = {**message, "headers": headers}
        await send(message)

    return sender


__all__ = [
    "COOKIE",
    "NONCE_SECONDS",
    "REFUSED",
    "SESSION_HEADER",
    "ApiGuard",
    "UiSessions",
    "allowed_hosts",
]
