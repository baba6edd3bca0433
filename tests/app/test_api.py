"""The local HTTP API on loopback: token, routes, error mapping, long-polls, server-sent events."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing

from p2pspace.app import api as api_module
from p2pspace.app.api import loopback_host, serve_api
from p2pspace.errors import LocalProtocolError
from p2pspace.node.node import Node, open_node

TIMEOUT = 20
LOOPBACK = ("127.0.0.1", 0)


@asynccontextmanager
async def api_node(home: Path, **kw: Any) -> AsyncIterator[Node]:
    options: dict[str, Any] = {"listen": LOOPBACK, "discovery": False, "api": LOOPBACK}
    options.update(kw)
    async with open_node(home, **options) as node:
        yield node


@asynccontextmanager
async def client_of(node: Node, *, token: str | None = "") -> AsyncIterator[httpx.AsyncClient]:
    """A client for the node's API; ``token=""`` means the node's own, None means none."""
    assert node.api_url is not None
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or node.api_token}"
    async with httpx.AsyncClient(base_url=node.api_url, headers=headers, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with api_node(tmp_path / "a", name="ann") as node:
        yield node


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(node) as client:
        yield client


# -- the token and the files in home ------------------------------------------------------------


async def test_requests_without_the_right_token_get_401(node: Node) -> None:
    async with client_of(node, token=None) as anonymous:
        for path in ("/api/status", "/api/spaces", "/api/events", "/no/such/route"):
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"error": "missing or wrong API token"}
        assert (await anonymous.get("/api/status", params={"token": "wrong"})).status_code == 401
        ok = await anonymous.get("/api/status", params={"token": node.api_token})
        assert ok.status_code == 200
        assert ok.json()["endpoint"] == node.endpoint_id.hex()
        basic = await anonymous.get("/api/status", headers={"Authorization": "Basic abc"})
        assert basic.status_code == 401
    async with client_of(node, token="not-the-token") as wrong:
        assert (await wrong.get("/api/status")).status_code == 401
        assert (await wrong.post("/api/spaces", json={"name": "x"})).status_code == 401
    assert node.spaces() == []


async def test_token_file_and_api_json(tmp_path: Path) -> None:
    home = tmp_path / "a"
    async with api_node(home) as node:
        token_file = home / "api.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() == node.api_token
        info = json.loads((home / "api.json").read_text())
        assert info == {"url": node.api_url, "pid": os.getpid()}
        assert node.api_url is not None and node.api_url.startswith("http://127.0.0.1:")
        first_token = node.api_token
    assert not (home / "api.json").exists()
    async with api_node(home) as node:
        assert node.api_token == first_token  # the token is kept across restarts
    assert not (home / "api.json").exists()


async def test_an_explicit_token_is_used_as_given(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", api_token="s3cret") as node:
        assert node.api_token == "s3cret"
        assert not (tmp_path / "a" / "api.token").exists()
        async with client_of(node, token="s3cret") as client:
            assert (await client.get("/api/status")).status_code == 200


async def test_non_loopback_hosts_are_refused(tmp_path: Path) -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("::1") == "::1"
    assert loopback_host("[::1]") == "::1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    async with open_node(tmp_path / "a", listen=None, discovery=False, api=None) as node:
        for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""):
            with pytest.raises(LocalProtocolError, match="loopback"):
                await serve_api(node, host, 0)
        assert node.api_url is None
    with pytest.raises(LocalProtocolError, match="loopback"):
        async with open_node(tmp_path / "b", listen=None, discovery=False, api=("0.0.0.0", 0)):
            pass  # pragma: no cover
    assert not (tmp_path / "b" / "api.json").exists()


# -- routes -------------------------------------------------------------------------------------


async def test_spaces_records_and_long_polls(node: Node, client: httpx.AsyncClient) -> None:
    created = await client.post("/api/spaces", json={"name": "notes"})
    assert created.status_code == 201
    space = created.json()["id"]
    assert created.json()["name"] == "notes"
    assert [s["id"] for s in (await client.get("/api/spaces")).json()] == [space]
    for ref in ("notes", space, space[:8]):
        info = (await client.get(f"/api/spaces/{ref}")).json()
        assert info["id"] == space and info["member"] is True
    status = (await client.get("/api/status")).json()
    assert status["api"] == node.api_url and status["spaces"][0]["id"] == space

    put = await client.put("/api/spaces/notes/rdb/t/r1", json={"fields": {"x": 1, "s": "hi"}})
    assert put.status_code == 200
    delta = put.json()["delta"]
    assert delta["creator"] == node.endpoint_id.hex() and delta["seq"] == 2
    record = (await client.get("/api/spaces/notes/rdb/t/r1")).json()
    assert record == {"space": space, "table": "t", "record": "r1", "fields": {"x": 1, "s": "hi"}}
    # A record id may hold a slash; it is one path segment once quoted.
    assert (
        await client.put("/api/spaces/notes/rdb/t/a%2Fb", json={"fields": {"y": None}})
    ).is_success
    table = (await client.get("/api/spaces/notes/rdb/t")).json()
    assert table["records"] == {"a/b": {"y": None}, "r1": {"x": 1, "s": "hi"}}

    deleted = await client.delete("/api/spaces/notes/rdb/t/r1")
    assert deleted.status_code == 200 and deleted.json()["delta"]["seq"] == 4
    gone = await client.get("/api/spaces/notes/rdb/t/r1")
    assert gone.status_code == 404 and "no record t/r1" in gone.json()["error"]

    # A long-poll that times out answers 404; one that sees the record appear answers it.
    missing = await client.get("/api/spaces/notes/rdb/t/later", params={"wait": "0.2"})
    assert missing.status_code == 404
    results: list[httpx.Response] = []

    async def poll() -> None:
        results.append(await client.get("/api/spaces/notes/rdb/t/later", params={"wait": "20"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        node.rdb_set(node.resolve_space(space), "t", "later", {"v": 7})
    assert results[0].status_code == 200 and results[0].json()["fields"] == {"v": 7}
    assert (await client.get("/api/spaces/notes/rdb/t", params={"wait": "5"})).is_success


async def test_invitation_and_join_through_the_api(tmp_path: Path) -> None:
    async with (
        api_node(tmp_path / "a", name="ann") as a,
        api_node(tmp_path / "b") as b,
        api_node(tmp_path / "c") as c,
        client_of(a) as ca,
        client_of(b) as cb,
        client_of(c) as cc,
    ):
        space = (await ca.post("/api/spaces", json={"name": "s"})).json()["id"]
        invited = await ca.post("/api/spaces/s/invitations", json={"role": "guest", "ttl_s": 60})
        assert invited.status_code == 201
        code = invited.json()["code"]
        assert code.startswith("p2ps1-")
        joined = await cb.post("/api/join", json={"code": code, "timeout_s": TIMEOUT})
        assert joined.status_code == 200 and joined.json() == {"space": space}
        members = (await cb.get(f"/api/spaces/{space}")).json()["members"]
        assert {m["id"]: m["role"] for m in members}[b.endpoint_id.hex()] == "guest"
        # The code was for one use only: the inviter refuses it (403).
        reused = await cc.post("/api/join", json={"code": code, "timeout_s": TIMEOUT})
        assert reused.status_code == 403, reused.text
        assert c.spaces() == [] or not c.spaces()[0]["member"]

        put = await cb.put(f"/api/spaces/{space}/rdb/t/r", json={"fields": {"from": "b"}})
        assert put.status_code == 200
        seen = await ca.get(f"/api/spaces/{space}/rdb/t/r", params={"wait": str(TIMEOUT)})
        assert seen.status_code == 200 and seen.json()["fields"] == {"from": "b"}


async def test_an_unreachable_inviter_is_502(tmp_path: Path) -> None:
    async with open_node(tmp_path / "a", listen=LOOPBACK, discovery=False, api=None) as a:
        code = a.invite(a.create_space("s").space_id)
    # The inviter has stopped: nothing listens at the address in the code any more.
    async with api_node(tmp_path / "b") as b, client_of(b) as client:
        response = await client.post("/api/join", json={"code": code, "timeout_s": TIMEOUT})
        assert response.status_code == 502, response.text
        assert "cannot reach the inviter" in response.json()["error"]


BAD_REQUESTS: list[tuple[str, str, Any, int]] = [
    ("GET", "/api/spaces/nope", None, 404),
    ("GET", "/api/spaces/nope/rdb/t", None, 404),
    ("PUT", "/api/spaces/nope/rdb/t/r", {"fields": {"a": 1}}, 404),
    ("DELETE", "/api/spaces/nope/rdb/t/r", None, 404),
    ("POST", "/api/spaces/nope/invitations", {}, 404),
    ("POST", "/api/spaces", b"{not json", 400),
    ("POST", "/api/spaces", b"[1, 2]", 400),
    ("POST", "/api/spaces", b'{"name": NaN}', 400),
    ("POST", "/api/spaces", {}, 400),
    ("POST", "/api/spaces", {"name": 5}, 400),
    ("PUT", "/api/spaces/s/rdb/t/r", {"fields": "x"}, 400),
    ("PUT", "/api/spaces/s/rdb/t/r", {"fields": {}}, 400),
    ("PUT", "/api/spaces/s/rdb/t/r", {}, 400),
    ("PUT", "/api/spaces/s/rdb/" + "t" * 300 + "/r", {"fields": {"a": 1}}, 400),
    ("PUT", "/api/spaces/s/rdb/t/r", {"fields": {"a": 10**30}}, 400),
    ("PUT", "/api/spaces/s/rdb/t/r", b"\xff\xfe", 400),
    ("GET", "/api/spaces/s/rdb/t/r?wait=soon", None, 400),
    ("GET", "/api/spaces/s/rdb/t/r?wait=-1", None, 400),
    ("POST", "/api/spaces/s/invitations", {"role": "emperor"}, 400),
    ("POST", "/api/spaces/s/invitations", {"ttl_s": -5}, 400),
    ("POST", "/api/spaces/s/invitations", {"ttl_s": "long"}, 400),
    ("POST", "/api/spaces/s/invitations", b'{"ttl_s": 1e999}', 400),
    ("PUT", "/api/spaces/s/rdb/t/r", b'{"fields": {"a": 1e999}}', 400),
    ("GET", "/api/spaces/s/rdb/t/r?wait=nan", None, 400),
    ("POST", "/api/join", {"code": "p2ps1-garbage"}, 403),
    ("POST", "/api/join", {"code": "hello"}, 403),
    ("POST", "/api/join", {}, 400),
    ("POST", "/api/join", {"code": "p2ps1-x", "timeout_s": 0}, 400),
    ("GET", "/api/nothing/here", None, 404),
    ("DELETE", "/api/spaces", None, 405),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_REQUESTS)
async def test_errors_map_to_json_statuses(
    node: Node, client: httpx.AsyncClient, method: str, path: str, body: Any, status: int
) -> None:
    node.create_space("s")
    if isinstance(body, bytes):
        response = await client.request(method, path, content=body)
    else:
        response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str) and response.json()["error"]


async def _raw_put(node: Node, path: str, headers: str, body: list[bytes]) -> bytes:
    """Send a PUT by hand (so the body can lie or stream) and return the status line."""
    assert node.api_url is not None
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {node.api_token}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n{headers}\r\n"
        )
        await stream.send_all(head.encode())
        try:
            for chunk in body:
                await stream.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server answered (and closed) before taking it all
        received = b""
        while b"\r\n" not in received:
            data = await stream.receive_some(4096)
            if not data:
                break
            received += data
    return received.split(b"\r\n", 1)[0]


async def test_request_bodies_are_bounded(node: Node) -> None:
    node.create_space("s")
    path = "/api/spaces/s/rdb/t/r"
    with trio.fail_after(TIMEOUT):
        declared = await _raw_put(node, path, f"Content-Length: {api_module.MAX_BODY + 1}\r\n", [])
        assert declared.startswith(b"HTTP/1.1 413")
        # Chunked, no declared length: counted while read.
        half = api_module.MAX_BODY // 2
        chunk = f"{half:x}\r\n".encode() + b" " * half + b"\r\n"
        streamed = await _raw_put(node, path, "Transfer-Encoding: chunked\r\n", [chunk] * 3)
        assert streamed.startswith(b"HTTP/1.1 413")
    assert node.rdb_get(node.resolve_space("s"), "t") == {}


# -- server-sent events -------------------------------------------------------------------------


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
        headers = [("Host", host), ("Authorization", f"Bearer {node.api_token}")]
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


async def test_events_stream_delivers_an_rdb_set(node: Node, client: httpx.AsyncClient) -> None:
    space = node.create_space("s").space_id
    with trio.fail_after(TIMEOUT):
        events, response = await EventClient.open(node)
        try:
            assert response.status_code == 200
            assert dict(response.headers)[b"content-type"].startswith(b"text/event-stream")
            # The headers come after the subscription: this set is seen.
            await client.put("/api/spaces/s/rdb/t/r", json={"fields": {"a": 1}})
            event = await events.data()
            while event["type"] != "deltas":
                event = await events.data()
            assert event["space"] == space.hex() and event["count"] == 1
            assert event["creators"] == [node.endpoint_id.hex()]
            assert node.statistics()["subscribers"] == 1
        finally:
            await events.aclose()
        # The client hung up: the server notices and drops the subscription.
        await node.wait_until(lambda: node.statistics()["subscribers"] == 0)


async def test_events_stream_sends_keepalives(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "KEEPALIVE_SECONDS", 0.05)
    with trio.fail_after(TIMEOUT):
        events, response = await EventClient.open(node)
        try:
            assert response.status_code == 200
            while await events.line() != ": keepalive":
                pass
        finally:
            await events.aclose()


async def test_streams_and_polls_end_cleanly_when_the_node_stops(tmp_path: Path) -> None:
    ended: list[str] = []
    with trio.fail_after(TIMEOUT):
        # Exits run bottom-up: the node stops first, then the requests end, then the client.
        async with (
            httpx.AsyncClient(timeout=TIMEOUT) as client,
            trio.open_nursery() as nursery,
            api_node(tmp_path / "a") as node,
        ):
            node.create_space("s")
            events, response = await EventClient.open(node, query=f"?token={node.api_token}")
            assert response.status_code == 200

            async def listen() -> None:
                try:
                    while await events.line() is not None:
                        pass
                finally:
                    await events.aclose()
                ended.append("events")  # h11 saw the stream's last chunk: it ended properly

            async def poll() -> None:
                r = await client.get(
                    f"{node.api_url}/api/spaces/s/rdb/t/r",
                    params={"wait": "60", "token": node.api_token},
                )
                ended.append(f"poll {r.status_code}")

            nursery.start_soon(listen)
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            # Leaving the block stops the node; both requests must end, not hang or break.
    assert sorted(ended) == ["events", "poll 404"]
    assert not (tmp_path / "a" / "api.json").exists()
