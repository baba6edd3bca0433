"""``p2pspace run``: the node in the foreground until Ctrl-C or SIGTERM.

It prints its endpoint id, listening addresses and API URL (one line each: tests and the bench
wait for the ``api`` line), then logs one line per node event on stderr. The node serves its
local API (:func:`~p2pspace.app.api.serve_api`, started next to the node) from the start, which
is what makes every other command take the fast path.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import trio

from p2pspace.app.api import serve_api
from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.rendering import describe_event
from p2pspace.core.identity import format_endpoint_id
from p2pspace.node.config import DEFAULT_PORT, NodeConfig, parse_hostport
from p2pspace.node.log_limits import LogLimiter
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node

# Peers on the LAN must be able to reach a node, so `run` listens on every interface unless
# told otherwise (`--listen`); tests and the demo always pass a loopback address.
DEFAULT_LISTEN = "0.0.0.0"
# Events the node logs itself; ``run`` logs every other event as one line.
SELF_LOGGED_EVENTS = frozenset({"peer", "refused", "discovery"})
# One per ack, per batch of deltas, per post or status change: logged at DEBUG only.
DEBUG_EVENTS = frozenset({"acks", "deltas", "discussion", "status", "progress"})

log = logging.getLogger("p2pspace.app.cli")


def bind_address(text: str, *, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` to listen on; port 0 means "any free port". CliError if malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
        host, port_text = text.strip(), str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise CliError(f"not a HOST:PORT address: {text!r}")
    return host, int(port_text)


def api_address(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` for the local API; no port (None): the one kept in the home's config,
    so the web UI's address stays the same across restarts."""
    stripped = text.strip()
    has_port = stripped.rpartition(":")[1] and not stripped.rpartition(":")[0].endswith(":")
    if has_port and not (stripped.startswith("[") and stripped.endswith("]")):
        return bind_address(stripped, default_port=0)
    host = stripped[1:-1] if stripped.startswith("[") and stripped.endswith("]") else stripped
    if not host:
        raise CliError(f"not a HOST[:PORT] address: {text!r}")
    return host, None


def run_node(
    home: Path,
    *,
    listen: str | None,
    interfaces: list[str],
    peers: list[str],
    api: str,
    discovery: bool,
) -> None:
    """Run the node on ``home`` until SIGINT or SIGTERM; addresses as given on the command
    line. Raises :class:`CliError` for a malformed address."""
    listen_at = bind_address(listen or DEFAULT_LISTEN, default_port=DEFAULT_PORT)
    dial = [parse_hostport(p, default_port=DEFAULT_PORT) for p in peers]
    api_at = api_address(api)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(_run_node, home, listen_at, interfaces, dial, api_at, discovery)


async def _run_node(
    home: Path,
    listen: tuple[str, int],
    interfaces: list[str],
    peers: list[tuple[str, int]],
    api: tuple[str, int | None],
    discovery: bool,
) -> None:
    # Signals are caught from the start, so a SIGTERM during start-up still stops cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            open_node(
                home,
                NodeConfig(
                    listen=listen,
                    interfaces=tuple(interfaces),
                    peers=tuple(peers),
                    discovery=discovery,
                ),
            ) as node,
            trio.open_nursery() as nursery,
        ):
            # The API stops (and removes home/api.json) before the node closes.
            api_url = await nursery.start(serve_api, node, api[0], api[1])
            print(f"endpoint {format_endpoint_id(node.endpoint_id)} ({node.endpoint_id.hex()})")
            for host, port in node.listen_addresses:
                print(f"listen {host}:{port}" if ":" not in host else f"listen [{host}]:{port}")
            print(f"api {api_url}", flush=True)
            nursery.start_soon(_log_events, node)
            async for signum in signals:
                log.info("stopping (%s)", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _log_events(node: Node) -> None:
    # A peer whose connection churns changes sync state many times a second: each distinct
    # line (type, space, peer, state) once a minute, then a count, like the node's own lines.
    limiter = LogLimiter(log, now=trio.current_time)
    while True:
        with node.subscribe() as events:
            async for event in events:
                limiter.flush()
                if event.TYPE in SELF_LOGGED_EVENTS:
                    continue
                line = describe_event(event.to_json())
                if event.TYPE in DEBUG_EVENTS:
                    log.debug("%s", line)
                else:
                    limiter.log(logging.INFO, line, "%s", line)
        log.warning("the event log fell behind; some events were not logged")


__all__ = ["DEFAULT_LISTEN", "bind_address", "run_node"]
