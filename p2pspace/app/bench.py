"""``p2pspace bench``: the workloads of the performance issues, each with a same-run baseline.

* **W1 local commit** -- 50,000 one-command deltas (set a field on one of 1,000 records) created
  back to back on one durable endpoint, with one transaction per delta and with group commit.
  Baselines: bare SQLite insert of the same encoded bytes (same durability, same batching) and
  the Ed25519 sign rate.
* **W2 catch-up** -- endpoint B holds the first 25,000 of A's 50,000 deltas and catches up through
  the sync protocol (in process). Baseline: bare CBOR decode + SQLite insert of the same deltas.
* **W3 concurrent merge** -- 3 endpoints each create 16,667 deltas (10% on shared records) while
  disconnected, then connect; seconds to converge and undo/redo counts.
* **W4 latency** -- three trio nodes in one process, connected in a full mesh over TLS on
  loopback (B and C join through A's invitations, then C dials B). 2,000 one-delta commits
  (``rdb_set``) rotate among the nodes, one at a time: the next is made once both other nodes
  executed the previous one. Latency is from just before ``commit`` on the creator to the
  ``replica.listeners`` call on a receiver (both receivers are samples; the earlier and the later
  of the two are also reported apart, since one process runs all three nodes one after another).
  Baselines: the median round trip of a 64-byte message over bare trio TCP and over trio TLS on
  loopback.
* **W5 network catch-up** -- node B joined A's space, went offline; A made 100,000 deltas (group
  commit, not timed); B reopens on the same home and dials A. Seconds from the dial until B's
  vector equals A's; bytes B received (sync frames, TLS excluded, and TCP payload bytes, TLS
  included). Baseline: the stored size of the deltas B lacked.
* **W6 thread load** -- a space holding the discussion tool with 10,000 posts in 500 threads (one
  of them 200 posts, replies nested), made with group commit in the tool's record layout (not
  timed). A node serves its local API on 127.0.0.1; the figures are medians over several
  ``GET /api/spaces/{space}/discussion/topics`` (the thread list) and ``.../threads/{topic}``
  (the 200-post thread) requests on one keep-alive connection, response parsed. Baselines: the
  raw ``rdb`` scan of the same rows, a ``GET /api/status`` round trip, and the tool calls with
  ``json.dumps`` but without HTTP.

Every workload runs in a fresh temporary folder on the local disk with ``durability="full"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import socket
import sqlite3
import ssl
import statistics
import string
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
import h11  # hypercorn's HTTP/1.1 engine (a dependency of the API), here as W6's client
import trio

from p2pspace.core.delta import Command, Delta
from p2pspace.core.identity import Identity
from p2pspace.core.replica import ExecutedListener, Replica
from p2pspace.engines import members, rdb
from p2pspace.node.node import Node, PeerConnection, open_node
from p2pspace.node.tls import client_context, server_context
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.syncstate import PeerState
from p2pspace.testing.loopback import connect, pump
from p2pspace.tools import discussion

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
GROUP = 1024  # one transaction and one signature per chain (MAX_CHAIN)


def _endpoint(root: Path, name: str) -> Endpoint:
    return Endpoint(root / name, seed=f"bench-{name}".encode(), name=name)


def _records(ep: Endpoint, space: bytes, count: int) -> None:
    for start in range(0, count, GROUP):
        ep.create_many(
            space,
            [[rdb.create("t", f"r{k}", {"v": 0})] for k in range(start, min(count, start + GROUP))],
            time=0,
        )


def _set_commands(
    rng: random.Random, n: int, records: int, prefix: str = "r"
) -> list[list[Command]]:
    return [
        [rdb.set_fields("t", f"{prefix}{rng.randrange(records)}", {"v": rng.randrange(1 << 30)})]
        for _ in range(n)
    ]


def _create_grouped(ep: Endpoint, space: bytes, batches: Sequence[Sequence[Command]]) -> None:
    for start in range(0, len(batches), GROUP):
        ep.create_many(space, batches[start : start + GROUP], time=1)


def _sqlite_baseline(path: Path, blobs: Sequence[bytes], group: int) -> float:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE log (space BLOB, creator BLOB, seq INTEGER, wire BLOB, "
        "PRIMARY KEY (space, creator, seq)) WITHOUT ROWID"
    )
    space, creator = b"s" * 16, b"c" * 16
    started = time.perf_counter()
    for start in range(0, len(blobs), group):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO log VALUES (?, ?, ?, ?)",
            ((space, creator, start + i, b) for i, b in enumerate(blobs[start : start + group])),
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(blobs) / elapsed


def w1(
    root: Path, *, deltas: int = 50_000, records: int = 1_000, single: int | None = None
) -> dict[str, Any]:
    rng = random.Random(1)
    ep = _endpoint(root, "w1")
    space = ep.create_space("w1", time=0).space_id
    _records(ep, space, records)
    batches = _set_commands(rng, deltas, records)
    single_n = deltas if single is None else single
    started = time.perf_counter()
    for commands in batches[:single_n]:
        ep.create(space, commands, time=1)
    single_rate = single_n / (time.perf_counter() - started)
    started = time.perf_counter()
    _create_grouped(ep, space, batches)
    group_rate = deltas / (time.perf_counter() - started)
    replica = ep.replica(space)
    wires = [w for _c, _s, _r, w in replica.store.iter_log(space)][-deltas:]
    ep.close()
    sqlite_rate = _sqlite_baseline(root / "w1-baseline.sqlite3", wires, GROUP)
    from p2pspace.core.identity import Identity

    ident = Identity.from_seed(b"bench-sign")
    sample = wires[: min(len(wires), 5000)]
    started = time.perf_counter()
    for wire in sample:
        ident.sign(wire)
    sign_rate = len(sample) / (time.perf_counter() - started)
    return {
        "workload": "W1",
        "deltas": deltas,
        "single_deltas": single_n,
        "deltas_per_s_single": round(single_rate),
        "deltas_per_s_group": round(group_rate),
        "baseline_sqlite_per_s": round(sqlite_rate),
        "baseline_sign_per_s": round(sign_rate),
    }


def _member_pair(root: Path, names: Sequence[str]) -> tuple[list[Endpoint], bytes]:
    eps = [_endpoint(root, n) for n in names]
    first = eps[0]
    replica = first.create_space("bench", time=0, nonce=b"\x01" * 16)
    first.create(
        replica.space_id,
        [
            members.add_command(member_id=e.endpoint_id, key=e.identity.public_key, name=e.name)
            for e in eps[1:]
        ],
        time=0,
    )
    for e in eps[1:]:
        e.join_space(replica.genesis.wire())
    return eps, replica.space_id


def w2(root: Path, *, deltas: int = 50_000, records: int = 1_000) -> dict[str, Any]:
    rng = random.Random(2)
    (a, b), space = _member_pair(root, ["w2a", "w2b"])
    _records(a, space, records)
    _create_grouped(a, space, _set_commands(rng, deltas, records))
    ra, rb = a.replica(space), b.replica(space)
    wires = [w for _c, _s, _r, w in ra.store.iter_log(space)]
    half = len(wires) - deltas // 2
    for start in range(0, half, 4096):
        rb.receive(wires[start : min(half, start + 4096)])
    # What B lacks is measured from its vector: a group-commit chain cut by the split point
    # stays pending in B until its signed delta arrives, so those deltas are sent too.
    have = rb.vector
    missing = [w for c, s, _r, w in ra.store.iter_log(space) if s > have.get(c, 0)]
    started = time.perf_counter()
    link = connect(a, b)
    pump([link])
    elapsed = time.perf_counter() - started
    converged = ra.vector == rb.vector and ra.state_digest() == rb.state_digest()
    a.close()
    b.close()
    # Baseline: bare decode of the same deltas and a batched SQLite insert, same durability.
    db = sqlite3.connect(str(root / "w2-baseline.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE log (creator BLOB, seq INTEGER, wire BLOB, "
        "PRIMARY KEY (creator, seq)) WITHOUT ROWID"
    )
    started = time.perf_counter()
    for start in range(0, len(missing), 1024):
        rows = []
        for i, wire in enumerate(missing[start : start + 1024]):
            body, _sig = cbor2.loads(wire)
            value = cbor2.loads(body)
            rows.append((value[2], start + i, wire))
        db.execute("BEGIN")
        db.executemany("INSERT INTO log VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
    floor = len(missing) / (time.perf_counter() - started)
    db.close()
    return {
        "workload": "W2",
        "deltas": len(missing),
        "seconds": round(elapsed, 3),
        "bytes": link.bytes_a_to_b,
        "stored_bytes": sum(len(w) for w in missing),
        "deltas_per_s": round(len(missing) / elapsed),
        "baseline_floor_per_s": round(floor),
        "converged": converged,
    }


def w3(root: Path, *, per_endpoint: int = 16_667, shared: int = 100) -> dict[str, Any]:
    rng = random.Random(3)
    eps, space = _member_pair(root, ["w3a", "w3b", "w3c"])
    _records(eps[0], space, shared)
    # Every endpoint first receives the shared records (one short sync), then goes offline.
    links = [connect(eps[0], eps[1]), connect(eps[0], eps[2]), connect(eps[1], eps[2])]
    pump(links)
    for ep in eps:
        for session in list(ep.sessions):
            ep.close_session(session)
    undo_counts: dict[Any, int] = {}
    for n, ep in enumerate(eps):
        own_prefix = f"own{n}-"
        batches: list[list[Command]] = []
        for k in range(per_endpoint):
            if rng.random() < 0.1:
                batches.append(
                    [
                        rdb.set_fields(
                            "t", f"r{rng.randrange(shared)}", {"v": rng.randrange(1 << 30)}
                        )
                    ]
                )
            else:
                batches.append([rdb.create("t", f"{own_prefix}{k}", {"v": k})])
        _create_grouped(ep, space, batches)
    for n, ep in enumerate(eps):
        ep.replica(space).undo_listener = _undo_counter(undo_counts, n)
    started = time.perf_counter()
    links = [connect(eps[0], eps[1]), connect(eps[0], eps[2]), connect(eps[1], eps[2])]
    pump(links)
    elapsed = time.perf_counter() - started
    replicas = [ep.replica(space) for ep in eps]
    converged = (
        all(r.vector == replicas[0].vector for r in replicas)
        and len({r.order_digest() for r in replicas}) == 1
        and len({r.state_digest() for r in replicas}) == 1
    )
    undone = sum(r.stats.undone for r in replicas)
    redone = sum(r.stats.redone for r in replicas)
    for ep in eps:
        ep.close()
    return {
        "workload": "W3",
        "deltas": per_endpoint * 3,
        "seconds": round(elapsed, 3),
        "undone": undone,
        "redone": redone,
        "max_undos_per_delta": max(undo_counts.values(), default=0),
        "converged": converged,
    }


def _undo_counter(counts: dict[Any, int], n: int) -> Callable[[Sequence[Any]], None]:
    def count(ids: Sequence[Any]) -> None:
        for did in ids:
            counts[(n, did)] = counts.get((n, did), 0) + 1

    return count


# -- W4 and W5: trio nodes over TLS on loopback --------------------------------------------------

NET_TIMEOUT = 120.0  # generous: the bench shares the machine; a hang still ends


@contextlib.contextmanager
def _quiet_node_log() -> Iterator[None]:
    """Connections that close on purpose (W5's offline node) log warnings; keep them out."""
    logger = logging.getLogger("p2pspace.node")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open_node(home: Path, name: str) -> contextlib.AbstractAsyncContextManager[Node]:
    return open_node(
        home, listen=("127.0.0.1", 0), discovery=False, api=None, name=name, durability="full"
    )


def _percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def _echo_rtt(
    rounds: int,
    *,
    server_ctx: ssl.SSLContext | None = None,
    client_ctx: ssl.SSLContext | None = None,
) -> float:
    """Median round trip (seconds) of a 64-byte message over trio TCP (or TLS) on loopback."""
    message = b"x" * 64
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.abc.Stream) -> None:
        if server_ctx is not None:
            stream = trio.SSLStream(stream, server_ctx, server_side=True)
        try:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, serve, listeners))
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream: trio.abc.Stream = tcp
        if client_ctx is not None:
            stream = trio.SSLStream(tcp, client_ctx, server_hostname=None)
        try:
            for _ in range(rounds + 20):  # the first 20 warm up (and run the TLS handshake)
                started = time.perf_counter()
                await stream.send_all(message)
                got = 0
                while got < len(message):
                    got += len(await stream.receive_some(4096))
                samples.append(time.perf_counter() - started)
        finally:
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()
    return statistics.median(samples[20:])


def _mesh_live(nodes: Sequence[Node], space: bytes) -> bool:
    for node in nodes:
        for other in nodes:
            if other is node:
                continue
            machine = node.peer_sync.get((space, other.endpoint_id))
            if machine is None or machine.state is not PeerState.LIVE:
                return False
    return True


class _Arrivals:
    """When each awaited delta executed on each receiving node (fed by ``replica.listeners``)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[bytes, int], set[int]] = {}
        self.times: dict[tuple[bytes, int], list[float]] = {}
        self.done = trio.Event()

    def expect(self, key: tuple[bytes, int], receivers: set[int]) -> None:
        self.done = trio.Event()
        self.waiting[key] = receivers
        self.times[key] = []

    def listener(self, index: int) -> ExecutedListener:
        def on_executed(_replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
            now = time.perf_counter()
            for delta, _wire in executed:
                key = (delta.creator, delta.seq)
                receivers = self.waiting.get(key)
                if receivers is None or index not in receivers:
                    continue
                receivers.discard(index)
                self.times[key].append(now)
                if not receivers:
                    del self.waiting[key]
                    self.done.set()

        return on_executed


async def _w4(root: Path, deltas: int, warmup: int) -> dict[str, Any]:
    rounds = max(200, min(deltas, 2000))
    baseline_tcp = await _echo_rtt(rounds)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(_open_node(root / name, name))
            for name in ("w4a", "w4b", "w4c")
        ]
        a, b, c = nodes
        baseline_tls = await _echo_rtt(
            rounds,
            server_ctx=server_context(a.home, a.endpoint.identity),
            client_ctx=client_context(b.home, b.endpoint.identity),
        )
        space = a.create_space("w4").space_id
        await b.join(a.invite(space), timeout=NET_TIMEOUT)
        await c.join(a.invite(space), timeout=NET_TIMEOUT)
        c.add_peer(*b.listen_addresses[0])  # full mesh: B and C also talk directly
        await a.wait_until(lambda: _mesh_live(nodes, space), timeout=NET_TIMEOUT)
        replicas = [n.replica(space) for n in nodes]
        arrivals = _Arrivals()
        for index, replica in enumerate(replicas):
            replica.listeners.append(arrivals.listener(index))
        duplicates_before = sum(r.stats.duplicates for r in replicas)

        latencies: list[float] = []
        first: list[float] = []
        second: list[float] = []
        commits: list[float] = []
        for i in range(warmup + deltas):
            creator = i % 3
            started = time.perf_counter()
            delta = nodes[creator].rdb_set(space, "t", f"r{i % 100}", {"v": i})
            committed = time.perf_counter()
            key = (delta.creator, delta.seq)
            arrivals.expect(key, {k for k in range(3) if k != creator})
            with trio.fail_after(NET_TIMEOUT):
                await arrivals.done.wait()
            times = arrivals.times.pop(key)
            if i < warmup:
                continue
            commits.append(committed - started)
            latencies += [t - started for t in times]
            first.append(min(times) - started)
            second.append(max(times) - started)
        converged = all(r.vector == replicas[0].vector for r in replicas) and (
            len({r.state_digest() for r in replicas}) == 1
        )
        duplicates = sum(r.stats.duplicates for r in replicas) - duplicates_before
    return {
        "workload": "W4",
        "deltas": deltas,
        "samples": len(latencies),
        "p50_ms": _ms(_percentile(latencies, 0.5)),
        "p90_ms": _ms(_percentile(latencies, 0.9)),
        "p99_ms": _ms(_percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies)),
        "first_receiver_p50_ms": _ms(_percentile(first, 0.5)),
        "second_receiver_p50_ms": _ms(_percentile(second, 0.5)),
        "local_commit_p50_ms": _ms(_percentile(commits, 0.5)),
        "duplicates_per_delta": round(duplicates / (warmup + deltas), 2),
        "baseline_rtt_ms": _ms(baseline_tcp),
        "baseline_tls_rtt_ms": _ms(baseline_tls),
        "converged": converged,
    }


def w4(root: Path, *, deltas: int = 2_000, warmup: int = 30) -> dict[str, Any]:
    with _quiet_node_log():
        return trio.run(_w4, root, deltas, warmup)


# Offset of ``tcpi_bytes_received`` in Linux's ``struct tcp_info`` (since 4.1).
_TCPI_BYTES_RECEIVED = 128


def _tcp_bytes_received(peer: PeerConnection) -> int:
    """TCP payload bytes received on the connection's socket (Linux ``TCP_INFO``), else 0."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return 0
    stream = peer.conn.stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return 0
    try:
        info = stream.socket.getsockopt(socket.IPPROTO_TCP, option, 256)
    except OSError:
        return 0
    if len(info) < _TCPI_BYTES_RECEIVED + 8:
        return 0
    return int(struct.unpack_from("=Q", info, _TCPI_BYTES_RECEIVED)[0])


async def _w5(root: Path, deltas: int, records: int) -> dict[str, Any]:
    rng = random.Random(5)
    async with _open_node(root / "w5a", "w5a") as a:
        space = a.create_space("w5").space_id
        async with _open_node(root / "w5b", "w5b") as b:
            await b.join(a.invite(space), timeout=NET_TIMEOUT)
            b_id = b.endpoint_id
        await a.wait_until(lambda: b_id not in a.connections, timeout=NET_TIMEOUT)
        # B is offline: A makes the deltas B will lack (setup, not timed).
        records = min(records, deltas)
        _records(a.endpoint, space, records)
        _create_grouped(a.endpoint, space, _set_commands(rng, deltas - records, records))
        ra = a.replica(space)
        async with _open_node(root / "w5b", "w5b") as b:
            rb = b.replica(space)
            have = dict(rb.vector)
            missing = [w for c, s, _r, w in ra.store.iter_log(space) if s > have.get(c, 0)]
            a_id = a.endpoint_id
            started = time.perf_counter()
            b.add_peer(*a.listen_addresses[0])
            await b.wait_until(lambda: rb.vector == ra.vector, timeout=NET_TIMEOUT)
            elapsed = time.perf_counter() - started
            peer = b.connections[a_id]
            received = peer.session.stats.bytes_received
            tcp_received = _tcp_bytes_received(peer)
            deltas_received = peer.session.stats.deltas_received
            converged = ra.state_digest() == rb.state_digest()
    baseline = sum(len(w) for w in missing)
    return {
        "workload": "W5",
        "deltas": len(missing),
        "seconds": round(elapsed, 3),
        "deltas_per_s": round(len(missing) / elapsed),
        "deltas_received": deltas_received,
        "bytes": received,
        "tcp_bytes": tcp_received,
        "baseline_bytes": baseline,
        "bytes_ratio": round(received / baseline, 3),
        "converged": converged,
    }


def w5(root: Path, *, deltas: int = 100_000, records: int = 1_000) -> dict[str, Any]:
    with _quiet_node_log():
        return trio.run(_w5, root, deltas, records)


# -- W6: reading a large discussion through the local API ---------------------------------------


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
    topics = [rng.randbytes(8).hex() for _ in range(threads)]
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
        reply = f"{topic}.{rng.randbytes(8).hex()}"
        siblings.append(reply)
        fields = {"parent": parent, "body": text(rng.randrange(5, 60))}
        add(discussion.REPLY_PREFIX + topic, reply, fields)
    _create_grouped(ep, space, batches)
    return topics[0]


def _median_ms(samples: Sequence[float]) -> float:
    return _ms(statistics.median(samples))


def _time_calls(call: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return _median_ms(samples)


async def _w6(root: Path, posts: int, threads: int, big: int, requests: int) -> dict[str, Any]:
    async with open_node(
        root / "w6", listen=None, discovery=False, api=("127.0.0.1", 0), name="w6"
    ) as node:
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
        base = f"/api/spaces/{space.hex()}"
        try:
            listing = await client.get(f"{base}/discussion/topics")  # warm-up, and a check
            list_bytes = client.last_size
            thread = await client.get(f"{base}/discussion/threads/{big_topic}")
            thread_bytes = client.last_size
            list_samples, thread_samples, status_samples = [], [], []
            for _ in range(requests):
                started = time.perf_counter()
                await client.get(f"{base}/discussion/topics")
                list_samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                await client.get(f"{base}/discussion/threads/{big_topic}")
                thread_samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                await client.get("/api/status")
                status_samples.append(time.perf_counter() - started)
        finally:
            await client.aclose()
        view = replica.rdb(discussion.INSTANCE)
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
            "thread_list_ms": _median_ms(list_samples),
            "thread_ms": _median_ms(thread_samples),
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
            "baseline_http_ms": _median_ms(status_samples),
        }
        if (rows, result["threads"], thread_rows) != (posts, threads, result["thread_posts"]):
            raise RuntimeError(f"W6 read back something else than it wrote: {result}")
    return result


def _count_posts(post: dict[str, Any]) -> int:
    return 1 + sum(_count_posts(r) for r in post["replies"])


def w6(
    root: Path, *, posts: int = 10_000, threads: int = 500, big: int = 200, requests: int = 9
) -> dict[str, Any]:
    return trio.run(_w6, root, posts, threads, big, requests)


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
}

QUICK: dict[str, dict[str, Any]] = {
    "W1": {"deltas": 2000, "records": 100},
    "W2": {"deltas": 2000, "records": 100},
    "W3": {"per_endpoint": 500, "shared": 20},
    "W4": {"deltas": 300, "warmup": 10},
    "W5": {"deltas": 5000, "records": 100},
    "W6": {"posts": 1000, "threads": 50, "big": 100, "requests": 3},
}


def run(
    workloads: Sequence[str],
    *,
    quick: bool = False,
    repeat: int = 1,
    root: Path | None = None,
) -> list[dict[str, Any]]:
    """Run each workload ``repeat`` times; report the median of every numeric figure."""
    results = []
    for name in workloads:
        runs = []
        for _ in range(max(1, repeat)):
            with tempfile.TemporaryDirectory(prefix=f"p2pspace-bench-{name}-", dir=root) as tmp:
                kwargs = QUICK[name] if quick else {}
                runs.append(RUNNERS[name](Path(tmp), **kwargs))
        results.append(_median(runs))
    return results


def _median(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, bool):
            merged[key] = all(values)  # a flag (converged) must hold in every run
        elif isinstance(value, int | float):
            middle = statistics.median(values)
            merged[key] = round(middle) if isinstance(value, int) else round(middle, 3)
        else:
            merged[key] = value
    merged["runs"] = len(runs)
    return merged


def format_table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["workload  figure                     value"]
    for result in results:
        for key, value in result.items():
            if key == "workload":
                continue
            lines.append(f"{result['workload']:<9} {key:<26} {value}")
    return "\n".join(lines)


def to_json_lines(results: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r, sort_keys=True) for r in results)
