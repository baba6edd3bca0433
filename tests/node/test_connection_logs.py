"""Logs that help: connections that churn or are refused make a bounded number of lines, each
naming the peer -- its name in a shared space where known, else its address.

* Five (virtual) seconds of churn on a MemoryNetwork under the autojump clock: a member whose
  connection is cut over and over, strangers that authenticate and leave with fresh keys, junk
  instead of TLS, an over-long frame. Hundreds of connections, a handful of lines; once the
  minute is over, one summary line each.
* The limiter alone: lines of one kind from ever new keys fold into one count.
* ``p2pspace run`` under five real seconds of the same churn on loopback: the node's lines stay
  few (a bound on lines, not on time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pspace.core.identity import Identity, short_id
from p2pspace.node.config import NodeConfig
from p2pspace.node.log_limits import LogLimiter
from p2pspace.node.node import Node
from p2pspace.sync.framing import HEADER, MAX_FRAME
from p2pspace.sync.syncstate import PeerState
from p2pspace.testing import MemoryNetwork, open_test_node
from p2pspace.testing.stranger import authenticate_stranger
from tests.helpers import TIMEOUT
from tests.helpers.nodes import attacker_context, node_at

VIRTUAL_TIMEOUT = 600.0
PORT = 7455
BASE = NodeConfig(listen=("0.0.0.0", PORT), discovery=False, durability="normal", jitter_seed=4)
CHURN = 5.0  # seconds of churn
PACE = 0.02  # the churners' pace: a new connection this often, each


@dataclasses.dataclass
class Churn:
    """Connections made and broken against one node, counted by kind."""

    tmp: Path
    connect: Callable[[str], Awaitable[trio.abc.Stream]]
    until: float
    made: Counter[str] = dataclasses.field(default_factory=Counter)

    async def strangers(self, host: str) -> None:
        """Fresh keys that authenticate and leave at once (or are refused: over the rate)."""
        while trio.current_time() < self.until:
            identity = Identity.from_seed(f"churn-{host}-{self.made['stranger']}".encode())
            stream = trio.SSLStream(
                await self.connect(host), attacker_context(self.tmp, identity), server_side=False
            )
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await authenticate_stranger(stream, identity)
            await trio.aclose_forcefully(stream)
            self.made["stranger"] += 1
            await trio.sleep(PACE)

    async def junk(self, host: str) -> None:
        """Bytes that are not TLS."""
        while trio.current_time() < self.until:
            stream = await self.connect(host)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
                while await stream.receive_some(4096):
                    pass
            await trio.aclose_forcefully(stream)
            self.made["junk"] += 1
            await trio.sleep(PACE)

    async def too_long(self, host: str) -> None:
        """An authenticated stranger that announces a frame over the stranger cap."""
        while trio.current_time() < self.until:
            identity = Identity.from_seed(f"long-{host}-{self.made['too long']}".encode())
            stream = trio.SSLStream(
                await self.connect(host), attacker_context(self.tmp, identity), server_side=False
            )
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await authenticate_stranger(stream, identity)
                await stream.send_all(MAX_FRAME.to_bytes(HEADER, "big"))
                while await stream.receive_some(4096):
                    pass
            await trio.aclose_forcefully(stream)
            self.made["too long"] += 1
            await trio.sleep(PACE)

    def start(self, nursery: trio.Nursery, prefix: str) -> None:
        for n in range(1, 6):
            nursery.start_soon(self.strangers, f"{prefix}.1.{n}")
        for n in range(1, 4):
            nursery.start_soon(self.junk, f"{prefix}.2.{n}")
        nursery.start_soon(self.too_long, f"{prefix}.3.1")


async def cut_member_over_and_over(
    a: Node, member: bytes, until: float, made: Counter[str]
) -> None:
    """Close A's connection to ``member``; it dials again at once; again, until ``until``."""
    while trio.current_time() < until:
        current = a.connections.get(member)
        if current is not None:
            current.scope.cancel()
            made["member"] += 1
        await a.wait_until(
            lambda old=current: a.connections.get(member) not in (None, old),  # type: ignore[misc]
            timeout=VIRTUAL_TIMEOUT,
        )
        await trio.sleep(PACE)


def node_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("p2pspace.node")]


async def test_five_seconds_of_churn_log_a_few_lines_naming_each_peer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="p2pspace")
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_test_node(
                tmp_path / "a", network=network, config=dataclasses.replace(BASE, name="ann")
            )
        )
        b = await stack.enter_async_context(
            open_test_node(
                tmp_path / "b", network=network, config=dataclasses.replace(BASE, name="bob")
            )
        )
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=VIRTUAL_TIMEOUT)
        await a.wait_until(
            lambda: a.peer_states.state(space, b.endpoint_id) is PeerState.LIVE,
            timeout=VIRTUAL_TIMEOUT,
        )
        before = len(node_lines(caplog))
        until = trio.current_time() + CHURN
        target = a.listen_addresses[0]
        churn = Churn(tmp_path, lambda host: network.host(host).connect(*target), until)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut_member_over_and_over, a, b.endpoint_id, until, churn.made)
            churn.start(nursery, "10.9")
        everything = node_lines(caplog)
        lines = everything[before:]
        made = sum(churn.made.values())
        assert made > 1000 and min(churn.made.values()) >= 50, churn.made
        assert len(lines) <= 30, "\n".join(lines)
        # Members by name, strangers by address.
        bob, ann = f"bob ({short_id(b.endpoint_id)})", f"ann ({short_id(a.endpoint_id)})"
        assert any(line.startswith(f"connected to {bob} at ") for line in everything), everything
        assert any(line.startswith(f"connected to {ann} at ") for line in everything), everything
        assert any(line.startswith(f"connection to {bob} closed") for line in lines), lines
        assert any("from 10.9.1.1: more than 10 handshakes a second" in line for line in lines)
        assert any(
            re.match(r"refused a connection from 10\.9\.2\.1: TransportError", line)
            for line in lines
        )
        assert any(" at 10.9.3.1 closed: FrameTooLargeError" in line for line in lines), lines
        # When the minute is over, each is summed up in one line.
        await a.wait_until(
            lambda: any(
                re.match(
                    rf"\d+ more like this in the last 60 s: connected to {re.escape(bob)}", line
                )
                for line in node_lines(caplog)
            ),
            timeout=VIRTUAL_TIMEOUT,
        )
        assert len(node_lines(caplog)) - before <= 2 * 30


def test_lines_of_one_kind_from_ever_new_keys_fold_into_one_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="p2pspace.test")
    now = [0.0]
    written: list[str] = []

    class Name:
        """Counts how often it is formatted: only lines that are written are."""

        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            written.append(self.text)
            return self.text

    limiter = LogLimiter(logging.getLogger("p2pspace.test"), now=lambda: now[0], per_kind=3)
    for n in range(100):
        host = f"10.0.0.{n}"
        limiter.log(logging.WARNING, (host, "refused"), "refused %s", Name(host), kind="refused")
    limiter.log(logging.WARNING, ("bob", "closed"), "closed %s", Name("bob"), kind="closed")
    now[0] = 61.0
    limiter.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused 10.0.0.0",
        "refused 10.0.0.1",
        "refused 10.0.0.2",
        "refused 10.0.0.3",  # the first past the three keys: the other peers' shared window
        "closed bob",  # another kind has keys of its own
        "96 more like this from other peers in the last 60 s: refused 10.0.0.3",
    ]
    assert written == ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "bob"]


# -- p2pspace run ----------------------------------------------------------------------------------


RUN_ARGS = ["--no-discovery", "--api", "127.0.0.1:0", "--listen"]  # the address follows


@contextlib.asynccontextmanager
async def p2pspace_run(home: Path, port: int, log: Path) -> AsyncIterator[trio.Process]:
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "p2pspace",
                "run",
                "--home",
                str(home),
                *RUN_ARGS,
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            assert process.stdout is not None
            out = b""
            with trio.fail_after(TIMEOUT):
                while b"\napi " not in out:
                    data = await process.stdout.receive_some(4096)
                    assert data, f"p2pspace run ended: {log.read_text()}"
                    out += data
            yield process
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.move_on_after(TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def test_p2pspace_run_under_churn_logs_few_lines(tmp_path: Path) -> None:
    # A's space and B's membership are made with A in this process; then A runs as
    # `p2pspace run` on the same home and port, and B (here) comes back to it.
    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        port = a.listen_addresses[0][1]
    log = tmp_path / "run.log"
    async with p2pspace_run(tmp_path / "a", port, log), node_at(tmp_path / "b", "bob") as b:
        await b.wait_until(lambda: bool(b.connections), timeout=TIMEOUT)
        (ann,) = b.connections
        start = len(log.read_text().splitlines())
        until = trio.current_time() + CHURN
        churn = Churn(
            tmp_path,
            lambda host: trio.open_tcp_stream("127.0.0.1", port, local_address=host),
            until,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut_member_over_and_over, b, ann, until, churn.made)
            churn.start(nursery, "127.9")
    everything = log.read_text().splitlines()
    # The node's own lines (the app logs each node event besides, at its own level).
    ours = [line for line in everything if re.search(r" p2pspace\.(node|sync|core)[.:]", line)]
    during = [line for line in everything[start:] if line in ours]
    assert sum(churn.made.values()) > 200 and churn.made["member"] >= 10, churn.made
    assert len(during) <= 30, "\n".join(during)
    bob = f"bob ({short_id(b.endpoint_id)})"
    assert any(f"connected to {bob} at 127.0.0.1:" in line for line in ours), ours
    assert any(f"connection to {bob} closed" in line for line in during), during
