"""The local API's guard, tried as a web page in the owner's browser and as another program on
the same machine would: its own ``Host`` only, same-origin JSON writes, no token in URLs but the
event stream's, one-time links for the browser, and a command line that checks it is talking to
its own node before it sends the token."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import trio

from p2pspace.app.api.auth import COOKIE, NONCE_SECONDS, SESSION_HEADER, UiSessions
from p2pspace.app.cli import choose_backend
from p2pspace.app.cli.http_backend import HttpBackend
from p2pspace.app.cli.offline_backend import OfflineBackend
from p2pspace.node.home import home_lock, read_config
from p2pspace.node.node import Node
from tests.helpers import TIMEOUT
from tests.helpers.api_client import api_node, client_of


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with api_node(tmp_path / "a", name="ann") as node:
        node.create_space("s")
        yield node


def port_of(node: Node) -> int:
    assert node.api_url is not None
    return int(node.api_url.rsplit(":", 1)[1])


async def test_a_foreign_host_gets_403_whatever_the_token(node: Node) -> None:
    port = port_of(node)
    async with client_of(node) as client:
        assert (await client.get("/api/status")).status_code == 200
        for host in (
            f"evil.example:{port}",  # a rebound DNS name
            f"127.0.0.1:{port + 1}",  # another port
            "127.0.0.1",  # no port
            f"localhost.evil.example:{port}",
            "",
        ):
            response = await client.get("/api/status", headers={"Host": host})
            assert response.status_code == 403, host
            assert response.headers["referrer-policy"] == "no-referrer"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            assert (await client.get("/api/status", headers={"Host": host})).status_code == 200


async def test_writes_need_the_apis_own_origin_and_json(node: Node) -> None:
    origin = node.api_url
    async with client_of(node) as client:
        body = {"fields": {"v": 1}}
        path = "/api/spaces/s/rdb/t/r"
        for other in ("http://evil.example", "null", f"{origin}.evil.example", "http://localhost"):
            response = await client.put(path, json=body, headers={"Origin": other})
            assert response.status_code == 403, other
        plain = await client.put(
            path, content=json.dumps(body), headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        form = await client.post(
            "/api/spaces",
            content=b"name=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415
        assert node.rdb_get(node.resolve_space("s"), "t") == {}
        # The page's own origin, or none (a program), with JSON: accepted.
        assert (
            await client.put(path, json=body, headers={"Origin": str(origin)})
        ).status_code == 200
        assert (await client.put(path, json={"fields": {"v": 2}})).status_code == 200
        # Reads are not writes: another origin may send them, but no CORS header lets it read.
        read = await client.get(path, headers={"Origin": "http://evil.example"})
        assert read.status_code == 200
        assert not [h for h in read.headers if h.lower().startswith("access-control-")]
        preflight = await client.options(
            path,
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"},
        )
        assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


async def test_the_token_in_a_query_string_opens_only_the_event_stream(node: Node) -> None:
    token = node.api_token
    async with client_of(node, token=None) as anonymous:
        write = await anonymous.put(
            "/api/spaces/s/rdb/t/r", params={"token": token}, json={"fields": {"v": 1}}
        )
        assert write.status_code == 401
        assert (await anonymous.get("/api/status", params={"token": token})).status_code == 401
        assert node.rdb_get(node.resolve_space("s"), "t") == {}
        with trio.fail_after(TIMEOUT):
            async with anonymous.stream("GET", "/api/events", params={"token": token}) as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")


async def test_every_answer_carries_the_security_headers(node: Node) -> None:
    async with client_of(node) as client, client_of(node, token=None) as anonymous:
        answers = [
            await client.get("/api/status"),
            await client.get("/api/spaces/nope"),
            await client.get("/no/such/route"),
            await anonymous.get("/api/status"),
            await client.get("/api/status", headers={"Host": "evil.example"}),
        ]
    for response in answers:
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_a_one_time_link_works_once_and_gives_a_strict_cookie(node: Node) -> None:
    port = port_of(node)
    async with client_of(node) as client, client_of(node, token=None) as browser:
        made = await client.post("/api/ui-link", json={})
        assert made.status_code == 201
        link = made.json()["url"]
        assert link.startswith(f"{node.api_url}/?nonce=") and str(node.api_token) not in link
        # Only a holder of the token can make one.
        assert (await browser.post("/api/ui-link", json={})).status_code == 401
        opened = await browser.get(link + "&space=abc")
        assert opened.status_code == 303
        location = opened.headers["location"]
        assert location.startswith("/#session=") and location.endswith("&space=abc")
        session = location.removeprefix("/#session=").split("&", 1)[0]
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}_{port}=")  # one per node on the machine
        for flag in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert flag in cookie
        # The cookie opens the page and its assets, which hold no data ...
        page = await browser.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (await browser.get("/ui/app.js")).status_code == 200
        # ... but not the API: a listener on another local port may catch the cookie (cookies
        # for 127.0.0.1 go to every port of it); the session secret stays in this origin.
        assert (await browser.get("/api/status")).status_code == 401
        with_session = {SESSION_HEADER: session}
        assert (await browser.get("/api/status", headers=with_session)).status_code == 200
        assert (
            await browser.get("/api/status", headers={SESSION_HEADER: "wrong"})
        ).status_code == 401
        # The session alone is not enough either.
        saved = dict(browser.cookies)
        browser.cookies.clear()
        assert (await browser.get("/api/status", headers=with_session)).status_code == 401
        for name, value in saved.items():
            browser.cookies.set(name, value)
        # Cookie-authenticated writes still need the page's origin (or none) and JSON; the
        # page may be opened under any of the API's own names.
        path, body = "/api/spaces/s/rdb/t/r", {"fields": {"v": 1}}
        foreign = {**with_session, "Origin": "http://evil.example"}
        assert (await browser.put(path, json=body, headers=foreign)).status_code == 403
        other_port = {**with_session, "Origin": f"http://127.0.0.1:{port + 1}"}
        assert (await browser.put(path, json=body, headers=other_port)).status_code == 403
        for origin in (str(node.api_url), f"http://localhost:{port}"):
            own = {**with_session, "Origin": origin}
            assert (await browser.put(path, json=body, headers=own)).status_code == 200
        browser.cookies.clear()
        again = await browser.get(link)
        assert again.status_code == 401
        assert "p2pspace open" in again.text


def test_a_nonce_expires_and_outstanding_ones_are_bounded() -> None:
    now = [0.0]
    sessions = UiSessions(clock=lambda: now[0])
    late = sessions.issue()
    now[0] += NONCE_SECONDS + 1
    assert not sessions.redeem(late)
    fresh = [sessions.issue() for _ in range(100)]
    assert not sessions.redeem(fresh[0])  # the oldest gave way
    assert sessions.redeem(fresh[-1]) and not sessions.redeem(fresh[-1])
    assert not sessions.redeem("") and not sessions.redeem("x" * 10_000)


async def test_the_web_ui_keeps_its_address_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "a"
    async with api_node(home, port=None) as node:
        first = node.api_url
        token = node.api_token
    assert read_config(home)["api_port"] == int(str(first).rsplit(":", 1)[1])
    async with api_node(home, port=None) as node:
        assert node.api_url == first
        assert node.api_token != token  # the token rotates; the address does not


# -- the command line does not hand the token to whoever holds the port ---------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """A foreign listener: answers everything with 200 and records every request's headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(dict(self.headers))
        body = json.dumps({"proof": "0" * 64, "endpoint": "x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign() -> Iterator[str]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def write_stale_home(home: Path, url: str) -> None:
    home.mkdir(mode=0o700)
    (home / "api.token").write_text("the-real-token\n")
    (home / "api.json").write_text(json.dumps({"url": url, "pid": 1}))


def test_a_stale_api_json_is_ignored_when_no_node_holds_the_home(
    tmp_path: Path, foreign: str
) -> None:
    home = tmp_path / "home"
    write_stale_home(home, foreign)
    with pytest.raises(Exception, match="no endpoint"):
        choose_backend.connect(home)  # offline, and this home has no endpoint
    assert Recorder.seen == []  # not even asked


def test_a_foreign_listener_on_a_live_nodes_port_never_gets_the_token(
    tmp_path: Path, foreign: str
) -> None:
    home = tmp_path / "home"
    write_stale_home(home, foreign)
    with home_lock(home):  # as if a node ran there (the listener is not it)
        assert not choose_backend.proves_token(foreign, "the-real-token")
    assert Recorder.seen  # it was asked to prove itself ...
    for headers in Recorder.seen:
        assert "the-real-token" not in json.dumps(headers)  # ... and never sent the token


async def test_the_command_line_trusts_its_own_node(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a") as node:
        url, token = str(node.api_url), str(node.api_token)
        assert await trio.to_thread.run_sync(choose_backend.proves_token, url, token)
        assert not await trio.to_thread.run_sync(choose_backend.proves_token, url, "another")
        backend = await trio.to_thread.run_sync(choose_backend.connect, tmp_path / "a")
        assert isinstance(backend, HttpBackend)
        async with httpx.AsyncClient(base_url=url) as raw:
            bad = await raw.get("/api/proof", params={"challenge": "zz"})
            assert bad.status_code == 400
    # The node stopped (api.json is gone): the command works on the store.
    after = await trio.to_thread.run_sync(choose_backend.connect, tmp_path / "a")
    assert isinstance(after, OfflineBackend)
