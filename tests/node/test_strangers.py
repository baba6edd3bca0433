"""Bounded strangers: what unauthenticated connections can take from a node, and what not.

* A thousand idle sockets from fifty addresses on loopback: the node holds ``max_inbound`` of
  them, drops the idlest as more come, and a member still syncs and a joiner still joins.
* Two hundred authenticated strangers each announce a 4 MiB frame and trickle it: each is closed
  at the length prefix (the stranger cap), the process's memory stays flat, the node serves on.
* The per-address cap, dropping the idlest, and the handshake rate, in virtual time on a
  MemoryNetwork (exact arrival times, so "the idlest" is unambiguous).
* The stranger book alone, the knobs' checks, and the W10 figure.

Waits are on node state or on bytes from the node, bounded by ``TIMEOUT`` (real sockets) or
``VIRTUAL_TIMEOUT`` (the autojump clock); the attackers' own pace is the only sleep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pspace.app.bench import suite
from p2pspace.core.identity import Identity
from p2pspace.errors import FrameTooLargeError, LocalProtocolError
from p2pspace.node.config import NodeConfig
from p2pspace.node.events import PeerDisconnected
from p2pspace.node.strangers import StrangerBook, address_of
from p2pspace.sync.framing import HEADER, MAX_FRAME, frame
from p2pspace.sync.messages import Hello, Revision, encode_message
from p2pspace.sync.session import State
from p2pspace.testing import MemoryNetwork, open_test_node
from p2pspace.testing.stranger import authenticate_stranger
from tests.helpers import TIMEOUT
from tests.helpers.nodes import address, attacker_context, node_at
from tests.sync.endpoints import Net, space_of

VIRTUAL_TIMEOUT = 600.0
PORT = 7455
BASE = NodeConfig(listen=("0.0.0.0", PORT), discovery=False, durability="normal", jitter_seed=3)
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def file_descriptors() -> Iterator[None]:
    """Raise the soft limit on open files to the hard one: the attacks hold many sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4096
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
    raised = needed if hard == resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@contextlib.asynccontextmanager
async def idle_sockets(
    target: tuple[str, int], sources: list[str], each: int
) -> AsyncIterator[list[trio.SocketStream]]:
    """``each`` TCP connections from every source address that send nothing."""
    sockets: list[trio.SocketStream] = []
    try:
        for _ in range(each):
            for source in sources:
                sockets.append(await trio.open_tcp_stream(*target, local_address=source))
        yield sockets
    finally:
        with trio.CancelScope(shield=True):
            for sock in sockets:
                await trio.aclose_forcefully(sock)


async def stranger(
    target: tuple[str, int], tmp: Path, identity: Identity, source: str
) -> trio.SSLStream[trio.SocketStream]:
    """TLS and the key proof of a throwaway key, then the node's Hello: an accepted stranger."""
    tcp = await trio.open_tcp_stream(*target, local_address=source)
    stream = trio.SSLStream(tcp, attacker_context(tmp, identity), server_side=False)
    try:
        with trio.fail_after(TIMEOUT):
            await authenticate_stranger(stream, identity)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


# -- a thousand idle sockets ----------------------------------------------------------------------


async def test_a_member_syncs_and_a_joiner_joins_past_a_thousand_idle_sockets(
    tmp_path: Path, file_descriptors: None
) -> None:
    async with node_at(tmp_path / "a", "ann") as a:
        space = a.create_space("s").space_id
        async with node_at(tmp_path / "b", "bob") as b:
            await b.join(a.invite(space), timeout=TIMEOUT)
        code = a.invite(space)
        book, cap = a.admission.strangers, a.config.max_inbound
        sources = [f"127.0.4.{n}" for n in range(1, 51)]
        async with idle_sockets(address(a), sources, 20) as sockets:
            # Every slot is taken by an idle socket, and the rest were let in by dropping the
            # idlest: per address, then over all.
            await a.wait_until(lambda: book.dropped == len(sockets) - cap, timeout=TIMEOUT)
            assert a.admission.unproven == cap
            assert max(book.held_from(s) for s in sources) <= a.config.max_inbound_per_address
            record = a.rdb_set(space, "t", "during", {"v": 1})
            # B, a member, comes back and syncs; C redeems an invitation: both over the cap.
            async with node_at(tmp_path / "b", "bob") as b, node_at(tmp_path / "c", "cy") as c:
                await b.wait_until(
                    lambda: b.replica(space).vector.get(a.endpoint_id, 0) >= record.seq,
                    timeout=TIMEOUT,
                )
                assert await c.join(code, timeout=TIMEOUT) == space
                assert c.rdb_get(space, "t", "during") == {"during": {"v": 1}}
            # Nothing was refused: no idle socket timed out to make room for them, nor were
            # they turned away (dropping the idlest to make room is not a refusal).
            assert a.refused == 0
            assert a.admission.unproven <= cap


# -- strangers that announce 4 MiB frames ---------------------------------------------------------


async def _announce_and_trickle(stream: trio.SSLStream[trio.SocketStream]) -> None:
    """A 4 MiB length prefix, then the frame in pieces until the node stops taking them."""
    chunk = bytes(16 * 1024)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(MAX_FRAME.to_bytes(HEADER, "big"))
        for _ in range(MAX_FRAME // len(chunk)):
            await stream.send_all(chunk)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
async def test_strangers_announcing_4_mib_frames_are_closed_and_cost_no_memory(
    tmp_path: Path, file_descriptors: None
) -> None:
    count, sources = 200, [f"127.0.5.{n}" for n in range(1, 21)]
    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        streams: list[trio.SSLStream[trio.SocketStream]] = []
        limit = trio.CapacityLimiter(25)

        async def arrive(n: int) -> None:
            async with limit:
                identity = Identity.from_seed(f"announcer-{n}".encode())
                streams.append(await stranger(address(a), tmp_path, identity, sources[n % 20]))

        try:
            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(arrive, n)
            await a.wait_until(lambda: len(a.connections) == count + 1, timeout=TIMEOUT)
            gc.collect()
            before, refused = rss(), a.refused
            with a.subscribe() as events:
                with trio.fail_after(TIMEOUT):
                    async with trio.open_nursery() as nursery:
                        for stream in streams:
                            nursery.start_soon(_announce_and_trickle, stream)
                grown = rss() - before
                closed: list[str] = []
                with trio.fail_after(TIMEOUT):
                    async for event in events:
                        if isinstance(event, PeerDisconnected):
                            closed.append(event.error)
                        if len(closed) == count:
                            break
        finally:
            with trio.CancelScope(shield=True):
                for stream in streams:
                    await trio.aclose_forcefully(stream)
        assert grown < 50 * 1024 * 1024, f"grew by {grown / 2**20:.0f} MB"
        cap = a.config.stranger_frame
        expected = f"FrameTooLargeError: frame of {MAX_FRAME} bytes exceeds the maximum of {cap}"
        assert closed == [expected] * count
        assert a.refused == refused + count
        # The member's connection was never disturbed, and a newcomer still gets in.
        assert list(a.connections) == [b.endpoint_id]
        record = a.rdb_set(space, "t", "after", {"v": 2})
        await b.wait_until(lambda: bool(b.rdb_get(space, "t", "after")), timeout=TIMEOUT)
        assert b.replica(space).vector[a.endpoint_id] >= record.seq
        newcomer = await stranger(
            address(a), tmp_path, Identity.from_seed(b"newcomer"), "127.0.0.1"
        )
        await trio.aclose_forcefully(newcomer)


async def test_members_are_not_held_to_the_stranger_cap(tmp_path: Path) -> None:
    # Both sides know the other a member from the start: the catch-up's frames, far over this
    # stranger cap, are not refused.
    small = {"stranger_frame": 1024}
    async with node_at(tmp_path / "a", "ann", **small) as a:
        space = a.create_space("s").space_id
        async with node_at(tmp_path / "b", "bob", **small) as b:
            await b.join(a.invite(space), timeout=TIMEOUT)
        for n in range(20):  # while B is away: records much larger than the cap
            a.rdb_set(space, "t", f"r{n}", {"text": "x" * 8000})
        async with node_at(tmp_path / "b", "bob", **small) as b:
            await b.wait_until(lambda: len(b.rdb_get(space, "t")) == 20, timeout=TIMEOUT)
            assert a.refused == b.refused == 0
            assert a.connections[b.endpoint_id].proven and b.connections[a.endpoint_id].proven


def test_the_stranger_cap_lifts_before_the_frame_after_the_hello_that_links(
    tmp_path: Path,
) -> None:
    # A peer not yet known a member when its connection opened, that becomes one (its grant
    # arrived meanwhile): its Hello links the space, and what follows in the same read -- here
    # a Revision naming many creators -- is over the stranger cap and must pass.
    net = Net(tmp_path)
    try:
        (a, b), space = space_of(net, "a", "b")
        hello = Hello(endpoint=b.endpoint_id, spaces=(space,), reply=False)
        many = tuple(sorted((Identity.from_seed(b"c%d" % n).endpoint_id, 1) for n in range(400)))
        revision = frame(encode_message(Revision(space=space, vector=many)))
        assert len(revision) > 4096
        linked = a.open_session(expected_peer=b.endpoint_id)
        linked.limit_frames(4096)
        a.receive_data(linked, frame(encode_message(hello)) + revision)
        assert linked.syncs(space) and linked.state is State.OPEN
        # Without a linked space the same frame is refused at its length prefix.
        stranger = a.open_session(expected_peer=Identity.from_seed(b"nobody").endpoint_id)
        stranger.limit_frames(4096)
        with pytest.raises(FrameTooLargeError):
            a.receive_data(stranger, revision)
        # Lifting the cap by hand (the peer proved a member otherwise) lets it through.
        lifted = a.open_session(expected_peer=b.endpoint_id)
        lifted.limit_frames(4096)
        lifted.limit_frames(None)
        a.receive_data(lifted, frame(encode_message(hello)))
        a.receive_data(lifted, revision)
        assert lifted.state is State.OPEN
    finally:
        net.close()


# -- caps and rate in virtual time ----------------------------------------------------------------


def config(**knobs: Any) -> NodeConfig:
    return dataclasses.replace(BASE, **knobs)


async def closed_by_node(stream: trio.abc.Stream) -> bool:
    """True if the node closed ``stream`` (it sends nothing before TLS)."""
    with trio.move_on_after(0.01):  # virtual: the node acts within the same instant
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_an_address_over_its_cap_pushes_out_its_own_idlest_and_the_total_cap_anyones(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    knobs = config(name="ann", max_inbound=6, max_inbound_per_address=3)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_test_node(tmp_path / "a", network=network, config=knobs)
        )
        book = a.admission.strangers
        target = a.listen_addresses[0]

        async def idle(host: str) -> trio.abc.Stream:
            stream = await network.host(host).connect(*target)
            stack.push_async_callback(stream.aclose)
            booked = book.admitted
            await a.wait_until(lambda: book.admitted > booked, timeout=VIRTUAL_TIMEOUT)
            await trio.sleep(0.5)  # the attacker's pace: one arrival every half second
            return stream

        one, two, three = [await idle("10.1.0.1") for _ in range(3)]
        await two.send_all(b"\x16")  # the first byte of a TLS record: "two" is not idle
        await trio.sleep(0.5)
        four = await idle("10.1.0.1")
        assert await closed_by_node(one)  # the idlest of its address
        five = await idle("10.1.0.1")
        assert await closed_by_node(three)  # "two" spoke more recently
        assert not any([await closed_by_node(s) for s in (two, four, five)])
        others = [await idle("10.1.0.2") for _ in range(3)]
        assert len(book) == 6 and book.held_from("10.1.0.1") == 3
        newcomer = await idle("10.1.0.3")  # over the total: the idlest of all goes
        assert await closed_by_node(two)
        assert not any([await closed_by_node(s) for s in (four, five, *others, newcomer)])
        assert (book.held_from("10.1.0.1"), book.held_from("10.1.0.2"), len(book)) == (2, 3, 6)
        assert book.dropped == 3 and a.refused == 0  # making room is not refusing

        # A member arriving now takes the place of the idlest, and syncs.
        b = await stack.enter_async_context(
            open_test_node(tmp_path / "b", network=network, config=config(name="bob"))
        )
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=VIRTUAL_TIMEOUT)
        assert await closed_by_node(four)
        assert a.connections[b.endpoint_id].proven


async def test_handshakes_over_the_rate_of_an_address_are_refused_before_tls(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="p2pspace.node")
    network = MemoryNetwork()
    knobs = config(name="ann", handshake_rate=1.0, handshake_burst=3)
    identity = Identity.from_seed(b"rate")
    async with open_test_node(tmp_path / "a", network=network, config=knobs) as a:
        target = a.listen_addresses[0]

        async def tls(host: str) -> bool:
            """True if the node ran TLS with us from ``host``."""
            raw = await network.host(host).connect(*target)
            stream = trio.SSLStream(raw, attacker_context(tmp_path, identity), server_side=False)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                return False
            finally:
                await trio.aclose_forcefully(stream)
            return True

        book = a.admission.strangers
        assert [await tls("10.2.0.1") for _ in range(4)] == [True, True, True, False]
        assert book.refused == 1
        assert await tls("10.2.0.2")  # another address has a bucket of its own
        await trio.sleep(1.0)  # the attacker waits for a token
        assert [await tls("10.2.0.1") for _ in range(2)] == [True, False]
        assert book.refused == 2
        # Counted among the node's refusals, with the five TLS-only clients it refused too.
        await a.wait_until(lambda: a.refused == 7, timeout=VIRTUAL_TIMEOUT)
    lines = [r.getMessage() for r in caplog.records if "handshakes a second" in r.getMessage()]
    assert lines == [
        "refused connections from 10.2.0.1: more than 1 handshakes a second (3 at once)"
    ]


# -- the stranger book and the knobs -------------------------------------------------------------


def test_the_book_drops_the_idlest_of_the_address_at_its_cap_then_of_all() -> None:
    book = StrangerBook(max_total=4, max_per_address=2, rate=1.0, burst=10)
    first = book.arrive("10.0.0.1", 0.0).admitted
    second = book.arrive("10.0.0.1", 1.0).admitted
    assert first is not None and second is not None
    first.active = 2.0  # it spoke; the second did not
    arrival = book.arrive("10.0.0.1", 3.0)
    assert arrival.dropped is second and arrival.cap == "address"
    book.arrive("10.0.0.2", 4.0)
    book.arrive("10.0.0.3", 5.0)
    assert len(book) == 4
    arrival = book.arrive("10.0.0.4", 6.0)
    assert arrival.dropped is first and arrival.cap == "total"
    assert len(book) == 4 and book.held_from("10.0.0.1") == 1
    assert book.dropped == 2
    book.leave(first)  # already gone: nothing changes
    assert len(book) == 4


def test_the_book_refuses_an_address_past_its_rate_and_refills_it() -> None:
    book = StrangerBook(max_total=100, max_per_address=100, rate=2.0, burst=3)
    took = [book.arrive("10.0.0.1", 0.0).admitted is not None for _ in range(4)]
    assert took == [True, True, True, False]
    assert book.arrive("10.0.0.2", 0.0).admitted is not None
    assert book.arrive("10.0.0.1", 0.25).admitted is None  # half a token
    assert book.arrive("10.0.0.1", 0.5).admitted is not None  # one token at 2 a second
    assert book.refused == 2


def test_the_book_keeps_a_bounded_number_of_rate_buckets() -> None:
    book = StrangerBook(max_total=10, max_per_address=10, rate=1.0, burst=1, max_addresses=8)
    for n in range(100):
        arrival = book.arrive(f"10.3.0.{n}", 0.0)
        if arrival.admitted is not None:
            book.leave(arrival.admitted)
    assert len(book._buckets) == 8


@pytest.mark.parametrize(
    ("host", "counted"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("::1", "::1"),
        ("node-a", "node-a"),
    ],
)
def test_addresses_are_counted_by_their_plain_form(host: str, counted: str) -> None:
    assert address_of(host) == counted


@pytest.mark.parametrize(
    "knobs",
    [
        {"max_inbound_per_address": 0},
        {"handshake_rate": 0},
        {"handshake_rate": float("inf")},
        {"handshake_burst": 0},
        {"stranger_frame": 512},
        {"stranger_frame": 64 * 1024 + 1},
    ],
)
def test_stranger_knobs_out_of_range_are_refused(knobs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        NodeConfig(**knobs)


def test_w8_reports_the_memory_of_strangers_over_the_idle_node(tmp_path: Path) -> None:
    (result,) = suite.run(["W10"], quick=True, root=tmp_path)
    assert result["workload"] == "W10"
    assert result["strangers"] == result["held"] == suite.QUICK["W10"]["strangers"]
    assert result["baseline_idle_rss_mb"] > 0
    assert result["quiet_rss_mb"] >= result["baseline_idle_rss_mb"]
    # Generous bounds (the is 128 KiB a connection): a regression shows, not noise.
    assert 0 < result["sockets_kib_per_connection"] < 64
    assert 0 < result["partial_frames_kib_per_connection"] < 256
    assert result["default_cap_worst_mb"] > 0
