"""``p2pspace`` commands in subprocesses, for the command-line tests: one-shot commands, and
``p2pspace run`` started, read and stopped.

A running node's stdout lines are read by a thread into a queue; every wait on a process, on
those lines or on the node's API is bounded by ``TIMEOUT``. The node listens on loopback only,
with no discovery.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tests.helpers import TIMEOUT

NODE_ARGS = ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--no-discovery"]


def cli(
    home: Path, *args: str, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``p2pspace ARGS --home HOME`` in a subprocess (``env``: its environment, default this
    one's); with ``ok``, it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "p2pspace", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        # A command may itself wait up to TIMEOUT (``join --timeout``), after starting up.
        timeout=2 * TIMEOUT,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


def fails(home: Path, *args: str, match: str) -> str:
    """Run a command that must fail with one ``p2pspace: error:`` line; that line."""
    proc = cli(home, *args, ok=False)
    assert proc.returncode != 0, args
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("p2pspace: error: "), proc.stderr
    assert match in lines[0], proc.stderr
    assert proc.stdout == ""
    return lines[0]


def status_of(home: Path) -> dict[str, Any]:
    """``p2pspace status --json`` of ``home``."""
    status: dict[str, Any] = json.loads(cli(home, "status", "--json").stdout)
    return status


def peer_live(status: dict[str, Any], peer: str, space: str) -> bool:
    """Whether ``status`` shows ``peer`` connected and live in ``space``."""
    return any(
        p["id"] == peer and p["connected"] and p["spaces"].get(space) == "live"
        for p in status["peers"]
    )


class NodeProcess:
    """``p2pspace run`` in a subprocess; stdout lines are read by a thread into a queue."""

    def __init__(self, home: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pspace", "run", "--home", str(home), *NODE_ARGS],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        self.info = self._announcement()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _announcement(self) -> dict[str, str]:
        """The ``endpoint``, ``listen`` and ``api`` lines printed at start."""
        info: dict[str, str] = {}
        deadline = time.monotonic() + TIMEOUT
        while "api" not in info:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the node exited: {self.stderr()}"
            key, _, value = line.partition(" ")
            info[key] = value
        return info

    @property
    def api_url(self) -> str:
        return self.info["api"]

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


@contextmanager
def running(home: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[NodeProcess]:
    """A :class:`NodeProcess` on ``home`` (stderr to ``log``), stopped when the block ends."""
    node = NodeProcess(home, log, env)
    try:
        yield node
    finally:
        node.stop()


def wait_live(node: NodeProcess, peer: str, space: str) -> dict[str, Any]:
    """``status --json`` of ``node`` once it shows ``peer`` live in ``space``.

    Subscribes to the node's event stream first, so a change after the status check is seen.
    """
    token = (node.home / "api.token").read_text().strip()
    request = urllib.request.Request(f"{node.api_url}/api/events?token={token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + TIMEOUT
    with opener.open(request, timeout=TIMEOUT) as events:
        while True:
            status = status_of(node.home)
            if peer_live(status, peer, space):
                return status
            # Until the next event (keepalive comments come every 15 s; the deadline holds).
            while True:
                assert time.monotonic() < deadline, status
                if events.readline().startswith(b"data: "):
                    break


def wait_until(node: NodeProcess, what: str, ready: Callable[[], bool]) -> None:
    """Until ``ready()`` holds, re-checked after each event of ``node``, within ``TIMEOUT``."""
    token = (node.home / "api.token").read_text().strip()
    request = urllib.request.Request(f"{node.api_url}/api/events?token={token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + TIMEOUT
    with opener.open(request, timeout=TIMEOUT) as events:
        while not ready():
            while True:
                assert time.monotonic() < deadline, f"waiting for {what}"
                if events.readline().startswith(b"data: "):
                    break


def rdb_records(home: Path, space: str, table: str) -> dict[str, Any]:
    """``rdb get SPACE TABLE --json`` of ``home`` (empty when the table has no records)."""
    out = cli(home, "rdb", "get", space, table, "--json", ok=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}
