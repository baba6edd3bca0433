"""A static peer (``--peer``) that does not answer is a WARNING once per backoff cycle -- at the
first failure and when retries reach their slowest -- not a line per attempt, nor silence."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT
from tests.helpers.nodes import node_at


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_static_peer_is_warned_about_once_per_cycle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    caplog.set_level(logging.WARNING, logger="p2pspace.node")
    # Retries double from 10 ms to 80 ms: the fourth failure reaches the slowest.
    knobs = {"peers": (("127.0.0.1", port),), "backoff_min": 0.01, "backoff_max": 0.08}
    async with node_at(tmp_path / "a", "ann", **knobs) as node:
        (target,) = [t for t in node.targets.values() if t.static]
        await node.wait_until(lambda: target.failures >= 12, timeout=TIMEOUT)
    lines = [r.getMessage() for r in caplog.records if "given with --peer" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"cannot reach 127.0.0.1:{port} (given with --peer): ")
    assert "at most every 0.08 s" in lines[0]
    assert lines[1].startswith(f"still cannot reach 127.0.0.1:{port} (given with --peer): ")
