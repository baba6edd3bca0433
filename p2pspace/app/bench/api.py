"""W6 thread load: a large discussion read through the node's local HTTP API.

A space holding the discussion tool with 10,000 posts in 500 threads (one of them 200 posts,
replies nested), made with group commit in the tool's record layout (not timed). A node serves
its local API on 127.0.0.1; the figures are medians over several
``GET /tools/discussion/api/spaces/{space}/topics`` (the thread list) and
``.../threads/{topic}`` (the 200-post thread) requests on one keep-alive connection, response
parsed. Baselines: the raw ``rdb`` scan of the same rows, a ``GET /api/status`` round trip,
and the tool calls with ``json.dumps`` but without HTTP. ``search_ms`` is the median of a
one-word search over every post (``search_first_ms``: the first one, which builds the index);
``plugin_load_ms`` a node's start-up with its tools, against ``baseline_start_ms`` without
(:mod:`p2pspace.app.bench.plugins`).
"""

from __future__ import annotations

import json
import random
import string
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h11  # the HTTP/1.1 engine under the API's server, here as W6's client
import trio

from p2pspace.app.api import serve_api
from p2pspace.app.bench.bulk import create_grouped
from p2pspace.app.bench.plugins import plugin_load
from p2pspace.app.bench.report import median_ms
from p2pspace.core.delta import Command
from p2pspace.core.identity import Identity
from p2pspace.engines import members, rdb
from p2pspace.node.config import NodeConfig
from p2pspace.node.runtime import open_node
from p2pspace.sync.endpoint import Endpoint
from p2pspace.tools import discussion


class _HttpClient:
    """GET requests on one keep-alive HTTP/1.1 connection to the node's API (h11 over trio)."""

    def __init__(self, stream: trio.SocketStream, host: str, token: str) -> None:
        self.stream = stream
        self.host = host
        self.token = token
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.last_size = 0  # bytes of the last response body

    @classmethod
    async def open(cls, url: str, token: str) -> _HttpClient:
        hostport = url.removeprefix("http://")
        host, _, port = hostport.rpartition(":")
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        return cls(stream, hostport, token)

    async def get(self, path: str) -> Any:
        """The decoded JSON body of ``GET path``; raises RuntimeError unless the status is 200."""
        headers = [("Host", self.host), ("Authorization", f"Bearer {self.token}")]
        request = h11.Request(method="GET", target=path, headers=headers)
        await self.stream.send_all(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        status = 0
        body: list[bytes] = []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError(f"the API closed the connection during GET {path}")
        self.conn.start_next_cycle()
        raw = b"".join(body)
        self.last_size = len(raw)
        data = json.loads(raw)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data}")
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


def _fill_discussion(
    ep: Endpoint, space: bytes, *, posts: int, threads: int, big: int, authors: Sequence[bytes]
) -> str:
    """``posts`` posts in ``threads`` threads, the first thread ``big`` posts long, written as
    the tool writes them (one post a delta, its layout and ``rev``) with group commit. Returns
    the big thread's topic id."""
    if threads < 2 or not 1 <= big <= posts - threads + 1:
        raise ValueError("W6 needs 2+ threads and a big thread that fits in the posts")
    rng = random.Random(6)
    me = ep.endpoint_id
    seq = ep.replica(space).vector.get(me, 0)
    clock = 1_700_000_000_000
    # Ids as the tool makes them: in the namespace of the endpoint that creates the records.
    topics = [rdb.owned_id(me, rng.randbytes(8).hex()) for _ in range(threads)]
    # Every thread has a topic; the big one gets big - 1 replies, the rest share what is left.
    rest = posts - threads - (big - 1)
    owners = [0] * (big - 1) + [1 + rng.randrange(threads - 1) for _ in range(rest)]
    rng.shuffle(owners)
    thread_posts: dict[str, list[str]] = {t: [t] for t in topics}
    batches: list[list[Command]] = []

    def text(words: int) -> str:
        return " ".join(
            "".join(rng.choices(string.ascii_lowercase, k=rng.randrange(2, 10)))
            for _ in range(words)
        )

    def add(table: str, post_id: str, fields: dict[str, Any]) -> None:
        nonlocal seq, clock
        seq += 1
        clock += rng.randrange(1, 60_000)
        fields.update(author=authors[rng.randrange(len(authors))], created=clock, edited=0)
        fields.update(deleted=False, rev=[me, seq])
        batches.append(
            [rdb.create(table, post_id, fields, instance=discussion.INSTANCE, owned=True)]
        )

    for topic in topics:
        add(discussion.TOPICS, topic, {"title": text(6), "body": text(rng.randrange(10, 80))})
    for owner in owners:
        topic = topics[owner]
        siblings = thread_posts[topic]
        parent = siblings[0] if rng.random() < 0.4 else rng.choice(siblings)
        record = rdb.owned_id(me, rng.randbytes(8).hex())
        siblings.append(f"{topic}.{record}")  # a reply's post id names its thread
        fields = {"parent": parent, "body": text(rng.randrange(5, 60))}
        add(discussion.REPLY_PREFIX + topic, record, fields)
    create_grouped(ep, space, batches)
    return topics[0]


def _a_word(ep: Endpoint, space: bytes, topic: str) -> str:
    """A word of ``topic``'s title: what W6's search looks for (it is in the posts)."""
    fields = rdb.view(ep.replica(space), discussion.INSTANCE).get(discussion.TOPICS, topic)
    assert fields is not None
    return str(max(fields["title"].split(), key=len))


def _time_calls(call: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return median_ms(samples)


async def _w6(root: Path, posts: int, threads: int, big: int, requests: int) -> dict[str, Any]:
    async with (
        open_node(root / "w6", NodeConfig(listen=None, discovery=False, name="w6")) as node,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(serve_api, node, "127.0.0.1", 0)
        replica = node.create_space("w6")
        space = replica.space_id
        others = [Identity.from_seed(f"bench-w6-{i}".encode()) for i in range(4)]
        node.commit(
            space,
            [
                members.add_command(member_id=o.endpoint_id, key=o.public_key, name=f"m{i}")
                for i, o in enumerate(others)
            ],
        )
        authors = [node.endpoint_id, *(o.endpoint_id for o in others)]
        big_topic = _fill_discussion(
            node.endpoint, space, posts=posts, threads=threads, big=big, authors=authors
        )
        tool = node.discussion(space)
        assert tool is not None
        assert node.api_url is not None and node.api_token is not None
        client = await _HttpClient.open(node.api_url, node.api_token)
        base = f"/tools/discussion/api/spaces/{space.hex()}"
        word = _a_word(node.endpoint, space, big_topic)
        try:
            started = time.perf_counter()
            found = await client.get(f"{base}/search?q={word}")  # builds the index
            search_first = time.perf_counter() - started
            search_samples = []
            for _ in range(requests):
                started = time.perf_counter()
                await client.get(f"{base}/search?q={word}")
                search_samples.append(time.perf_counter() - started)
            listing = await client.get(f"{base}/topics")  # warm-up, and a check
            list_bytes = client.last_size
            thread = await client.get(f"{base}/threads/{big_topic}")
            thread_bytes = client.last_size
            list_samples, thread_samples, status_samples = [], [], []
            for _ in range(requests):
                started = time.perf_counter()
                await client.get(f"{base}/topics")
                list_samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                await client.get(f"{base}/threads/{big_topic}")
                thread_samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                await client.get("/api/status")
                status_samples.append(time.perf_counter() - started)
        finally:
            await client.aclose()
        view = rdb.view(replica, discussion.INSTANCE)
        reply_tables = [discussion.REPLY_PREFIX + t for t, _f in view.records(discussion.TOPICS)]

        def scan_all() -> int:
            rows = len(list(view.records(discussion.TOPICS)))
            return rows + sum(len(list(view.records(table))) for table in reply_tables)

        def scan_thread() -> int:
            view.get(discussion.TOPICS, big_topic)
            return 1 + len(list(view.records(discussion.REPLY_PREFIX + big_topic)))

        rows = scan_all()
        thread_rows = scan_thread()
        result = {
            "workload": "W6",
            "posts": rows,
            "threads": len(listing["topics"]),
            "thread_posts": _count_posts(thread["thread"]),
            "thread_list_ms": median_ms(list_samples),
            "thread_ms": median_ms(thread_samples),
            "thread_list_bytes": list_bytes,
            "thread_bytes": thread_bytes,
            "direct_thread_list_ms": _time_calls(
                lambda: json.dumps([t.to_json() for t in tool.topics()]), requests
            ),
            "direct_thread_ms": _time_calls(
                lambda: json.dumps(tool.thread(big_topic).to_json()), requests
            ),
            "baseline_scan_list_ms": _time_calls(scan_all, requests),
            "baseline_scan_thread_ms": _time_calls(scan_thread, requests),
            "baseline_http_ms": median_ms(status_samples),
            "search_ms": median_ms(search_samples),
            "search_first_ms": round(search_first * 1000, 3),
            "search_hits": len(found["results"]),
        }
        if not any(r["post"] == big_topic for r in found["results"]):
            raise RuntimeError(f"W6's search for {word!r} missed the topic that holds it")
        if (rows, result["threads"], thread_rows) != (posts, threads, result["thread_posts"]):
            raise RuntimeError(f"W6 read back something else than it wrote: {result}")
        nursery.cancel_scope.cancel()  # stops the API
    return result


def _count_posts(post: dict[str, Any]) -> int:
    return 1 + sum(_count_posts(r) for r in post["replies"])


def w6(
    root: Path, *, posts: int = 10_000, threads: int = 500, big: int = 200, requests: int = 9
) -> dict[str, Any]:
    result: dict[str, Any] = trio.run(_w6, root, posts, threads, big, requests)
    result.update(plugin_load(root / "start-up", runs=3 if requests > 3 else 1))
    return result


__all__ = ["w6"]
