"""The trio node on loopback: connections, dedupe, reconnects, shutdown, sync states."""

from __future__ import annotations

import threading
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pspace.errors import LocalProtocolError, TransportError
from p2pspace.node.config import NodeConfig, parse_hostport
from p2pspace.node.node import Node
from p2pspace.sync.syncstate import PeerState
from tests.helpers import TIMEOUT
from tests.helpers.nodes import address, node_at


async def shared_pair(stack: AsyncExitStack, tmp: Path) -> tuple[Node, Node, bytes]:
    a = await stack.enter_async_context(node_at(tmp / "a", "ann"))
    b = await stack.enter_async_context(node_at(tmp / "b", "bob"))
    space = a.create_space("s").space_id
    await b.join(a.invite(space), timeout=TIMEOUT)
    return a, b, space


async def test_join_then_edits_flow_both_ways_and_states_go_live(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path)
        assert b.replica(space).can_create()
        members = {m.name: m.role for m in a.space_info(space).members}
        assert members == {"ann": "manager", "bob": "participant"}
        a.rdb_set(space, "t", "x", {"v": 1})
        b.rdb_set(space, "t", "y", {"v": 2})
        await a.wait_until(
            lambda: len(a.rdb_get(space, "t")) == 2 and len(b.rdb_get(space, "t")) == 2,
            timeout=TIMEOUT,
        )
        await a.wait_until(
            lambda: (
                a.peer_sync[(space, b.endpoint_id)].state is PeerState.LIVE
                and b.peer_sync[(space, a.endpoint_id)].state is PeerState.LIVE
            ),
            timeout=TIMEOUT,
        )
        status = b.status()
        (peer,) = status.peers
        assert peer.connected and peer.spaces == {space: PeerState.LIVE}
        assert status.to_json()["peers"][0]["spaces"] == {space.hex(): "live"}


async def test_simultaneous_dials_keep_one_connection(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path)
        # Both now dial each other at once, repeatedly: one connection per pair survives,
        # and both ends agree on which (dialled by the smaller endpoint id).
        a.add_peer(*address(b))
        b.add_peer(*address(a))
        await a.wait_until(
            lambda: all(
                t.attempts > 0 and t.peer is not None
                for n in (a, b)
                for t in n.targets.values()
                if t.static
            ),
            timeout=TIMEOUT,
        )
        a.rdb_set(space, "t", "x", {"v": 1})
        await a.wait_until(lambda: b.rdb_get(space, "t", "x") == {"x": {"v": 1}}, timeout=TIMEOUT)
        assert len(a.connections) == 1 and len(b.connections) == 1
        conn_a = a.connections[b.endpoint_id].conn
        conn_b = b.connections[a.endpoint_id].conn
        smaller = min(a.endpoint_id, b.endpoint_id)
        assert conn_a.dialed == (smaller == a.endpoint_id)
        assert conn_b.dialed == (smaller == b.endpoint_id)


async def test_peer_restart_reconnects_and_catches_up(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node_at(tmp_path / "a", "ann"))
        space = a.create_space("s").space_id
        async with node_at(tmp_path / "b", "bob") as b:
            await b.join(a.invite(space), timeout=TIMEOUT)
            b_port = address(b)[1]
            b_id = b.endpoint_id
        await a.wait_until(lambda: b_id not in a.connections, timeout=TIMEOUT)
        assert a.peer_sync[(space, b_id)].state is PeerState.DISCONNECTED
        for i in range(30):
            a.rdb_set(space, "t", f"r{i}", {"v": i})
        # B comes back on the same port; A's dialler (learnt from the join) reconnects.
        async with node_at(tmp_path / "b", "bob", listen=("127.0.0.1", b_port)) as b2:
            await b2.wait_until(lambda: len(b2.rdb_get(space, "t")) == 30, timeout=TIMEOUT)
            assert b2.replica(space).order_digest() == a.replica(space).order_digest()


async def test_static_peer_is_dialled_and_self_is_skipped(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path)
        c = await stack.enter_async_context(node_at(tmp_path / "c", "cy"))
        c.add_peer(*address(c))  # itself: dropped after the handshake shows its own key
        await c.wait_until(lambda: not c.targets, timeout=TIMEOUT)
        # C is no member: it connects to A but learns nothing about A's space.
        c.add_peer(*address(a))
        await c.wait_until(lambda: a.endpoint_id in c.connections, timeout=TIMEOUT)
        a.rdb_set(space, "t", "x", {"v": 1})
        await a.wait_until(lambda: b.rdb_get(space, "t", "x") != {}, timeout=TIMEOUT)
        session = c.connections[a.endpoint_id].session
        assert session.linked_spaces() == () and session.stats.deltas_received == 0
        assert space not in c.endpoint.replicas


async def test_second_process_on_same_home_and_busy_port_are_refused(tmp_path: Path) -> None:
    async with node_at(tmp_path / "a", "ann") as a:
        with pytest.raises(LocalProtocolError, match="another p2pspace process"):
            async with node_at(tmp_path / "a", "ann"):
                pass
        with pytest.raises(TransportError, match="cannot listen"):
            async with node_at(tmp_path / "b", "bob", listen=address(a)):
                pass


async def test_shutdown_leaves_no_tasks_threads_or_sockets(tmp_path: Path) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    tasks_before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    async with AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path)
        a.rdb_set(space, "t", "x", {"v": 1})
        await a.wait_until(lambda: b.rdb_get(space, "t", "x") != {}, timeout=TIMEOUT)
        port = address(a)[1]
    tasks_after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    assert tasks_after == tasks_before
    leftover = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    # trio's worker-thread cache may keep idle threads; zeroconf's must be gone.
    assert not [t for t in leftover if "zeroconf" in t.name.lower()]
    # The port is free again.
    async with node_at(tmp_path / "a", "ann", listen=("127.0.0.1", port)) as again:
        assert address(again)[1] == port


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport("[::1]:7455") == ("::1", 7455)
    assert parse_hostport("host", default_port=9) == ("host", 9)
    for bad in ("nohost", "h:0", "h:99999", ":80", "h:x"):
        with pytest.raises(LocalProtocolError):
            parse_hostport(bad)


def test_node_config_refuses_knobs_that_make_no_sense() -> None:
    config = NodeConfig(peers=[("h", 1)], interfaces=["127.0.0.1"])  # type: ignore[arg-type]
    assert config.peers == (("h", 1),) and config.interfaces == ("127.0.0.1",)
    with pytest.raises(TypeError):
        config.space_engines["db"] = "other"  # type: ignore[index]
    bad: list[dict[str, object]] = [
        {"listen": ("h", 70000)},
        {"peers": (("h", 0),)},
        {"durability": "sometimes"},
        {"space_engines": {}},
        {"stall_timeout": 0},
        {"tick_seconds": float("nan")},
        {"backoff_min": 5.0, "backoff_max": 1.0},
        {"dial_grace": -1},
        {"max_inbound": 0},
        {"event_queue": 1.5},
    ]
    for knobs in bad:
        with pytest.raises(LocalProtocolError):
            NodeConfig(**knobs)  # type: ignore[arg-type]
