"""HTTP plumbing shared by every route: JSON responses, the error -> status table, request bodies.

Theory of operation. Handlers return :func:`json_response` and signal failure by raising: an
:class:`HTTPError` carries its own status, an error of the node (:class:`P2PSpaceError`) gets
the status :data:`STATUS_OF_ERROR` gives its type (the most specific class listed wins, so a
new subclass inherits its parent's status), and a wait that runs out of time
(:class:`trio.TooSlowError`) is 504. :data:`EXCEPTION_HANDLERS` installs that mapping on the
whole app, so a tool's routes answer errors in the same shape without doing anything: every
error body is ``{"error": "..."}``, unknown routes and methods included.

Request bodies are JSON objects read with a byte limit that is enforced while reading (a
declared ``Content-Length`` over it is refused before anything is read); field helpers check one
field's type and raise a 400 that names the field.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from p2pspace.errors import (
    ConflictError,
    InvitationError,
    LocalProtocolError,
    NotFoundError,
    P2PSpaceError,
    PermissionDeniedError,
    TransportError,
)

MAX_SECONDS = 10.0**9  # any duration given in a request (about 30 years)
UNLISTED_ERROR_STATUS = 400

# Error type -> status. Looked up along the raised error's MRO: a NotFoundError is 404 although it
# is also a LocalProtocolError (400). Anything else from the node is UNLISTED_ERROR_STATUS.
STATUS_OF_ERROR: Mapping[type[P2PSpaceError], int] = {
    NotFoundError: 404,  # an unknown space, post, topic or record
    PermissionDeniedError: 403,  # a change to someone else's post
    ConflictError: 409,  # already deleted, nothing to undo
    LocalProtocolError: 400,  # other misuse
    InvitationError: 403,  # a code that is forged, expired, used or refused
    TransportError: 502,  # the node could not reach a peer it needed (a join's inviter)
}


class HTTPError(Exception):
    """An error response (status and message) raised inside a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_of(exc: P2PSpaceError) -> int:
    """The HTTP status an error from the node maps to (see :data:`STATUS_OF_ERROR`)."""
    for kind in type(exc).__mro__:
        status = STATUS_OF_ERROR.get(kind)
        if status is not None:
            return status
    return UNLISTED_ERROR_STATUS


# -- responses ----------------------------------------------------------------------------------


def jsonable(value: object) -> object:
    """The ``default`` of every JSON encoding of the API: records with ``to_json()`` encode as
    what it returns; byte strings (CBOR records may hold them) as hex.

    Raises :class:`TypeError` for anything else, as :func:`json.dumps` expects.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_response(data: object, status: int = 200) -> Response:
    """``data`` as an ``application/json`` response (UTF-8, no NaN or infinities, no spaces
    between items: a 200-post thread is a tenth smaller)."""
    body = json.dumps(
        data, default=jsonable, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return Response(body.encode("utf-8"), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return error_response(exc.status, str(exc))


async def _node_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, P2PSpaceError)
    return error_response(status_of(exc), str(exc))


async def _too_slow(request: Request, exc: Exception) -> Response:
    return error_response(504, "timed out")


async def _routing_error(request: Request, exc: Exception) -> Response:
    # Unknown routes and methods answer in the same JSON shape as every other error.
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

# For Starlette(exception_handlers=...): applied to every route, whoever declared it.
EXCEPTION_HANDLERS: Mapping[type[Exception], ExceptionHandler] = {
    HTTPError: _http_error,
    P2PSpaceError: _node_error,
    trio.TooSlowError: _too_slow,
    HTTPException: _routing_error,
}


# -- request parsing ----------------------------------------------------------------------------


async def read_json(request: Request, *, max_body: int) -> dict[str, Any]:
    """The request's JSON object body ({} if empty), read up to ``max_body`` bytes.

    Raises :class:`HTTPError` 413 for a larger body, 400 for one that is not a JSON object
    (NaN and infinities are not JSON).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise HTTPError(413, f"request body is larger than {max_body} bytes")
    chunks: list[bytes] = []
    size = 0
    async with contextlib.aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > max_body:
                raise HTTPError(413, f"request body is larger than {max_body} bytes")
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


def text_field(body: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    """A non-empty string field (``default`` when absent). Raises :class:`HTTPError` 400."""
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise HTTPError(400, f"{key!r} must be a non-empty string")
    return value


def string_field(body: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    """A string field that may be empty (the callee checks and trims the text).

    Raises :class:`HTTPError` 400.
    """
    value = body.get(key, default)
    if not isinstance(value, str):
        raise HTTPError(400, f"{key!r} must be a string")
    return value


def seconds_field(body: Mapping[str, Any], key: str) -> float | None:
    """A positive duration in seconds (None when absent), at most :data:`MAX_SECONDS`.

    Raises :class:`HTTPError` 400.
    """
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


def seconds_param(text: str | None, label: str, *, cap: float) -> float | None:
    """A query parameter's duration in seconds (None when absent or empty), capped at ``cap``.

    Raises :class:`HTTPError` 400 for anything but a finite number >= 0.
    """
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPError(400, f"{label} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPError(400, f"{label} must be a number of seconds")
    return min(value, cap)


__all__ = [
    "EXCEPTION_HANDLERS",
    "MAX_SECONDS",
    "STATUS_OF_ERROR",
    "HTTPError",
    "error_response",
    "json_response",
    "jsonable",
    "read_json",
    "seconds_field",
    "seconds_param",
    "status_of",
    "string_field",
    "text_field",
]
