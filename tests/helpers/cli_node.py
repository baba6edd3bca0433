"""``p2pspace run`` in a subprocess, for the command-line tests: started, read, stopped.

Its stdout lines are read by a thread into a queue; every wait on them is bounded by
``TIMEOUT``. The node listens on loopback only, with no discovery.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TIMEOUT = 30
NODE_ARGS = ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--no-discovery"]


class NodeProcess:
    """``p2pspace run`` in a subprocess; stdout lines are read by a thread into a queue."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home = home
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pspace", "run", "--home", str(home), *NODE_ARGS],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
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
def running(home: Path, log: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(home, log)
    try:
        yield node
    finally:
        node.stop()
