"""``p2pspace run``: the node in the foreground until Ctrl-C or SIGTERM.

It prints its endpoint id, listening addresses and API URL (one line each: tests and the bench
wait for the ``api`` line), then logs one line per node event on stderr. The node serves its
local API (:func:`~p2pspace.app.api.serve_api`, started next to the node) from the start, which
is what makes every other command take the fast path.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import signal
import sys
from pathlib import Path

import trio

from p2pspace.app.api import serve_api
from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.rendering import describe_event, one_line
from p2pspace.core.identity import format_endpoint_id
from p2pspace.errors import P2PSpaceError
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
DEBUG_EVENTS = frozenset({"acks", "deltas", "tool", "status", "progress"})

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


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def listen_address(text: str, *, default_port: int) -> tuple[str, int]:
    """``--listen HOST[:PORT]``: HOST must be an IP address (``0.0.0.0``: every interface) or
    ``localhost``. Raises :class:`CliError`, in one line, for anything else."""
    host, port = bind_address(text, default_port=default_port)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise CliError(
                f"--listen {text!r}: give an IP address of this machine and a port, such as "
                f"0.0.0.0:{default_port} (every interface) or 127.0.0.1:{default_port}"
            ) from None
    return host, port


def peer_address(text: str, *, default_port: int) -> tuple[str, int]:
    """``--peer HOST[:PORT]``: an IP address or a well-formed host name, and a port in
    1..65535. Raises :class:`CliError`, in one line, for anything else (whether the peer answers
    is learnt by dialling it: the node logs a warning if it does not)."""
    try:
        host, port = parse_hostport(text.strip(), default_port=default_port)
    except P2PSpaceError:
        host, port = "", 0
    if not 0 < port < 65536 or not _valid_host(host):
        raise CliError(
            f"--peer {text!r}: give the peer's address as HOST or HOST:PORT, such as "
            f"192.168.1.20:{default_port} or alice-laptop.local"
        )
    return host, port


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def interface_addresses(values: list[str]) -> list[str]:
    """``--interface`` values as the addresses to run discovery on: each an IP address of one
    of this machine's interfaces, or an interface's name (meaning its IPv4 addresses). Raises
    :class:`CliError`, in one line, naming the choices, for anything else."""
    import ifaddr

    by_name: dict[str, list[str]] = {}
    mine: set[str] = set()
    for adapter in ifaddr.get_adapters():
        v4 = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        v6 = [ip.ip[0] for ip in adapter.ips if isinstance(ip.ip, tuple)]
        mine.update(v4, v6)
        for name in {adapter.name, adapter.nice_name}:
            by_name.setdefault(name, []).extend(v4)
    out: list[str] = []
    for value in values:
        text = value.strip()
        if by_name.get(text):
            out += [a for a in by_name[text] if a not in out]
            continue
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            address = ""
        if address and address in mine:
            if address not in out:
                out.append(address)
            continue
        names = ", ".join(sorted(n for n, a in by_name.items() if a))
        raise CliError(
            f"--interface {value!r}: not an interface of this machine nor one of its addresses "
            f"(its interfaces: {names})"
        )
    return out


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
    listen_at = listen_address(listen or DEFAULT_LISTEN, default_port=DEFAULT_PORT)
    dial = [peer_address(p, default_port=DEFAULT_PORT) for p in peers]
    interfaces = interface_addresses(interfaces)
    api_at = api_address(api)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_printable)
    trio.run(_run_node, home, listen_at, interfaces, dial, api_at, discovery)


def _printable(record: logging.LogRecord) -> bool:
    """Every log line on one line and defanged: messages quote peers (names, refusals, errors
    they sent), and a terminal or log viewer must not take their escape sequences. A traceback
    (a bug of ours) keeps its lines."""
    record.msg = one_line(record.getMessage())
    record.args = None
    return True


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


def _name_of(node: Node, space: str, member: str) -> str:
    """What a log line calls a space (``member`` "") or one of its members: the name the
    space's members state gives, else a short id."""
    try:
        replica = node.replica(bytes.fromhex(space))
        if not member:
            return replica.name or space[:8]
        record = replica.members().get(bytes.fromhex(member))
    except (P2PSpaceError, ValueError):
        return member[:8] or space[:8]
    if record is not None and record.name:
        return "you" if record.id == node.endpoint_id else record.name
    return member[:8]


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
                line = describe_event(event.to_json(), functools.partial(_name_of, node))
                if event.TYPE in DEBUG_EVENTS:
                    log.debug("%s", line)
                else:
                    limiter.log(logging.INFO, line, "%s", line)
        log.warning("the event log fell behind; some events were not logged")


__all__ = ["DEFAULT_LISTEN", "bind_address", "run_node"]
