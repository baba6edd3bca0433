"""One p2pspace node in its own process, driven by JSON lines (for crash and network tests).

Run as a script::

    python tests/helpers/nodeproc.py --home H --listen HOST:PORT \\
        [--interface ADDR]... [--peer HOST:PORT]... [--discovery] [--name NAME]

It prints ``{"ready": true, "id": HEX, "listen": "HOST:PORT"}`` once the node listens, then reads
one JSON command per line on stdin and answers each with one JSON line on stdout (flushed):

* ``{"op": "create", "name": N}`` -> ``{"space": HEX}``
* ``{"op": "invite", "space": S}`` -> ``{"code": CODE}``
* ``{"op": "join", "code": CODE, "timeout": SECONDS}`` -> ``{"space": HEX}``
* ``{"op": "set", "space": S, "table": T, "record": R, "fields": {...}}`` -> ``{"ok": true}``
* ``{"op": "storm", "space": S, "count": N, "prefix": P, "table": T}``: writes records
  ``P-000000`` ... one delta each, printing ``{"acked": i}`` after the i-th (from 0) returned --
  it is durable then (the store commits with ``synchronous=FULL``) -- and finally
  ``{"ok": true, "count": N}``
* ``{"op": "wait", "timeout": SECONDS, ...}`` waits until every condition given holds:
  ``"space"`` with ``"records": N`` (table ``T`` has at least N records) and/or ``"vector":
  {creator hex: seq}`` (executed at least that, nothing pending or staged); ``"discovered": N``
  (peers seen by mDNS); ``"connected": N`` (authenticated connections) -> ``{"ok": true}``
* ``{"op": "get", "space": S, "table": T}`` -> ``{"records": {record: fields}}``
* ``{"op": "digest", "space": S}`` -> order and state digests, executed vector and counts
* ``{"op": "status"}`` -> ``Node.status()``

A command that fails answers ``{"error": "Type: message"}``; the node keeps running. End of
stdin closes the node cleanly. ``S`` is a space id, id prefix or name; ``T`` defaults to ``t``.

The test side is :class:`NodeProcess`, which starts the script (optionally under a command
prefix such as ``ip netns exec NS``) and exchanges lines with bounded waits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any

import trio

from p2pspace.errors import LocalProtocolError, P2PSpaceError
from p2pspace.node.config import NodeConfig, parse_hostport
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.sync.invitations import join_address

SCRIPT = Path(__file__).resolve()
DEFAULT_TABLE = "t"
READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
MAX_LINE = 1 << 20


# -- the child process ----------------------------------------------------------------------------


def emit(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, without blocking the trio thread."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data
            if len(buffer) > MAX_LINE:
                raise SystemExit("nodeproc: command line too long")
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield line.decode("utf-8")


def _space(node: Node, command: dict[str, Any]) -> bytes:
    if "space" not in command:
        raise LocalProtocolError(f"{command.get('op')!r} needs a space")
    return node.resolve_space(str(command["space"]))


async def handle(node: Node, command: dict[str, Any]) -> dict[str, Any]:
    op = command.get("op")
    table = str(command.get("table", DEFAULT_TABLE))
    if op == "create":
        return {"space": node.create_space(str(command["name"])).space_id.hex()}
    if op == "invite":
        return {"code": node.invite(_space(node, command))}
    if op == "join":
        joined = await node.join(command["code"], timeout=float(command.get("timeout", 30)))
        return {"space": joined.hex()}
    if op == "set":
        node.rdb_set(_space(node, command), table, str(command["record"]), dict(command["fields"]))
        return {"ok": True}
    if op == "storm":
        space = _space(node, command)
        count, prefix = int(command["count"]), str(command.get("prefix", "r"))
        for i in range(count):
            node.rdb_set(space, table, f"{prefix}-{i:06d}", {"i": i, "by": node.name})
            emit({"acked": i})
            await trio.lowlevel.checkpoint()  # let the node push and receive between writes
        return {"ok": True, "count": count}
    if op == "wait":
        wanted = _space(node, command) if "space" in command else None
        timeout = float(command.get("timeout", COMMAND_TIMEOUT))
        try:
            await node.wait_until(lambda: _holds(node, command, wanted, table), timeout=timeout)
        except trio.TooSlowError:
            return {"error": f"timed out after {timeout:g} s waiting for {command}"}
        return {"ok": True}
    if op == "get":
        return {"records": node.rdb_get(_space(node, command), table)}
    if op == "digest":
        replica = node.replica(_space(node, command))
        return {
            "order": replica.order_digest(),
            "state": replica.state_digest(),
            "executed": replica.executed_count(),
            "vector": {c.hex(): s for c, s in sorted(replica.vector.items())},
            "pending": replica.pending_count,
            "staged": replica.staged_count,
        }
    if op == "status":
        return node.status().to_json()
    raise LocalProtocolError(f"unknown op {op!r}")


def _holds(node: Node, command: dict[str, Any], space: bytes | None, table: str) -> bool:
    if "discovered" in command:
        seen = node.discovery.peers if node.discovery is not None else {}
        if len(seen) < int(command["discovered"]):
            return False
    if "connected" in command and len(node.connections) < int(command["connected"]):
        return False
    if space is None:
        return True
    if "records" in command and len(node.rdb_get(space, table)) < int(command["records"]):
        return False
    if "vector" in command:
        replica = node.replica(space)
        vector = replica.vector
        if replica.pending_count or replica.staged_count:
            return False
        for creator, seq in command["vector"].items():
            if vector.get(bytes.fromhex(creator), 0) < int(seq):
                return False
    return True


def _listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` where, unlike a peer address, port 0 (any free port) is allowed."""
    host, _sep, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"nodeproc: --listen wants HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


async def serve(args: argparse.Namespace) -> None:
    config = NodeConfig(
        listen=_listen_address(args.listen),
        interfaces=tuple(args.interface),
        peers=tuple(parse_hostport(p) for p in args.peer),
        discovery=args.discovery,
        name=args.name,
    )
    async with open_node(Path(args.home), config) as node:
        host, port = node.listen_addresses[0]
        emit({"ready": True, "id": node.endpoint_id.hex(), "listen": join_address(host, port)})
        async for line in stdin_lines():
            try:
                command = json.loads(line)
                if not isinstance(command, dict):
                    raise ValueError("a command is a JSON object")
                answer = await handle(node, command)
            except (P2PSpaceError, trio.TooSlowError, KeyError, ValueError, TypeError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            emit(answer)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: any)")
    parser.add_argument("--interface", action="append", default=[], help="mDNS address")
    parser.add_argument("--peer", action="append", default=[], help="HOST:PORT to keep dialling")
    parser.add_argument("--discovery", action="store_true", help="run mDNS discovery")
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    trio.run(serve, args)


# -- the test side --------------------------------------------------------------------------------


class NodeProcessError(Exception):
    """The child answered a command with an error, or broke the line protocol."""


class NodeProcess:
    """A running nodeproc child: send commands, read answers, kill it. Use :meth:`start`."""

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
        argv += ["--name", name]
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
            ready = await node.read(timeout=READY_TIMEOUT)
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

    async def read(self, *, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
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

    async def drain(self, *, timeout: float = COMMAND_TIMEOUT) -> list[dict[str, Any]]:
        """Every complete line left until the child's output ends (after it exited)."""
        out: list[dict[str, Any]] = []
        while (line := await self._line(timeout)) is not None:
            out.append(json.loads(line))
        return out

    async def answer(self, *, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
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
        ``args`` goes to the child (``wait``, ``join``); the read allows ten seconds more."""
        await self.send(op, **args)
        return await self.answer(timeout=float(args.get("timeout", COMMAND_TIMEOUT)) + 10)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind in the child."""
        self.process.kill()

    async def aclose(self, *, timeout: float = 10.0) -> None:
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
    nodes: Sequence[NodeProcess], space: str, *, timeout: float = COMMAND_TIMEOUT
) -> list[dict[str, Any]]:
    """Wait until every node has executed whatever any of them had; return their digests."""
    target = union([(await n.call("digest", space=space))["vector"] for n in nodes])
    for node in nodes:
        await node.call("wait", space=space, vector=target, timeout=timeout)
    return [await n.call("digest", space=space) for n in nodes]


if __name__ == "__main__":
    main()
