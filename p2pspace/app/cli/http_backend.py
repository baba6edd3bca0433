"""The endpoint commands through a running node's local HTTP API: the command line's fast path.

Standard library only (``urllib`` for requests, ``http.client`` for the event stream): a command
that a running node answers loads neither trio nor the HTTP server nor the core. Requests go to
a loopback URL only (checked before this backend is made) and never through a proxy, since they
carry the API token.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from p2pspace.app.cli.backend import ApiError, CliError
from p2pspace.app.cli.rendering import ProgressPrinter

REQUEST_TIMEOUT = 30.0


def quote(text: str) -> str:
    """``text`` as one URL path segment or query value."""
    return urllib.parse.quote(text, safe="")


class HttpBackend:
    """The node's HTTP API (stdlib urllib; proxies are never used)."""

    online = True

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(
        self, method: str, path: str, body: object = None, *, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Send one request; the decoded JSON answer.

        Raises :class:`ApiError` for an error status (with the API's message) and
        :class:`CliError` when the API cannot be reached or answers something other than JSON.
        """
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = str(json.loads(exc.read())["error"])
            except (OSError, ValueError, TypeError, KeyError, http.client.HTTPException):
                message = f"HTTP {exc.code} {exc.reason}"
            finally:
                exc.close()
            raise ApiError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach the node's API at {self.url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"the node's API at {self.url} failed: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"the node's API at {self.url} sent something other than JSON") from None

    def status(self) -> dict[str, Any]:
        value: dict[str, Any] = self.call("GET", "/api/status")
        return value

    def spaces(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self.call("GET", "/api/spaces")
        return value

    def create_space(self, name: str, tool: str, allow_duplicate: bool = False) -> dict[str, Any]:
        body = {"name": name, "tool": tool, "allow_duplicate": allow_duplicate}
        value: dict[str, Any] = self.call("POST", "/api/spaces", body)
        return value

    def invite(self, space: str, role: str, ttl_s: float | None) -> str:
        body: dict[str, Any] = {"role": role}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return str(self.call("POST", f"/api/spaces/{quote(space)}/invitations", body)["code"])

    def members(self, space: str) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = self.call("GET", f"/api/spaces/{quote(space)}/members")[
            "members"
        ]
        return members

    def remove_member(self, space: str, member: str) -> dict[str, Any]:
        path = f"/api/spaces/{quote(space)}/members/remove"
        answer: dict[str, Any] = self.call("POST", path, {"member": member})["member"]
        return answer

    def set_role(self, space: str, member: str, role: str) -> dict[str, Any]:
        path = f"/api/spaces/{quote(space)}/members/role"
        answer: dict[str, Any] = self.call("POST", path, {"member": member, "role": role})["member"]
        return answer

    def rename_space(self, space: str, name: str) -> tuple[str, dict[str, Any]]:
        answer = self.call("POST", f"/api/spaces/{quote(space)}/rename", {"name": name})
        return str(answer["old_name"]), dict(answer["space"])

    def leave_space(self, space: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", f"/api/spaces/{quote(space)}/leave")["space"]
        return answer

    def compact_space(self, space: str, keep_history: bool | None) -> dict[str, Any]:
        body = {} if keep_history is None else {"keep_history": keep_history}
        path = f"/api/spaces/{quote(space)}/compact"
        answer: dict[str, Any] = self.call("POST", path, body)["compacted"]
        return answer

    def join(self, code: str, timeout: float) -> dict[str, Any]:
        body = {"code": code, "timeout_s": timeout}
        progress = ProgressPrinter()
        watcher = _ProgressWatcher(self, progress)
        watcher.start()
        try:
            answer = self.call("POST", "/api/join", body, timeout=timeout + REQUEST_TIMEOUT)
        finally:
            watcher.stop()
        progress.done()
        return dict(answer)

    def open_events(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The node's event stream (server-sent events), for reading line by line."""
        parsed = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(
            parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=None
        )
        connection.request(
            "GET",
            "/api/events",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"},
        )
        return connection, connection.getresponse()

    def _record_path(self, space: str, table: str, record: str | None) -> str:
        path = f"/api/spaces/{quote(space)}/rdb/{quote(table)}"
        return path if record is None else f"{path}/{quote(record)}"

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None:
        self.call("PUT", self._record_path(space, table, record), {"fields": fields})

    def rdb_delete(self, space: str, table: str, record: str) -> None:
        self.call("DELETE", self._record_path(space, table, record))

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]:
        path = self._record_path(space, table, record)
        timeout = REQUEST_TIMEOUT
        if wait is not None:
            path += f"?wait={wait:g}"
            timeout += wait
        answer = self.call("GET", path, timeout=timeout)
        if record is None:
            records: dict[str, Any] = answer["records"]
            return records
        fields: dict[str, Any] = answer["fields"]
        return fields

    def space_id(self, space: str) -> str:
        return str(self.call("GET", f"/api/spaces/{quote(space)}")["id"])

    def web_ui_url(self, space: str | None) -> str:
        """A one-time link to the web UI (it works once, within a minute): no lasting secret
        goes on the browser's command line."""
        link = str(self.call("POST", "/api/ui-link", {})["url"])
        return link if space is None else f"{link}&space={self.space_id(space)}"

    def _discussion_path(self, space: str, *parts: str) -> str:
        return "/".join([f"/tools/discussion/api/spaces/{quote(space)}", *map(quote, parts)])

    def discuss_post(self, space: str, title: str, body: str) -> str:
        path = self._discussion_path(space, "topics")
        return str(self.call("POST", path, {"title": title, "body": body})["id"])

    def discuss_reply(self, space: str, post: str, body: str) -> dict[str, Any]:
        path = self._discussion_path(space, "posts", post, "replies")
        return dict(self.call("POST", path, {"body": body}))

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> dict[str, Any]:
        path = self._discussion_path(space, "posts", post)
        return dict(self.call("PUT", path, {"body": body, "title": title}))

    def discuss_delete(self, space: str, post: str) -> dict[str, Any]:
        return dict(self.call("DELETE", self._discussion_path(space, "posts", post)))

    def discuss_undo(self, space: str) -> dict[str, Any]:
        return dict(self.call("POST", self._discussion_path(space, "undo")))

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        if topic is not None:
            return [self.call("GET", self._discussion_path(space, "threads", topic))["thread"]]
        topics = self.call("GET", self._discussion_path(space, "topics"))["topics"]
        return [
            self.call("GET", self._discussion_path(space, "threads", t["id"]))["thread"]
            for t in topics
        ]


class _ProgressWatcher:
    """Shows a running node's ``progress`` events while a join request is under way (the join
    itself is one blocking request; the events stream alongside it, read in a thread)."""

    def __init__(self, backend: HttpBackend, printer: ProgressPrinter) -> None:
        self._backend = backend
        self._printer = printer
        self._connection: http.client.HTTPConnection | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p2pspace-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            # Shutting the socket down ends the reader's blocking read at once.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=1)

    def _run(self) -> None:
        # Progress is a courtesy: any failure here just means no progress lines.
        try:
            self._connection, response = self._backend.open_events()
            if self._stopped.is_set():
                return
            for raw in response:
                if self._stopped.is_set():
                    return
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if isinstance(event, dict) and event.get("type") == "progress":
                    self._printer(int(event["have"]), int(event["total"]))
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
            return
        finally:
            if self._connection is not None:
                self._connection.close()


__all__ = ["REQUEST_TIMEOUT", "HttpBackend", "quote"]
