"""W10 strangers' memory: what a node pays for each unauthenticated connection it holds.

The node runs in a process of its own on loopback (so the memory measured is the node's alone),
configured to hold every stranger it is sent: caps and handshake rate raised past the workload,
grace and stall deadlines past its length. This process opens ``strangers`` connections of each
kind and reads the node's resident memory (``/proc/PID/statm``, Linux; 0 elsewhere):

* **sockets** -- TCP connections that send nothing (the cheapest attack): before it has a byte
  to read the node holds a socket and no TLS state. A fresh node, so as not to count memory
  another step freed.
* **quiet** -- strangers with throwaway keys that complete TLS and the key proof and share no
  space: accepted connections with a session, the most expensive kind.
* **partial frames** -- the same strangers, each then holding a frame one byte short of the
  largest a stranger may send (``stranger_frame``): the most a stranger can make the node hold.

Figures: resident MB of each node idle (the baseline) and at each step, KiB per connection over
the baseline, and what the default cap on unauthenticated connections (``max_inbound``) bounds
the worst case at.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from p2pspace.core.identity import Identity
from p2pspace.node.config import NodeConfig
from p2pspace.node.tls import make_certificate
from p2pspace.sync.framing import HEADER
from p2pspace.testing.stranger import authenticate_stranger

STRANGERS_TIMEOUT = 300.0  # generous: the bench shares the machine; a hang still ends
CONCURRENT = 32  # strangers handshaking at once
MB = 1024 * 1024

# The node's process: prints its port, then answers each line on stdin with its figures.
NODE = """
import json, logging, os, sys, trio
from pathlib import Path
from p2pspace.node.config import NodeConfig
from p2pspace.node.runtime import open_node

def rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0

async def main(home, strangers):
    config = NodeConfig(
        listen=("127.0.0.1", 0), discovery=False, name="w10", durability="normal",
        max_inbound=strangers + 16, max_inbound_per_address=strangers + 16,
        handshake_rate=1e6, handshake_burst=strangers + 16,
        stranger_grace=3600.0, stall_timeout=3600.0,
    )
    async with open_node(Path(home), config) as node:
        print(node.listen_addresses[0][1], flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        while data := await stdin.receive_some(4096):
            buffer += data
            while b"\\n" in buffer:
                _line, _, buffer = buffer.partition(b"\\n")
                sessions = [c.session for c in node.connections.values()]
                figures = {
                    "rss": rss(),
                    "unproven": node.admission.unproven,
                    "connections": len(sessions),
                    "received": sum(s.stats.bytes_received for s in sessions),
                }
                print(json.dumps(figures), flush=True)

logging.getLogger("p2pspace").setLevel(logging.ERROR)
trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(4096)
            if not data:
                raise RuntimeError("the node's process ended")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


class _NodeProcess:
    """The node's process: its port, and its figures on request."""

    def __init__(self, process: trio.Process, lines: _Lines, port: int) -> None:
        self.process = process
        self.port = port
        self._lines = lines

    async def figures(self) -> dict[str, int]:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"?\n")
        figures: dict[str, int] = json.loads(await self._lines.next())
        return figures

    async def wait_for(self, key: str, value: int) -> dict[str, int]:
        """Its figures once ``key`` reached ``value``: polled, the node is another process."""
        with trio.fail_after(STRANGERS_TIMEOUT):
            while (figures := await self.figures())[key] < value:
                await trio.sleep(0.05)
        return figures


@contextlib.asynccontextmanager
async def _node_process(home: Path, strangers: int) -> AsyncIterator[_NodeProcess]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", NODE, str(home), str(strangers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = _Lines(process.stdout)
        with trio.fail_after(STRANGERS_TIMEOUT):
            port = int(await lines.next())
        yield _NodeProcess(process, lines, port)
    finally:
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def _client_context(tmp: Path) -> ssl.SSLContext:
    """A TLS client context with one throwaway certificate: the node pins nobody by client
    certificate (the key proof names the stranger), so every stranger may share it."""
    pem = tmp / "stranger.pem"
    pem.write_bytes(make_certificate(Identity.from_seed(b"w10-certificate")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(pem))
    return context


async def _stranger(
    port: int, context: ssl.SSLContext, n: int
) -> trio.SSLStream[trio.SocketStream]:
    """TLS, the key proof of a fresh key, then the node's Hello: an accepted stranger."""
    identity = Identity.from_seed(f"w10-stranger-{n}".encode())
    stream = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), context, server_side=False
    )
    try:
        await authenticate_stranger(stream, identity)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def _kib_each(figures: dict[str, int], baseline: dict[str, int], count: int) -> float:
    return round((figures["rss"] - baseline["rss"]) / count / 1024, 1)


async def _sockets(root: Path, count: int) -> dict[str, Any]:
    async with _node_process(root / "w10-sockets", count) as node:
        idle = await node.figures()
        sockets: list[trio.SocketStream] = []
        try:
            for _ in range(count):
                sockets.append(await trio.open_tcp_stream("127.0.0.1", node.port))
            held = await node.wait_for("unproven", count)
        finally:
            with trio.CancelScope(shield=True):
                for sock in sockets:
                    await trio.aclose_forcefully(sock)
    return {
        "sockets_baseline_rss_mb": round(idle["rss"] / MB, 1),
        "sockets_rss_mb": round(held["rss"] / MB, 1),
        "sockets_kib_per_connection": _kib_each(held, idle, count),
    }


async def _strangers(root: Path, count: int, stranger_frame: int) -> dict[str, Any]:
    context = _client_context(root)
    streams: list[trio.SSLStream[trio.SocketStream]] = []
    async with _node_process(root / "w10-strangers", count) as node:
        idle = await node.figures()
        limit = trio.CapacityLimiter(CONCURRENT)

        async def one(n: int) -> None:
            async with limit:
                streams.append(await _stranger(node.port, context, n))

        started = time.perf_counter()
        try:
            with trio.fail_after(STRANGERS_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for n in range(count):
                        nursery.start_soon(one, n)
            seconds = time.perf_counter() - started
            quiet = await node.wait_for("connections", count)
            # All but the last byte of the largest frame a stranger may send, from each.
            partial = stranger_frame.to_bytes(HEADER, "big") + bytes(stranger_frame - 1)
            for stream in streams:
                await stream.send_all(partial)
            full = await node.wait_for("received", quiet["received"] + count * len(partial))
        finally:
            with trio.CancelScope(shield=True):
                for stream in streams:
                    await trio.aclose_forcefully(stream)
    return {
        "held": full["connections"],
        "connect_seconds": round(seconds, 3),
        "baseline_idle_rss_mb": round(idle["rss"] / MB, 1),
        "quiet_rss_mb": round(quiet["rss"] / MB, 1),
        "partial_frames_rss_mb": round(full["rss"] / MB, 1),
        "quiet_kib_per_connection": _kib_each(quiet, idle, count),
        "partial_frames_kib_per_connection": _kib_each(full, idle, count),
    }


async def _w10(root: Path, strangers: int) -> dict[str, Any]:
    defaults = NodeConfig()
    result: dict[str, Any] = {
        "workload": "W10",
        "strangers": strangers,
        "stranger_frame": defaults.stranger_frame,
    }
    result.update(await _sockets(root, strangers))
    result.update(await _strangers(root, strangers, defaults.stranger_frame))
    worst = result["partial_frames_kib_per_connection"] * defaults.max_inbound / 1024
    result["max_inbound"] = defaults.max_inbound
    result["default_cap_worst_mb"] = round(worst, 1)
    return result


def w10(root: Path, *, strangers: int = 1_000) -> dict[str, Any]:
    return trio.run(_w10, root, strangers)


__all__ = ["STRANGERS_TIMEOUT", "w10"]
