"""Online or offline: whether a command goes through a running node or to the store itself.

If ``home/api.json`` names a loopback URL, the node that wrote it still holds the home's lock,
and the listener there proves it knows the token in ``home/api.token`` (``GET /api/proof``: an
HMAC of a fresh challenge and its own URL under the token, see :mod:`p2pspace.app.api.auth`),
the command goes through that node's API -- only then is the token sent. A stale ``api.json``
(the node died) or a listener that cannot prove it (another program took the port over) is
ignored: the command works on the store, and the offline backend says why the API was not
used. The decision reads three small files and makes at most two requests; the offline backend
(trio, the core, SQLite) is imported only when the decision is "offline".
"""

from __future__ import annotations

import fcntl
import hmac
import http.client
import ipaddress
import json
import os
import secrets
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from p2pspace.app.cli.backend import ApiError, Backend, CliError
from p2pspace.app.cli.http_backend import HttpBackend
from p2pspace.node.home import INFO_FILE, LOCK_FILE, read_token, token_proof

if TYPE_CHECKING:
    from p2pspace.app.cli.offline_backend import OfflineBackend

PROBE_TIMEOUT = 5.0


def connect(home: Path) -> Backend:
    """The running node's API if ``home/api.json`` names one that answers, else the store.

    Raises :class:`CliError` if no node answers and ``home`` holds no endpoint.
    """
    path = home / INFO_FILE
    try:
        info = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return _offline(home)
    except (OSError, ValueError) as exc:
        return _offline(home, f"cannot read {path}: {exc}")
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not is_loopback_url(url):
        return _offline(home, f"{path} names no loopback http URL")
    if not node_holds_lock(home):
        return _offline(home, f"{path} is stale: no node is running on {home}")
    token = read_token(home)
    if token is None:
        return _offline(home, f"no API token in {home}")
    if not proves_token(url, token):
        return _offline(home, f"the API at {url} is not this home's node; its token was not sent")
    backend = HttpBackend(url, token)
    try:
        backend.call("GET", "/api/status", timeout=PROBE_TIMEOUT)
    except ApiError as exc:
        reason = "it refused the API token" if exc.status == 401 else str(exc)
        return _offline(home, f"{url}: {reason}")
    except CliError as exc:
        return _offline(home, str(exc))
    return backend


def node_holds_lock(home: Path) -> bool:
    """True if some process holds ``home``'s lock (a node runs there)."""
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def proves_token(url: str, token: str) -> bool:
    """True if the listener at ``url`` answers a fresh challenge as only a node holding
    ``token`` and serving ``url`` can (nothing secret is sent)."""
    challenge = secrets.token_bytes(32)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/proof?challenge={challenge.hex()}",
        headers={"Accept": "application/json"},
    )
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT) as response:
            answer = json.loads(response.read(4096)).get("proof")
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        return False
    expected = token_proof(token, url.rstrip("/"), challenge)
    return isinstance(answer, str) and hmac.compare_digest(answer.encode(), expected.encode())


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` is ``http://`` to a loopback address: the token only goes to this
    machine."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        return parts.scheme == "http" and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _offline(home: Path, why_not_online: str | None = None) -> OfflineBackend:
    from p2pspace.app.cli.offline_backend import OfflineBackend, require_endpoint

    return OfflineBackend(require_endpoint(home), why_not_online)


__all__ = ["PROBE_TIMEOUT", "connect", "is_loopback_url", "node_holds_lock", "proves_token"]
