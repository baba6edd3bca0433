"""The test side of ``node_script.py``: a node in a process of its own, driven by JSON lines.

:class:`NodeProcess` starts the script (optionally under a command prefix such as ``ip netns
exec NS``), sends it commands and reads its answers, every read bounded by ``TIMEOUT``. The
commands and answers are listed in ``node_script.py``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import trio

from tests.helpers import TIMEOUT

SCRIPT = Path(__file__).resolve().with_name("node_script.py")


class NodeProcessError(Exception):
    """The child answered a command with an error, or broke the line protocol."""


class NodeProcess:
    """A running node_script.py child: send commands, read answers, kill it. Use :meth:`start`."""

    def __init__(self, process: trio.Process, log: IO[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.id = ""
        self.listen = ""
        self._log = log
        self._buffer = b""
        self._eof = False

    @classmethod
    async def start(
        cls,
        home: Path,
        *,
        listen: str,
        name: str,
        interfaces: Sequence[str] = (),
        peers: Sequence[str] = (),
        discovery: bool = False,
        prefix: Sequence[str] = (),
    ) -> NodeProcess:
        """Start a child and wait for its ready line. ``prefix``: e.g. ``ip netns exec NS``."""
        argv = [*prefix, sys.executable, str(SCRIPT), "--home", str(home), "--listen", listen]
        argv += ["--name", name, "--timeout", str(TIMEOUT)]
        for address in interfaces:
            argv += ["--interface", address]
        for peer in peers:
            argv += ["--peer", peer]
        if discovery:
            argv.append("--discovery")
        home.parent.mkdir(parents=True, exist_ok=True)
        log_path = home.parent / f"{home.name}.{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 -- closed by aclose()
        try:
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        except BaseException:
            log.close()
            raise
        node = cls(process, log, log_path)
        try:
            ready = await node.read()
            if ready.get("ready") is not True:
                raise NodeProcessError(f"unexpected first line {ready}")
        except BaseException:
            await node.aclose()
            raise
        node.id, node.listen = ready["id"], ready["listen"]
        return node

    def stderr(self) -> str:
        """What the child logged so far (for assertion messages)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text("utf-8", errors="replace")[-4000:]

    async def send(self, op: str, **args: Any) -> None:
        assert self.process.stdin is not None
        line = json.dumps({"op": op, **args}) + "\n"
        await self.process.stdin.send_all(line.encode())

    async def read(self, *, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next JSON line. NodeProcessError at end of output; TooSlowError on timeout."""
        line = await self._line(timeout)
        if line is None:
            raise NodeProcessError(f"the node exited; its log ends:\n{self.stderr()}")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise NodeProcessError(f"not a JSON object: {line!r}")
        return value

    async def _line(self, timeout: float) -> str | None:
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                if self._eof:
                    return None  # a partial last line (killed mid-write) is not a line
                data = await self.process.stdout.receive_some(65536)
                if not data:
                    self._eof = True
                    continue
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8")

    async def drain(self, *, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Every complete line left until the child's output ends (after it exited)."""
        out: list[dict[str, Any]] = []
        while (line := await self._line(timeout)) is not None:
            out.append(json.loads(line))
        return out

    async def answer(self, *, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The answer to the oldest command sent, skipping a storm's ``acked`` lines.

        Raises NodeProcessError if the child answered with an error.
        """
        while "acked" in (answer := await self.read(timeout=timeout)):
            pass
        if "error" in answer:
            raise NodeProcessError(answer["error"])
        return answer

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its answer (see :meth:`answer`). A ``timeout`` in
        ``args`` goes to the child (``wait``, ``join``); the read allows TIMEOUT more, for the
        answer to come back once the child's own wait has ended."""
        await self.send(op, **args)
        return await self.answer(timeout=float(args.get("timeout", TIMEOUT)) + TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind in the child."""
        self.process.kill()

    async def aclose(self, *, timeout: float = TIMEOUT) -> None:
        """Close stdin (the child shuts down cleanly), then wait; kill it if it lingers."""
        try:
            with trio.CancelScope(shield=True):
                if self.process.stdin is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.process.stdin.aclose()
                with trio.move_on_after(timeout):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
                if self.process.stdout is not None:
                    await self.process.stdout.aclose()
        finally:
            self._log.close()


def union(vectors: Sequence[dict[str, int]]) -> dict[str, int]:
    """The least vector covering every one given (``{creator hex: seq}``)."""
    out: dict[str, int] = {}
    for vector in vectors:
        for creator, seq in vector.items():
            out[creator] = max(out.get(creator, 0), seq)
    return out


async def converge(
    nodes: Sequence[NodeProcess], space: str, *, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Wait until every node has executed whatever any of them had; return their digests."""
    target = union([(await n.call("digest", space=space))["vector"] for n in nodes])
    for node in nodes:
        await node.call("wait", space=space, vector=target, timeout=timeout)
    return [await n.call("digest", space=space) for n in nodes]
