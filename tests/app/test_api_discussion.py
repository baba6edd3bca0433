"""The discussion tool and presence through the local HTTP API, between two nodes on loopback.

Waits are on node state (``Node.wait_until``) and the event stream, each bounded; no sleeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from p2pspace.errors import LocalProtocolError
from p2pspace.node.node import Node
from p2pspace.tools.discussion import Discussion
from tests.helpers import TIMEOUT
from tests.helpers.api_client import EventClient, api_node, client_of

Json = dict[str, Any]


def tool(node: Node, space: str) -> Discussion:
    found = node.discussion(bytes.fromhex(space))
    assert found is not None
    return found


def status_on(node: Node, space: str, post: str) -> Callable[[], str]:
    """The post's sync status as ``node`` sees it now ("" while it has no such post)."""

    def describe() -> str:
        view = tool(node, space)
        try:
            return view.get(post).status.describe()
        except LocalProtocolError:
            return ""

    return describe


async def wait_status(node: Node, space: str, post: str, expected: str) -> None:
    describe = status_on(node, space, post)
    try:
        await node.wait_until(lambda: describe() == expected, timeout=TIMEOUT)
    except trio.TooSlowError:  # pragma: no cover - the failure report
        raise AssertionError(f"{post} on {node.name}: {describe()!r}, not {expected!r}") from None


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Json:
    """The JSON body of ``response``, which must have ``status``."""
    answer = await response
    assert answer.status_code == status, answer.text
    body: Json = answer.json()
    return body


async def error(response: Awaitable[httpx.Response], status: int, match: str) -> None:
    answer = await response
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert match in answer.json()["error"], answer.text


async def join_pair(a: Node, b: Node, ca: httpx.AsyncClient, cb: httpx.AsyncClient) -> str:
    """A creates space ``talk`` (with the discussion tool, the default) and B joins it."""
    space: str = (await ok(ca.post("/api/spaces", json={"name": "talk"}), 201))["id"]
    code = (await ok(ca.post("/api/spaces/talk/invitations", json={}), 201))["code"]
    joined = await ok(cb.post("/api/join", json={"code": code, "timeout_s": TIMEOUT}))
    assert (joined["space"], joined["inviter"]) == (space, "ann")
    await a.wait_until(lambda: b.endpoint_id in a.connections, timeout=TIMEOUT)
    return space


def presence(members: list[Json]) -> dict[str, tuple[bool, bool]]:
    return {m["name"]: (m["me"], m["online"]) for m in members}


# -- the token ----------------------------------------------------------------------------------

ABSENT = "0123456789abcdef~0123456789abcdef"  # a well-formed post id nobody made

ROUTES = [
    ("GET", "/tools/discussion/api/spaces/talk/topics"),
    ("POST", "/tools/discussion/api/spaces/talk/topics"),
    ("GET", "/tools/discussion/api/spaces/talk/threads/" + ABSENT),
    ("GET", "/tools/discussion/api/spaces/talk/posts/" + ABSENT),
    ("PUT", "/tools/discussion/api/spaces/talk/posts/" + ABSENT),
    ("DELETE", "/tools/discussion/api/spaces/talk/posts/" + ABSENT),
    ("POST", "/tools/discussion/api/spaces/talk/posts/0123456789abcdef~0123456789abcdef/replies"),
    ("POST", "/tools/discussion/api/spaces/talk/undo"),
    ("GET", "/tools/discussion/api/spaces/talk/last-change"),
    ("GET", "/api/spaces/talk/presence"),
    ("GET", "/"),
    ("GET", "/ui/app.js"),
]


async def test_every_route_needs_the_token(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", name="ann") as node:
        node.create_space("talk")
        topic = tool(node, node.spaces()[0].id.hex()).post("kept", "")
        async with client_of(node, token=None) as anonymous, client_of(node, token="wrong") as bad:
            for method, path in ROUTES:
                for client in (anonymous, bad):
                    body = {"title": "t", "body": "b"} if method in ("POST", "PUT") else None
                    response = await client.request(method, path, json=body)
                    assert response.status_code == 401, (method, path)
                    if path == "/":  # the page: a pointer to `p2pspace open`, in HTML
                        assert "p2pspace open" in response.text
                    else:
                        assert response.json() == {"error": "missing or wrong API token"}
            # ``?token=`` opens only the event stream, not these routes.
            listed = await anonymous.get(ROUTES[0][1], params={"token": node.api_token})
            assert listed.status_code == 401
        assert [t.post.id for t in tool(node, node.spaces()[0].id.hex()).topics()] == [topic]


# -- two nodes ----------------------------------------------------------------------------------


async def test_a_discussion_between_two_nodes(tmp_path: Path) -> None:
    with trio.fail_after(6 * TIMEOUT):
        async with (
            api_node(tmp_path / "a", name="ann") as a,
            api_node(tmp_path / "b", name="bob") as b,
            client_of(a) as ca,
            client_of(b) as cb,
        ):
            space = await join_pair(a, b, ca, cb)
            base = f"/tools/discussion/api/spaces/{space}"
            by_name = "/tools/discussion/api/spaces/talk"  # a name works as well as the id
            for node, client in ((a, ca), (b, cb)):
                members = (await ok(client.get(f"/api/spaces/{space}/presence")))["members"]
                me = node.name
                assert presence(members) == {
                    "ann": (me == "ann", True),
                    "bob": (me == "bob", True),
                }

            # A starts a thread; B sees it (with A's name) and acknowledges it.
            topic = (
                await ok(ca.post(f"{base}/topics", json={"title": "Lunch", "body": "?"}), 201)
            )["id"]
            await wait_status(a, space, topic, "delivered to 2 of 2")
            await b.wait_until(lambda: status_on(b, space, topic)() != "", timeout=TIMEOUT)
            topics = (await ok(cb.get(f"{by_name}/topics")))["topics"]
            assert len(topics) == 1
            summary = topics[0]
            assert summary["id"] == topic and summary["topic"] == topic
            assert summary["parent"] is None and summary["title"] == "Lunch"
            assert summary["preview"] == "?" and summary["author"] == a.endpoint_id.hex()
            assert "body" not in summary  # the list carries a preview line, not the text
            assert summary["author_name"] == "ann" and summary["reply_count"] == 0
            assert summary["deleted"] is False and summary["edited"] is None
            assert summary["last_activity"] == summary["created"]
            assert "replies" not in summary

            # B replies; A replies to that reply (nesting); the event stream on B shows A's reply.
            r1 = (await ok(cb.post(f"{base}/posts/{topic}/replies", json={"body": "noon"}), 201))[
                "id"
            ]
            assert r1.startswith(topic + ".")
            await a.wait_until(lambda: status_on(a, space, r1)() != "", timeout=TIMEOUT)
            events, response = await EventClient.open(b)  # subscribed once it answers
            try:
                assert response.status_code == 200
                reply = ca.post(f"{base}/posts/{r1}/replies", json={"body": "1pm?"})
                r2 = (await ok(reply, 201))["id"]
                event = await events.data()
                while event["type"] != "tool":
                    event = await events.data()
            finally:
                await events.aclose()
            assert event == {
                "type": "tool",
                "tool": "discussion",
                "kind": "added",
                "post": r2,
                "topic": topic,
                "by": a.endpoint_id.hex(),
                "space": space,
            }
            r3 = (await ok(cb.post(f"{base}/posts/{r2}/replies", json={"body": "ok"}), 201))["id"]
            await wait_status(a, space, r3, "delivered to 2 of 2")
            await wait_status(b, space, r2, "delivered to 2 of 2")

            thread = (await ok(ca.get(f"{base}/threads/{topic}")))["thread"]
            assert thread["id"] == topic and thread["title"] == "Lunch"
            [first] = thread["replies"]
            assert (first["id"], first["parent"], first["author_name"]) == (r1, topic, "bob")
            [second] = first["replies"]
            assert (second["id"], second["parent"], second["body"]) == (r2, r1, "1pm?")
            [third] = second["replies"]
            assert (third["id"], third["parent"], third["replies"]) == (r3, r2, [])
            assert third["status"] == "delivered to 2 of 2"
            assert (third["pending"], third["delivered"], third["members"]) == (False, 2, 2)
            assert (await ok(ca.get(f"{base}/threads/{r3}")))["thread"]["id"] == topic
            post = (await ok(cb.get(f"{base}/posts/{r2}")))["post"]
            assert post["body"] == "1pm?" and post["replies"] == []

            # Only the author changes a post.
            await error(cb.put(f"{base}/posts/{topic}", json={"body": "mine"}), 403, "author")
            await error(cb.delete(f"{base}/posts/{r2}"), 403, "author")
            edited = ca.put(f"{base}/posts/{topic}", json={"body": "Where?", "title": "Lunch!"})
            assert await ok(edited) == {"id": topic, "label": "'Lunch!'"}
            await error(
                ca.put(f"{base}/posts/{r2}", json={"body": "x", "title": "t"}), 400, "title"
            )

            # A tombstone keeps its place and its replies; undo brings the text back.
            assert (await ok(ca.get(f"{base}/last-change")))["change"]["kind"] == "edit"
            assert await ok(ca.delete(f"{base}/posts/{r2}")) == {"id": r2, "label": "reply “1pm?”"}
            change = (await ok(ca.get(f"{base}/last-change")))["change"]
            assert change["post"] == r2 and change["kind"] == "delete"
            assert change["fields"]["body"] == "1pm?"
            await error(ca.delete(f"{base}/posts/{r2}"), 409, "already deleted")
            await error(ca.put(f"{base}/posts/{r2}", json={"body": "y"}), 409, "was deleted")
            await b.wait_until(lambda: tool(b, space).get(r2).deleted, timeout=TIMEOUT)
            await error(cb.post(f"{base}/posts/{r2}/replies", json={"body": "z"}), 409, "deleted")
            thread = (await ok(cb.get(f"{base}/threads/{topic}")))["thread"]
            assert (thread["title"], thread["body"], thread["edited"] is not None) == (
                "Lunch!",
                "Where?",
                True,
            )
            tomb = thread["replies"][0]["replies"][0]
            assert (tomb["id"], tomb["deleted"], tomb["body"]) == (r2, True, "")
            assert [r["id"] for r in tomb["replies"]] == [r3]

            assert await ok(ca.post(f"{base}/undo")) == {
                "id": r2,
                "kind": "delete",
                "label": "reply “1pm?”",
            }
            await error(ca.post(f"{base}/undo"), 409, "nothing to undo")
            assert (await ok(ca.get(f"{base}/last-change"))) == {"change": None}
            await error(cb.post(f"{base}/undo"), 409, "nothing to undo")
            await b.wait_until(lambda: not tool(b, space).get(r2).deleted, timeout=TIMEOUT)
            restored = (await ok(cb.get(f"{base}/posts/{r2}")))["post"]
            assert (restored["deleted"], restored["body"]) == (False, "1pm?")
            topics = (await ok(ca.get(f"{base}/topics")))["topics"]
            assert topics[0]["reply_count"] == 3 and topics[0]["title"] == "Lunch!"


async def test_a_post_stays_pending_until_the_peer_acknowledges_it(tmp_path: Path) -> None:
    with trio.fail_after(6 * TIMEOUT):
        async with api_node(tmp_path / "a", name="ann") as a, client_of(a) as ca:
            async with api_node(tmp_path / "b", name="bob") as b, client_of(b) as cb:
                space = await join_pair(a, b, ca, cb)
                b_id = b.endpoint_id
            # B has stopped: A's post reaches no one yet.
            await a.wait_until(lambda: b_id not in a.connections, timeout=TIMEOUT)
            base = f"/tools/discussion/api/spaces/{space}"
            members = (await ok(ca.get(f"/api/spaces/{space}/presence")))["members"]
            assert presence(members) == {"ann": (True, True), "bob": (False, False)}
            topic = (await ok(ca.post(f"{base}/topics", json={"title": "Alone?"}), 201))["id"]
            post = (await ok(ca.get(f"{base}/posts/{topic}")))["post"]
            assert (post["status"], post["pending"], post["delivered"], post["members"]) == (
                "pending",
                True,
                1,
                2,
            )
            assert (await ok(ca.get(f"{base}/topics")))["topics"][0]["status"] == "pending"

            # B comes back (it dials A from its address book) and acknowledges the post.
            async with api_node(tmp_path / "b", name="bob") as b:
                await wait_status(a, space, topic, "delivered to 2 of 2")
                post = (await ok(ca.get(f"{base}/posts/{topic}")))["post"]
                assert (post["status"], post["pending"]) == ("delivered to 2 of 2", False)
                members = (await ok(ca.get(f"/api/spaces/{space}/presence")))["members"]
                assert presence(members) == {"ann": (True, True), "bob": (False, True)}
                assert tool(b, space).get(topic).title == "Alone?"


# -- one node: spaces without the tool, malformed requests ---------------------------------------


async def test_spaces_with_and_without_the_tool(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", name="ann") as node, client_of(node) as client:
        plain = await ok(client.post("/api/spaces", json={"name": "plain", "tool": "none"}), 201)
        talk = await ok(
            client.post("/api/spaces", json={"name": "talk", "tool": "discussion"}), 201
        )
        default = await ok(client.post("/api/spaces", json={"name": "other"}), 201)
        assert node.discussion(bytes.fromhex(plain["id"]), required=False) is None
        assert node.discussion(bytes.fromhex(talk["id"]), required=False) is not None
        assert node.discussion(bytes.fromhex(default["id"]), required=False) is not None
        await error(client.post("/api/spaces", json={"name": "x", "tool": "chess"}), 400, "tool")
        await error(client.post("/api/spaces", json={"name": "x", "tool": 1}), 400, "tool")
        await error(
            client.get("/tools/discussion/api/spaces/plain/topics"), 400, "no discussion tool"
        )
        members = (await ok(client.get("/api/spaces/plain/presence")))["members"]
        assert presence(members) == {"ann": (True, True)}
        assert await ok(client.get("/tools/discussion/api/spaces/talk/topics")) == {
            "topics": [],
            "limits": {"title": 200, "body": 24_000},
        }
        assert await ok(client.get("/tools/discussion/api/spaces/talk/last-change")) == {
            "change": None
        }


BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("GET", "/tools/discussion/api/spaces/nope/topics", None, 404, "no space"),
    ("GET", "/api/spaces/nope/presence", None, 404, "no space"),
    ("POST", "/tools/discussion/api/spaces/nope/undo", None, 404, "no space"),
    ("GET", "/tools/discussion/api/spaces/talk/threads/" + ABSENT, None, 404, "no topic"),
    ("GET", "/tools/discussion/api/spaces/talk/posts/" + ABSENT, None, 404, "no post"),
    (
        "GET",
        "/tools/discussion/api/spaces/talk/posts/0123456789abcdef~0123456789abcdef.0123456789abcdef~0123456789abcdef",
        None,
        404,
        "no post",
    ),
    ("PUT", "/tools/discussion/api/spaces/talk/posts/" + ABSENT, {"body": "x"}, 404, "no post"),
    ("DELETE", "/tools/discussion/api/spaces/talk/posts/" + ABSENT, None, 404, "no post"),
    ("GET", "/tools/discussion/api/spaces/talk/posts/hello", None, 400, "not a post id"),
    ("GET", "/tools/discussion/api/spaces/talk/threads/ABC", None, 400, "not a post id"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", {}, 400, "'title'"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", {"title": "  "}, 400, "empty"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", {"title": 5}, 400, "'title'"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", {"title": "t", "body": []}, 400, "'body'"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", {"title": "t" * 201}, 400, "longer"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", b"[1]", 400, "JSON object"),
    ("POST", "/tools/discussion/api/spaces/talk/topics", b"{oops", 400, "JSON"),
    ("POST", "/tools/discussion/api/spaces/talk/posts/TOPIC/replies", {}, 400, "'body'"),
    ("POST", "/tools/discussion/api/spaces/talk/posts/TOPIC/replies", {"body": ""}, 400, "empty"),
    (
        "POST",
        "/tools/discussion/api/spaces/talk/posts/TOPIC/replies",
        {"body": "b" * 24_001},
        400,
        "24000 bytes",
    ),
    ("PUT", "/tools/discussion/api/spaces/talk/posts/TOPIC", {}, 400, "'body'"),
    (
        "PUT",
        "/tools/discussion/api/spaces/talk/posts/TOPIC",
        {"body": "x", "title": 3},
        400,
        "'title'",
    ),
    ("POST", "/tools/discussion/api/spaces/talk/undo", None, 409, "nothing to undo"),
    ("GET", "/tools/discussion/api/spaces/talk/nothing", None, 404, "Not Found"),
    ("PATCH", "/tools/discussion/api/spaces/talk/posts/TOPIC", {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "match"), BAD_REQUESTS)
async def test_errors_map_to_json_statuses(
    tmp_path: Path, method: str, path: str, body: Any, status: int, match: str
) -> None:
    async with api_node(tmp_path / "a") as node, client_of(node) as client:
        space = node.create_space("talk").space_id.hex()
        topic = tool(node, space).post("A topic", "")
        path = path.replace("TOPIC", topic)
        if isinstance(body, bytes):
            response = await client.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
        else:
            response = await client.request(method, path, json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert match in response.json()["error"], response.text
        assert [t.post.id for t in tool(node, space).topics()] == [topic]
        assert tool(node, space).get(topic).body == ""
