"""The local HTTP API on loopback: token, routes, error mapping, long-polls, server-sent events."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from p2pspace.app.api import (
    ApiConfig,
    RouteContext,
    RouteProvider,
    discussion_routes,
    loopback_host,
    serve_api,
)
from p2pspace.app.api.http import STATUS_OF_ERROR, HTTPError, json_response, status_of
from p2pspace.app.api.registry import tool_route_providers
from p2pspace.errors import (
    ConflictError,
    InvitationError,
    LocalProtocolError,
    NotFoundError,
    P2PSpaceError,
    StorageError,
    TransportError,
)
from p2pspace.node import home as home_folder
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.tools import discussion
from p2pspace.tools.plugin import TOOLS_GROUP, ToolPlugin, installed_plugins, load_plugins
from tests.helpers import TIMEOUT
from tests.helpers.api_client import NODE_CONFIG, EventClient, api_node, client_of

MAX_BODY = ApiConfig().max_body


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
        # The right token in a query string opens nothing but the event stream: URLs end up in
        # histories and logs.
        query = await anonymous.get("/api/status", params={"token": node.api_token})
        assert query.status_code == 401
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
        # Every start rotates the token: one that leaked from a past run opens nothing.
        assert node.api_token != first_token
        assert (home / "api.token").read_text().strip() == node.api_token
    assert not (home / "api.json").exists()


async def test_an_explicit_token_is_used_as_given(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", token="s3cret") as node:
        assert node.api_token == "s3cret"
        assert not (tmp_path / "a" / "api.token").exists()
        async with client_of(node, token="s3cret") as client:
            assert (await client.get("/api/status")).status_code == 200


async def test_non_loopback_hosts_are_refused(tmp_path: Path) -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("::1") == "::1"
    assert loopback_host("[::1]") == "::1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    async with open_node(tmp_path / "a", dataclasses.replace(NODE_CONFIG, listen=None)) as node:
        for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""):
            with pytest.raises(LocalProtocolError, match="loopback"):
                await serve_api(node, host, 0)
        assert node.api_url is None
    with pytest.raises(LocalProtocolError, match="loopback"):
        async with api_node(tmp_path / "b", host="0.0.0.0"):
            pass  # pragma: no cover
    assert not (tmp_path / "b" / "api.json").exists()


def test_the_token_the_client_reads_is_the_one_the_server_wrote_last(tmp_path: Path) -> None:
    assert home_folder.info_path(tmp_path) == tmp_path / home_folder.INFO_FILE
    assert home_folder.read_token(tmp_path) is None
    token = home_folder.new_token(tmp_path)
    assert home_folder.read_token(tmp_path) == token
    again = home_folder.new_token(tmp_path)
    assert again != token and home_folder.read_token(tmp_path) == again


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
        results.append(
            await client.get("/api/spaces/notes/rdb/t/later", params={"wait": str(TIMEOUT)})
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        node.rdb_set(node.resolve_space(space), "t", "later", {"v": 7})
    assert results[0].status_code == 200 and results[0].json()["fields"] == {"v": 7}
    assert (await client.get("/api/spaces/notes/rdb/t", params={"wait": str(TIMEOUT)})).is_success


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
        assert joined.status_code == 200
        assert joined.json() == {"space": space, "name": "s", "members": 2, "inviter": "ann"}
        members = (await cb.get(f"/api/spaces/{space}")).json()["members"]
        assert {m["id"]: m["role"] for m in members}[b.endpoint_id.hex()] == "guest"
        # The code was for one use only: the inviter refuses it (403).
        reused = await cc.post("/api/join", json={"code": code, "timeout_s": TIMEOUT})
        assert reused.status_code == 403, reused.text
        assert c.spaces() == [] or not c.spaces()[0].member

        # A guest reads and writes nothing (403, saying why); what the manager writes reaches it.
        put = await cb.put(f"/api/spaces/{space}/rdb/t/r", json={"fields": {"from": "b"}})
        assert put.status_code == 403 and "a guest cannot" in put.json()["error"]
        put = await ca.put(f"/api/spaces/{space}/rdb/t/r", json={"fields": {"from": "a"}})
        assert put.status_code == 200
        seen = await cb.get(f"/api/spaces/{space}/rdb/t/r", params={"wait": str(TIMEOUT)})
        assert seen.status_code == 200 and seen.json()["fields"] == {"from": "a"}


async def test_an_unreachable_inviter_is_502(tmp_path: Path) -> None:
    async with open_node(tmp_path / "a", NODE_CONFIG) as a:
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
        response = await client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
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
            f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {node.api_token}\r\n"
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
        declared = await _raw_put(node, path, f"Content-Length: {MAX_BODY + 1}\r\n", [])
        assert declared.startswith(b"HTTP/1.1 413")
        # Chunked, no declared length: counted while read.
        half = MAX_BODY // 2
        chunk = f"{half:x}\r\n".encode() + b" " * half + b"\r\n"
        streamed = await _raw_put(node, path, "Transfer-Encoding: chunked\r\n", [chunk] * 3)
        assert streamed.startswith(b"HTTP/1.1 413")
    assert node.rdb_get(node.resolve_space("s"), "t") == {}


# -- server-sent events -------------------------------------------------------------------------


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
            assert node.statistics().subscribers == 1
        finally:
            await events.aclose()
        # The client hung up: the server notices and drops the subscription.
        await node.wait_until(lambda: node.statistics().subscribers == 0)


async def test_events_stream_sends_keepalives(tmp_path: Path) -> None:
    config = ApiConfig(keepalive_seconds=0.05)
    with trio.fail_after(TIMEOUT):
        async with api_node(tmp_path / "a", config=config) as node:
            events, response = await EventClient.open(node)
            try:
                assert response.status_code == 200
                while await events.line() != ": keepalive":
                    pass
            finally:
                await events.aclose()


async def test_an_events_client_that_falls_behind_is_dropped(tmp_path: Path) -> None:
    config = ApiConfig(event_queue=4)
    with trio.fail_after(TIMEOUT):
        async with api_node(tmp_path / "a", config=config, durability="normal") as node:
            space = node.create_space("s").space_id
            events, response = await EventClient.open(node)
            try:
                assert response.status_code == 200
                assert node.statistics().subscribers == 1
                # Far more events at once than the stream may queue: the node drops it...
                for i in range(3 * config.event_queue):
                    node.rdb_set(space, "t", f"r{i}", {"i": i})
                assert node.statistics().subscribers == 0
                # ...and the stream ends properly after what it had queued.
                seen = 0
                while (line := await events.line()) is not None:
                    seen += line.startswith("data: ")
                # (one more than the queue if the stream was already waiting for the first)
                assert config.event_queue <= seen <= config.event_queue + 1
            finally:
                await events.aclose()
            async with client_of(node) as client:  # the API serves on
                assert (await client.get("/api/status")).status_code == 200


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
                    # Longer than this test's own bound: only the node stopping ends it.
                    params={"wait": str(2 * TIMEOUT)},
                    headers={"Authorization": f"Bearer {node.api_token}"},
                )
                ended.append(f"poll {r.status_code}")

            nursery.start_soon(listen)
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            # Leaving the block stops the node; both requests must end, not hang or break.
    assert sorted(ended) == ["events", "poll 404"]
    assert not (tmp_path / "a" / "api.json").exists()


# -- serving next to a node -----------------------------------------------------------------------


async def test_the_api_is_started_and_stopped_by_its_caller(tmp_path: Path) -> None:
    home = tmp_path / "a"
    async with open_node(home, NODE_CONFIG) as node:
        assert node.api_url is None and not (home / "api.json").exists()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_api, node, "localhost", 0, "tok")
            assert url == node.api_url and node.api_token == "tok"
            assert json.loads((home / "api.json").read_text())["url"] == url
            async with client_of(node) as client:
                assert (await client.get("/api/status")).json()["api"] == url
            nursery.cancel_scope.cancel()
        # The API has stopped; the node runs on without it.
        assert node.api_url is None and not (home / "api.json").exists()
        assert node.status().api is None
        node.create_space("still here")


async def test_a_taken_port_is_a_transport_error_and_leaves_nothing(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a") as first:
        assert first.api_url is not None
        port = int(first.api_url.rsplit(":", 1)[1])
        async with open_node(tmp_path / "b", NODE_CONFIG) as second:
            with pytest.raises(TransportError, match="cannot serve the API"):
                await serve_api(second, "127.0.0.1", port, "tok")
            assert second.api_url is None
    assert not (tmp_path / "b" / "api.json").exists()


def test_api_config_refuses_limits_that_are_not_positive() -> None:
    assert ApiConfig().max_body == 1024 * 1024
    cases: list[tuple[str, Any]] = [("max_body", 0), ("keepalive_seconds", -1.0), ("backlog", True)]
    for name, value in cases:
        with pytest.raises(LocalProtocolError, match=name):
            ApiConfig(**{name: value})


def test_statuses_follow_the_error_types() -> None:
    class Gone(NotFoundError):
        pass

    assert status_of(NotFoundError("x")) == 404
    assert status_of(Gone("x")) == 404  # a subclass gets its parent's status
    assert status_of(ConflictError("x")) == 409
    assert status_of(LocalProtocolError("x")) == 400
    assert status_of(InvitationError("x")) == 403
    assert status_of(StorageError("x")) == 400  # not listed: the default
    assert status_of(P2PSpaceError("x")) == 400
    assert all(issubclass(kind, P2PSpaceError) for kind in STATUS_OF_ERROR)


# -- tool routes ----------------------------------------------------------------------------------


def greeting_routes(context: RouteContext) -> Sequence[BaseRoute]:
    """A second tool's routes, as a provider declares them (mounted under /tools/NAME/api)."""

    async def hello(request: Request) -> Response:
        space = context.space(request)
        body = await context.body(request)
        if body.get("refuse"):
            raise ConflictError("refused by the tool")
        if body.get("teapot"):
            raise HTTPError(418, "a teapot")
        return json_response({"space": space.hex(), "hello": body.get("name", "you")})

    return [Route("/spaces/{space}/greeting", hello, methods=["POST"])]


def test_tool_routes_come_from_the_installed_tools() -> None:
    # Declared in pyproject.toml as a tool; the api package names no tool.
    [declared] = [p for p in entry_points(group=TOOLS_GROUP) if p.name == "discussion"]
    assert declared.value == "p2pspace.tools.discussion:PLUGIN"
    assert tool_route_providers(installed_plugins())["discussion"] is discussion_routes.routes


async def test_a_route_provider_given_explicitly_is_served(tmp_path: Path) -> None:
    providers = {"greeting": greeting_routes}
    async with api_node(tmp_path / "a", route_providers=providers) as node:
        space = node.create_space("s").space_id.hex()
        base = "/tools/greeting/api/spaces"
        async with client_of(node) as client, client_of(node, token=None) as anonymous:
            hello = await client.post(f"{base}/s/greeting", json={"name": "ann"})
            assert hello.status_code == 200 and hello.json() == {"space": space, "hello": "ann"}
            # The tool's routes are behind the same token and the same error mapping.
            refused = await anonymous.post(f"{base}/s/greeting", json={})
            assert refused.status_code == 401
            for body, status in [({"refuse": True}, 409), ({"teapot": True}, 418)]:
                answer = await client.post(f"{base}/s/greeting", json=body)
                assert answer.status_code == status and answer.json()["error"]
            missing = await client.post(f"{base}/nope/greeting", json={})
            assert missing.status_code == 404 and "no space" in missing.json()["error"]
            # Explicit providers replace the installed ones: no discussion routes here.
            topics = await client.get("/tools/discussion/api/spaces/s/topics")
            assert topics.status_code == 404
            assert (await client.get("/api/status")).status_code == 200
            # A tool's routes live under its own name only: not at the node's paths.
            assert (await client.post("/api/spaces/s/greeting", json={})).status_code == 404


async def test_route_providers_that_cannot_be_served_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def answer(request: Request) -> Response:
        return json_response({"ok": True})

    def taken(*paths: str) -> RouteProvider:
        return lambda context: [Route(path, answer, methods=["PUT"]) for path in paths]

    providers: dict[str, RouteProvider] = {
        "mine": taken("/x", "/x"),
        "junk": lambda context: ["/api/x"],  # type: ignore[list-item]
        "boom": lambda context: 1 / 0,  # type: ignore[return-value, arg-type]
        # The node's paths and another tool's are not a collision: each tool has its own.
        "good": taken("/api/status"),
        "also": taken("/api/status"),
    }
    with caplog.at_level(logging.ERROR, logger="p2pspace.app.api"):
        async with (
            api_node(tmp_path / "a", route_providers=providers) as node,
            client_of(node) as client,
        ):
            for name in ("good", "also"):
                served = await client.put(f"/tools/{name}/api/api/status")
                assert served.status_code == 200, name
            for name in ("mine", "junk", "boom"):
                assert (await client.put(f"/tools/{name}/api/x")).status_code == 404, name
            assert (await client.get("/api/status")).status_code == 200
    for words in ("'mine' answer PUT /x twice", "gave str, not a route", "'boom' failed"):
        assert words in caplog.text


def test_broken_tools_are_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def point(name: str, value: str) -> EntryPoint:
        return EntryPoint(name=name, value=value, group=TOOLS_GROUP)

    good = point("discussion", "p2pspace.tools.discussion:PLUGIN")
    broken = [
        point("gone", "p2pspace.no_such_module:PLUGIN"),
        point("bad", "p2pspace.tools.discussion:NOTHING"),
        point("flat", "p2pspace.tools.plugin:TOOLS_GROUP"),  # not a ToolPlugin
        point("discussion", "tests.app.test_api:GREETING"),  # the name is taken
        point("other", "p2pspace.tools.discussion:PLUGIN"),  # names itself "discussion"
        point("copycat", "tests.app.test_api:COPYCAT"),  # the discussion's instance
    ]
    with caplog.at_level(logging.ERROR, logger="p2pspace.tools"):
        plugins = load_plugins([*broken, good])
    assert plugins == {"discussion": discussion.PLUGIN}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for name in ("'gone'", "'bad'", "'flat'", "'other'", "'copycat'"):
        assert f"the tool {name}" in logged
    assert "would write to discussion, which the tool 'discussion' keeps" in logged
    with pytest.raises(LocalProtocolError, match="members instance"):
        ToolPlugin(name="boss", title="Boss", engines={"members": "members"}, open=print)
    assert "GREETING" in logged and "taken" in logged
    # A tool whose routes cannot be imported keeps the others' routes.
    lost = dataclasses.replace(discussion.PLUGIN, name="lost", routes="p2pspace.nowhere:routes")
    with caplog.at_level(logging.ERROR, logger="p2pspace.app.api"):
        providers = tool_route_providers({"lost": lost, "discussion": discussion.PLUGIN})
    assert providers == {"discussion": discussion_routes.routes}
    assert "API routes of the tool 'lost'" in caplog.text


GREETING = ToolPlugin(
    name="greeting", title="Greeting", engines={"db": "rdb"}, open=lambda context: None
)
COPYCAT = ToolPlugin(
    name="copycat", title="Copycat", engines={"discussion": "rdb"}, open=lambda context: None
)
DOC = Path(__file__).resolve().parents[2] / "docs" / "local-api.md"
PYPROJECT = DOC.parents[1] / "pyproject.toml"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)


async def test_the_documented_route_provider_is_served(tmp_path: Path) -> None:
    [block] = doc_blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    providers = {"counts": namespace["routes"]}
    async with api_node(tmp_path / "a", route_providers=providers) as node, client_of(node) as c:
        space = node.create_space("s").space_id
        base = "/tools/counts/api/spaces"
        assert (await c.get(f"{base}/s/tables/t")).json() == {"table": "t", "count": 0}
        node.rdb_set(space, "t", "a", {"x": 1})
        node.rdb_set(space, "t", "b", {"x": 2})
        counted = await c.get(f"{base}/s/tables/t", params={"wait": str(TIMEOUT)})
        assert counted.json() == {"table": "t", "count": 2}
        assert (await c.get(f"{base}/nope/tables/t")).status_code == 404
    # The declaration the page shows is the one p2pspace makes for its own tool.
    [declaration] = doc_blocks("toml")
    declared = tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["entry-points"]
    assert tomllib.loads(declaration)["project"]["entry-points"] == {
        TOOLS_GROUP: declared[TOOLS_GROUP]
    }


LAZY_PROBE = """
import json, sys
import p2pspace.node.home
first = sorted(m for m in sys.modules if m.split(".")[0] in ("trio", "hypercorn", "starlette"))
import p2pspace.app.api
from p2pspace.app.api.registry import tool_route_providers
from p2pspace.tools.plugin import installed_plugins
tools = installed_plugins()
before = "p2pspace.app.api.discussion_routes" in sys.modules
tool_route_providers(tools)
after = "p2pspace.app.api.discussion_routes" in sys.modules
print(json.dumps({"first": first, "before": before, "after": after}))
"""


def test_tool_routes_load_only_when_a_server_starts() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The files the command line reads need no server library; loading the tools and importing
    # the api package loads no tool's routes until a server collects them.
    assert json.loads(proc.stdout) == {"first": [], "before": False, "after": True}
