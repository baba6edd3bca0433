"""The browser UI of the local API: one page and its static assets.

Theory of operation. ``GET /`` answers the single page (``webui/index.html``); ``GET /ui/<name>``
answers its script, style sheet and icon. The API serves these routes behind its guard
(:mod:`p2pspace.app.api.auth`), so every request -- assets included -- must carry a credential.
A browser gets one by opening a one-time link (``p2pspace open``): the guard exchanges its nonce
for an ``HttpOnly; SameSite=Strict`` cookie, which the browser then sends with the page, its
assets, every fetch and the event stream. The page holds no secret, and its script never sees
one.

Assets are read with :mod:`importlib.resources` from the package folder ``p2pspace/app/webui``
(package data) and served from an allow-list of names: no part of a request path reaches the
file system. Every response is ``Cache-Control: no-store``. The page's Content-Security-Policy
allows scripts, styles, images and connections from its own origin only: no inline script or
style, no other host.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from p2pspace.errors import StorageError

PAGE = "index.html"

# name -> content type: the only files /ui/ serves.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled by the script, never submitted
        "frame-ancestors 'none'",
    ]
)

COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

PAGE_HEADERS = {
    **COMMON_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}


def read_asset(name: str) -> bytes:
    """The bytes of ``p2pspace/app/webui/<name>``.

    Raises :class:`StorageError` if the package was installed without its web folder.
    """
    try:
        return resources.files("p2pspace.app").joinpath("webui", name).read_bytes()
    except OSError as exc:
        raise StorageError(f"the web UI file {name} is missing from the package: {exc}") from None


async def page(request: Request) -> Response:
    return Response(read_asset(PAGE), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response(
            b'{"error": "no such file"}',
            status_code=404,
            media_type="application/json",
            headers=COMMON_HEADERS,
        )
    return Response(read_asset(name), media_type=media_type, headers=COMMON_HEADERS)


def ui_routes() -> list[BaseRoute]:
    """``GET /`` (the page) and ``GET /ui/<name>`` (its assets), to mount behind the API's
    guard. ``HEAD`` is answered too."""
    return [
        Route("/", page, methods=["GET"]),
        Route("/ui/{name}", asset, methods=["GET"]),
    ]


__all__ = ["ASSETS", "COMMON_HEADERS", "CONTENT_SECURITY_POLICY", "PAGE_HEADERS", "ui_routes"]
