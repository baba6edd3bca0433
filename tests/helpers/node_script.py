"""One p2pspace node in its own process, driven by JSON lines (for crash and network tests).

Run as a script::

    python tests/helpers/node_script.py --home H --listen HOST:PORT --timeout SECONDS \\
        [--interface ADDR]... [--peer HOST:PORT]... [--discovery] [--name NAME]

``--timeout`` is the bound of a ``join`` or ``wait`` command that names none of its own.

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

The test side is :class:`tests.helpers.nodeproc.NodeProcess`. The script runs by its path,
where the ``tests`` package is not importable: it imports only p2pspace, and the test side
hands it ``TIMEOUT`` with ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio

from p2pspace.errors import LocalProtocolError, P2PSpaceError
from p2pspace.node.config import NodeConfig, parse_hostport
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.sync.invitations import join_address

DEFAULT_TABLE = "t"
MAX_LINE = 1 << 20


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
                raise SystemExit("node_script: command line too long")
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield line.decode("utf-8")


def _space(node: Node, command: dict[str, Any]) -> bytes:
    if "space" not in command:
        raise LocalProtocolError(f"{command.get('op')!r} needs a space")
    return node.resolve_space(str(command["space"]))


async def handle(node: Node, command: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """The answer to one command; ``timeout`` bounds a join or wait that names no timeout."""
    op = command.get("op")
    table = str(command.get("table", DEFAULT_TABLE))
    if op == "create":
        return {"space": node.create_space(str(command["name"])).space_id.hex()}
    if op == "invite":
        return {"code": node.invite(_space(node, command))}
    if op == "join":
        joined = await node.join(command["code"], timeout=float(command.get("timeout", timeout)))
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
        bound = float(command.get("timeout", timeout))
        try:
            await node.wait_until(lambda: _holds(node, command, wanted, table), timeout=bound)
        except trio.TooSlowError:
            return {"error": f"timed out after {bound:g} s waiting for {command}"}
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
        raise SystemExit(f"node_script: --listen wants HOST:PORT, not {text!r}")
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
                answer = await handle(node, command, timeout=args.timeout)
            except (P2PSpaceError, trio.TooSlowError, KeyError, ValueError, TypeError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            emit(answer)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: any)")
    parser.add_argument("--timeout", required=True, type=float, help="default join/wait bound")
    parser.add_argument("--interface", action="append", default=[], help="mDNS address")
    parser.add_argument("--peer", action="append", default=[], help="HOST:PORT to keep dialling")
    parser.add_argument("--discovery", action="store_true", help="run mDNS discovery")
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    trio.run(serve, args)


if __name__ == "__main__":
    main()
