"""Online or offline: whether a command goes through a running node or to the store itself.

If ``home/api.json`` names a loopback URL that answers ``GET /api/status`` with the token in
``home/api.token``, the command goes through that node's API. Otherwise it works on the store,
which a running node would hold locked: the offline backend then says why the node's API was not
used. The decision reads two small files and makes at most one request; the offline backend
(trio, the core, SQLite) is imported only when the decision is "offline".
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from p2pspace.app.cli.backend import ApiError, Backend, CliError
from p2pspace.app.cli.http_backend import HttpBackend
from p2pspace.node.home import INFO_FILE, read_token

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
    token = read_token(home)
    if token is None:
        return _offline(home, f"no API token in {home}")
    backend = HttpBackend(url, token)
    try:
        backend.call("GET", "/api/status", timeout=PROBE_TIMEOUT)
    except ApiError as exc:
        reason = "it refused the API token" if exc.status == 401 else str(exc)
        return _offline(home, f"{url}: {reason}")
    except CliError as exc:
        return _offline(home, str(exc))
    return backend


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


__all__ = ["PROBE_TIMEOUT", "connect", "is_loopback_url"]
