"""The ``p2pspace`` command line.

Simulation: ``demo``, ``simulate``, ``bench``. A real endpoint: ``init``, ``id``, ``run``,
``space create|list``, ``invite``, ``join``, ``rdb set|get|delete``,
``discuss post|reply|edit|delete|undo|show``, ``status``, ``open``; each works on a home folder
(``--home``, else ``$P2PSPACE_HOME``, else ``$XDG_DATA_HOME/p2pspace`` or
``~/.local/share/p2pspace``).

How a command reaches the endpoint. If ``home/api.json`` names a URL that answers with the token
in ``home/api.token``, the command goes through the running node's HTTP API. Otherwise it works
on the store directly ("offline"), holding the home's lock for the duration of the command: a
temporary node that neither listens nor discovers. ``invite`` and ``open`` (the web UI) need a
running node (the code carries its address; the UI is served by the node); an offline ``join``
runs a temporary node until the space has caught up.

Every error a user can cause prints one line on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import trio

from p2pspace.app import bench
from p2pspace.app.api import DEFAULT_TOOL, INFO_FILE, SPACE_TOOLS, read_token
from p2pspace.app.demo import run as demo_run
from p2pspace.core.identity import KEY_FILE, format_endpoint_id, load_or_create_identity
from p2pspace.errors import LocalProtocolError, P2PSpaceError
from p2pspace.testing.simnet import (
    FAULT_KINDS,
    run_simulation,
    write_logs,
)

if TYPE_CHECKING:
    from p2pspace.node.node import Node
    from p2pspace.tools.discussion import Discussion

T = TypeVar("T")

PROBE_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
JOIN_TIMEOUT = 60.0
PROGRESS_EVERY = 1.0  # seconds between catch-up progress lines
# Peers on the LAN must be able to reach a node, so `run` listens on every interface unless
# told otherwise (`--listen`); tests and the demo always pass a loopback address.
DEFAULT_LISTEN = "0.0.0.0"
DEFAULT_API = "127.0.0.1:0"
# Events the node logs itself; ``run`` logs every other event as one line.
SELF_LOGGED_EVENTS = frozenset({"peer", "refused", "discovery"})

log = logging.getLogger("p2pspace.app.cli")


class CliError(Exception):
    """Something the user can fix; printed as one ``p2pspace: error:`` line."""


class ApiError(CliError):
    """The node's API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"p2pspace: error: {message} (see: {self.prog} --help)\n")


def _faults(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown)}; choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _workloads(text: str) -> list[str]:
    names = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in bench.WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"workloads are {', '.join(bench.WORKLOADS)}")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 10**9:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def parse_field(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE``: VALUE as JSON when it is valid JSON, else as the text itself.

    Raises :class:`CliError` when there is no ``=`` or no field name.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise CliError(f"expected FIELD=VALUE, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        value = raw
    return name, value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def default_home() -> Path:
    env = os.environ.get("P2PSPACE_HOME")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "p2pspace"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="p2pspace", description="Peer-to-peer shared spaces: replicated, signed, ordered."
    )
    home_help = "the endpoint's folder (default: $P2PSPACE_HOME or ~/.local/share/p2pspace)"
    # --home goes before or after the command; after it, SUPPRESS keeps an absent option from
    # overwriting one given before.
    parser.add_argument("--home", type=Path, metavar="DIR", help=home_help)
    sub = parser.add_subparsers(dest="command", required=True)
    homed = OneLineParser(add_help=False)
    homed.add_argument(
        "--home", type=Path, metavar="DIR", default=argparse.SUPPRESS, help=home_help
    )

    demo = sub.add_parser(
        "demo",
        help="three endpoints on loopback share a discussion, post concurrently and converge",
    )
    demo.add_argument(
        "--once", action="store_true", help="exit after checking the three threads are identical"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the scripted exchange")
    demo.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the three endpoints' homes in DIR"
    )

    sim = sub.add_parser("simulate", help="random rdb workloads on the simulated network")
    sim.add_argument("--endpoints", type=_positive, default=3)
    sim.add_argument("--deltas", type=_positive, default=100)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--faults", type=_faults, default=[], help=",".join(FAULT_KINDS))
    sim.add_argument("--topology", choices=("mesh", "ring"), default="mesh")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--dump-logs", type=Path, metavar="DIR", help="write each executed order")

    ben = sub.add_parser("bench", help="run the benchmark workloads with same-run baselines")
    ben.add_argument("--json", action="store_true", help="one JSON object per workload and line")
    ben.add_argument("--workload", type=_workloads, default=list(bench.WORKLOADS))
    ben.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ben.add_argument(
        "--repeat", type=_positive, default=3, help="runs per workload; medians are reported"
    )

    init = sub.add_parser("init", parents=[homed], help="create this endpoint's identity and store")
    init.add_argument("--name", help="the name other members see")

    ident = sub.add_parser("id", parents=[homed], help="print this endpoint's id")
    ident.add_argument("--hex", action="store_true", help="as hex instead of the display form")

    run = sub.add_parser("run", parents=[homed], help="run the node until Ctrl-C or SIGTERM")
    run.add_argument(
        "--listen", metavar="HOST:PORT", help="address for peers (default 0.0.0.0:7455)"
    )
    run.add_argument(
        "--interface",
        metavar="ADDR",
        action="append",
        default=[],
        help="address to announce and discover on (repeatable; default: all)",
    )
    run.add_argument(
        "--peer", metavar="HOST:PORT", action="append", default=[], help="peer to keep dialling"
    )
    run.add_argument(
        "--api", metavar="HOST:PORT", default=DEFAULT_API, help="local API (loopback only)"
    )
    run.add_argument("--no-discovery", action="store_true", help="no mDNS on the local network")

    space = sub.add_parser("space", help="create or list spaces")
    space_sub = space.add_subparsers(dest="space_command", required=True, metavar="{create,list}")
    create = space_sub.add_parser("create", parents=[homed], help="found a new space")
    create.add_argument("name")
    create.add_argument(
        "--tool",
        choices=list(SPACE_TOOLS),
        default=DEFAULT_TOOL,
        help=f"the space's tool (default {DEFAULT_TOOL})",
    )
    listing = space_sub.add_parser("list", parents=[homed], help="the spaces of this endpoint")
    listing.add_argument("--json", action="store_true")

    invite = sub.add_parser("invite", parents=[homed], help="print a one-time invitation code")
    invite.add_argument("space", metavar="SPACE", help="space id or name")
    invite.add_argument("--role", default="participant", help="manager, participant or guest")
    invite.add_argument("--ttl", type=_seconds, metavar="SECONDS", help="valid for (default 1 d)")

    join = sub.add_parser("join", parents=[homed], help="join a space with an invitation code")
    join.add_argument("code", metavar="CODE")
    join.add_argument("--timeout", type=_seconds, default=JOIN_TIMEOUT, metavar="SECONDS")

    rdb = sub.add_parser("rdb", help="records of a space's database")
    rdb_sub = rdb.add_subparsers(dest="rdb_command", required=True, metavar="{set,get,delete}")
    rdb_set = rdb_sub.add_parser("set", parents=[homed], help="create or update a record")
    rdb_set.add_argument("space", metavar="SPACE")
    rdb_set.add_argument("table", metavar="TABLE")
    rdb_set.add_argument("record", metavar="RECORD")
    rdb_set.add_argument(
        "fields", metavar="FIELD=VALUE", nargs="+", help="VALUE is JSON if it parses, else text"
    )
    rdb_get = rdb_sub.add_parser("get", parents=[homed], help="show a record or a whole table")
    rdb_get.add_argument("space", metavar="SPACE")
    rdb_get.add_argument("table", metavar="TABLE")
    rdb_get.add_argument("record", metavar="RECORD", nargs="?")
    rdb_get.add_argument("--json", action="store_true")
    rdb_get.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="wait (up to 60 s) for the record to exist; needs a running node",
    )
    rdb_del = rdb_sub.add_parser("delete", parents=[homed], help="delete a record")
    rdb_del.add_argument("space", metavar="SPACE")
    rdb_del.add_argument("table", metavar="TABLE")
    rdb_del.add_argument("record", metavar="RECORD")

    discuss = sub.add_parser("discuss", help="the threaded discussion of a space")
    discuss_sub = discuss.add_subparsers(
        dest="discuss_command", required=True, metavar="{post,reply,edit,delete,undo,show}"
    )
    d_post = discuss_sub.add_parser("post", parents=[homed], help="start a thread")
    d_post.add_argument("space", metavar="SPACE")
    d_post.add_argument("title", metavar="TITLE")
    d_post.add_argument("body", metavar="BODY")
    d_reply = discuss_sub.add_parser("reply", parents=[homed], help="reply to a post")
    d_reply.add_argument("space", metavar="SPACE")
    d_reply.add_argument("post", metavar="POST_ID", help="a topic or a reply")
    d_reply.add_argument("body", metavar="BODY")
    d_edit = discuss_sub.add_parser("edit", parents=[homed], help="change your own post")
    d_edit.add_argument("space", metavar="SPACE")
    d_edit.add_argument("post", metavar="POST_ID")
    d_edit.add_argument("body", metavar="BODY")
    d_edit.add_argument("--title", metavar="T", help="a new title (topics only)")
    d_delete = discuss_sub.add_parser("delete", parents=[homed], help="delete your own post")
    d_delete.add_argument("space", metavar="SPACE")
    d_delete.add_argument("post", metavar="POST_ID")
    d_undo = discuss_sub.add_parser("undo", parents=[homed], help="undo your last edit or delete")
    d_undo.add_argument("space", metavar="SPACE")
    d_show = discuss_sub.add_parser("show", parents=[homed], help="show one thread or all")
    d_show.add_argument("space", metavar="SPACE")
    d_show.add_argument("topic", metavar="TOPIC", nargs="?", help="a topic id (default: all)")
    d_show.add_argument("--json", action="store_true")

    status = sub.add_parser("status", parents=[homed], help="spaces, members, peers, sync states")
    status.add_argument("--json", action="store_true")

    ui = sub.add_parser("open", parents=[homed], help="open the running node's web UI")
    ui.add_argument("space", metavar="SPACE", nargs="?", help="open on this space")
    ui.add_argument("--print-url", action="store_true", help="only print the URL")
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    def out(line: str) -> None:
        print(line, flush=True)

    try:
        return trio.run(
            functools.partial(demo_run, once=args.once, seed=args.seed, home=args.keep, out=out)
        )
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="p2pspace-sim-") as tmp:
        report = run_simulation(
            Path(tmp),
            endpoints=args.endpoints,
            deltas=args.deltas,
            seed=args.seed,
            faults=args.faults,
            topology=args.topology,
            dump_logs=args.dump_logs,
        )
    if args.json:
        print(
            json.dumps(
                {
                    "converged": report.converged,
                    "deltas": report.deltas,
                    "undone": report.undone,
                    "redone": report.redone,
                    "seconds": round(report.seconds, 3),
                    "endpoints": list(report.endpoints),
                }
            )
        )
    else:
        state = "converged" if report.converged else "DID NOT CONVERGE"
        print(
            f"seed {args.seed}: {args.endpoints} endpoints, {report.deltas} deltas, "
            f"faults {','.join(args.faults) or 'none'}: {state} in {report.seconds:.2f} s "
            f"({report.undone} undone, {report.redone} redone)"
        )
        for reason in report.reasons:
            print(f"  {reason}")
    return 0 if report.converged else 1


def cmd_bench(args: argparse.Namespace) -> int:
    results = bench.run(args.workload, quick=args.quick, repeat=args.repeat)
    print(bench.to_json_lines(results) if args.json else bench.format_table(results))
    return 0


# -- reaching the endpoint ----------------------------------------------------------------------


class Backend(Protocol):
    """What the endpoint commands need; served by the running node's API or offline."""

    online: bool

    def status(self) -> dict[str, Any]: ...

    def spaces(self) -> list[dict[str, Any]]: ...

    def create_space(self, name: str, tool: str = DEFAULT_TOOL) -> dict[str, Any]: ...

    def invite(self, space: str, role: str, ttl_s: float | None) -> str: ...

    def join(self, code: str, timeout: float) -> str: ...

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None: ...

    def rdb_delete(self, space: str, table: str, record: str) -> None: ...

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]: ...

    def discuss_post(self, space: str, title: str, body: str) -> str: ...

    def discuss_reply(self, space: str, post: str, body: str) -> str: ...

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> str: ...

    def discuss_delete(self, space: str, post: str) -> str: ...

    def discuss_undo(self, space: str) -> str: ...

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        """``Post.to_json()`` of one thread, or of every thread (newest activity first)."""
        ...


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class HttpBackend:
    """The node's HTTP API (stdlib urllib; proxies are never used)."""

    online = True

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(
        self, method: str, path: str, body: object = None, *, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Send one request; the decoded JSON answer. Raises :class:`CliError`."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                message = str(json.loads(exc.read())["error"])
            except (OSError, ValueError, TypeError, KeyError, http.client.HTTPException):
                message = f"HTTP {exc.code} {exc.reason}"
            finally:
                exc.close()
            raise ApiError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach the node's API at {self.url}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CliError(f"the node's API at {self.url} failed: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"the node's API at {self.url} sent something other than JSON") from None

    def status(self) -> dict[str, Any]:
        value: dict[str, Any] = self.call("GET", "/api/status")
        return value

    def spaces(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self.call("GET", "/api/spaces")
        return value

    def create_space(self, name: str, tool: str = DEFAULT_TOOL) -> dict[str, Any]:
        value: dict[str, Any] = self.call("POST", "/api/spaces", {"name": name, "tool": tool})
        return value

    def invite(self, space: str, role: str, ttl_s: float | None) -> str:
        body: dict[str, Any] = {"role": role}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return str(self.call("POST", f"/api/spaces/{_quote(space)}/invitations", body)["code"])

    def join(self, code: str, timeout: float) -> str:
        body = {"code": code, "timeout_s": timeout}
        progress = _ProgressPrinter()
        watcher = _ProgressWatcher(self, progress)
        watcher.start()
        try:
            answer = self.call("POST", "/api/join", body, timeout=timeout + REQUEST_TIMEOUT)
        finally:
            watcher.stop()
        progress.done()
        return str(answer["space"])

    def open_events(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The node's event stream (server-sent events), for reading line by line."""
        parsed = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(
            parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=None
        )
        connection.request(
            "GET",
            "/api/events",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"},
        )
        return connection, connection.getresponse()

    def _record_path(self, space: str, table: str, record: str | None) -> str:
        path = f"/api/spaces/{_quote(space)}/rdb/{_quote(table)}"
        return path if record is None else f"{path}/{_quote(record)}"

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None:
        self.call("PUT", self._record_path(space, table, record), {"fields": fields})

    def rdb_delete(self, space: str, table: str, record: str) -> None:
        self.call("DELETE", self._record_path(space, table, record))

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]:
        path = self._record_path(space, table, record)
        timeout = REQUEST_TIMEOUT
        if wait is not None:
            path += f"?wait={wait:g}"
            timeout += wait
        answer = self.call("GET", path, timeout=timeout)
        if record is None:
            records: dict[str, Any] = answer["records"]
            return records
        fields: dict[str, Any] = answer["fields"]
        return fields

    def space_id(self, space: str) -> str:
        return str(self.call("GET", f"/api/spaces/{_quote(space)}")["id"])

    def _discussion_path(self, space: str, *parts: str) -> str:
        return "/".join([f"/api/spaces/{_quote(space)}/discussion", *map(_quote, parts)])

    def discuss_post(self, space: str, title: str, body: str) -> str:
        path = self._discussion_path(space, "topics")
        return str(self.call("POST", path, {"title": title, "body": body})["id"])

    def discuss_reply(self, space: str, post: str, body: str) -> str:
        path = self._discussion_path(space, "posts", post, "replies")
        return str(self.call("POST", path, {"body": body})["id"])

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> str:
        path = self._discussion_path(space, "posts", post)
        return str(self.call("PUT", path, {"body": body, "title": title})["id"])

    def discuss_delete(self, space: str, post: str) -> str:
        return str(self.call("DELETE", self._discussion_path(space, "posts", post))["id"])

    def discuss_undo(self, space: str) -> str:
        return str(self.call("POST", self._discussion_path(space, "undo"))["id"])

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        if topic is not None:
            return [self.call("GET", self._discussion_path(space, "threads", topic))["thread"]]
        topics = self.call("GET", self._discussion_path(space, "topics"))["topics"]
        return [
            self.call("GET", self._discussion_path(space, "threads", t["id"]))["thread"]
            for t in topics
        ]


class OfflineBackend:
    """The store itself, through a node that neither listens nor discovers."""

    online = False

    def __init__(self, home: Path, why_not_online: str | None = None) -> None:
        self.home = home
        self.why_not_online = why_not_online

    def check_lock(self) -> None:
        """Raise :class:`CliError` if another process (a running node) holds the home."""
        from p2pspace.node.node import home_lock

        try:
            with home_lock(self.home):
                pass
        except LocalProtocolError as exc:
            if self.why_not_online:
                raise CliError(
                    f"a node is running on {self.home} but its API does not answer "
                    f"({self.why_not_online})"
                ) from None
            raise CliError(str(exc)) from None

    def _with_node(self, use: Callable[[Node], T]) -> T:
        from p2pspace.node.node import open_node

        self.check_lock()

        async def main() -> T:
            async with open_node(self.home, listen=None, api=None, discovery=False) as node:
                return use(node)

        return trio.run(main)

    def status(self) -> dict[str, Any]:
        return self._with_node(lambda node: node.status())

    def spaces(self) -> list[dict[str, Any]]:
        return self._with_node(lambda node: node.spaces())

    def create_space(self, name: str, tool: str = DEFAULT_TOOL) -> dict[str, Any]:
        def create(node: Node) -> dict[str, Any]:
            replica = node.create_space(name, engines=SPACE_TOOLS[tool])
            return node.space_info(replica.space_id)

        return self._with_node(create)

    def invite(self, space: str, role: str, ttl_s: float | None) -> str:
        raise CliError(
            "an invitation needs the running node (the code carries its address); "
            f"start it with: p2pspace run --home {self.home}"
        )

    def join(self, code: str, timeout: float) -> str:
        from p2pspace.node.node import open_node

        self.check_lock()
        progress = _ProgressPrinter()

        async def main() -> str:
            async with open_node(self.home, listen=None, api=None, discovery=False) as node:
                try:
                    space = await node.join(code, timeout=timeout, progress=progress)
                except trio.TooSlowError:
                    raise CliError(
                        f"the join did not finish within {timeout:g} s (is the inviter's node "
                        "running and reachable?)"
                    ) from None
                return space.hex()

        try:
            return trio.run(main)
        finally:
            progress.done()

    def rdb_set(self, space: str, table: str, record: str, fields: dict[str, Any]) -> None:
        self._with_node(lambda node: node.rdb_set(node.resolve_space(space), table, record, fields))

    def rdb_delete(self, space: str, table: str, record: str) -> None:
        self._with_node(lambda node: node.rdb_delete(node.resolve_space(space), table, record))

    def rdb_get(
        self, space: str, table: str, record: str | None, wait: float | None
    ) -> dict[str, Any]:
        def read(node: Node) -> tuple[str, dict[str, Any]]:
            space_id = node.resolve_space(space)
            return space_id.hex(), node.rdb_get(space_id, table, record)

        space_hex, found = self._with_node(read)
        if record is None:
            return found
        if record not in found:
            hint = " (no node runs here to receive it: start one with p2pspace run)" if wait else ""
            raise CliError(f"no record {table}/{record} in space {space_hex}{hint}")
        fields: dict[str, Any] = found[record]
        return fields

    def _with_discussion(self, space: str, use: Callable[[Discussion], T]) -> T:
        def run(node: Node) -> T:
            tool = node.discussion(node.resolve_space(space))
            if tool is None:  # pragma: no cover - required=True raises instead
                raise CliError("this space has no discussion tool")
            return use(tool)

        return self._with_node(run)

    def discuss_post(self, space: str, title: str, body: str) -> str:
        return self._with_discussion(space, lambda tool: tool.post(title, body))

    def discuss_reply(self, space: str, post: str, body: str) -> str:
        return self._with_discussion(space, lambda tool: tool.reply(post, body))

    def discuss_edit(self, space: str, post: str, body: str, title: str | None) -> str:
        def edit(tool: Discussion) -> str:
            tool.edit(post, body, title)
            return post

        return self._with_discussion(space, edit)

    def discuss_delete(self, space: str, post: str) -> str:
        def delete(tool: Discussion) -> str:
            tool.delete(post)
            return post

        return self._with_discussion(space, delete)

    def discuss_undo(self, space: str) -> str:
        return self._with_discussion(space, lambda tool: tool.undo_last())

    def discuss_threads(self, space: str, topic: str | None) -> list[dict[str, Any]]:
        def threads(tool: Discussion) -> list[dict[str, Any]]:
            ids = [topic] if topic is not None else [t.post.id for t in tool.topics()]
            return [tool.thread(i).to_json() for i in ids]

        return self._with_discussion(space, threads)


class _ProgressWatcher:
    """Shows a running node's ``progress`` events while a join request is under way (the join
    itself is one blocking request; the events stream alongside it, read in a thread)."""

    def __init__(self, backend: HttpBackend, printer: _ProgressPrinter) -> None:
        self._backend = backend
        self._printer = printer
        self._connection: http.client.HTTPConnection | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p2pspace-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            # Shutting the socket down ends the reader's blocking read at once.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=1)

    def _run(self) -> None:
        # Progress is a courtesy: any failure here just means no progress lines.
        try:
            self._connection, response = self._backend.open_events()
            if self._stopped.is_set():
                return
            for raw in response:
                if self._stopped.is_set():
                    return
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if isinstance(event, dict) and event.get("type") == "progress":
                    self._printer(int(event["have"]), int(event["total"]))
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
            return
        finally:
            if self._connection is not None:
                self._connection.close()


class _ProgressPrinter:
    """Catch-up progress on stderr, at most once a second and only once it takes a while."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def __call__(self, have: int, total: int) -> None:
        now = time.monotonic()
        if total <= have or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        self.shown = True
        print(f"p2pspace: catching up: {have}/{total} deltas", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print("p2pspace: caught up", file=sys.stderr, flush=True)


def connect(home: Path) -> Backend:
    """The running node's API if ``home/api.json`` names one that answers, else offline."""
    path = home / INFO_FILE
    try:
        info = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return OfflineBackend(home)
    except (OSError, ValueError) as exc:
        return OfflineBackend(home, f"cannot read {path}: {exc}")
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not _is_loopback_url(url):
        return OfflineBackend(home, f"{path} names no loopback http URL")
    token = read_token(home)
    if token is None:
        return OfflineBackend(home, f"no API token in {home}")
    backend = HttpBackend(url, token)
    try:
        backend.call("GET", "/api/status", timeout=PROBE_TIMEOUT)
    except ApiError as exc:
        reason = "it refused the API token" if exc.status == 401 else str(exc)
        return OfflineBackend(home, f"{url}: {reason}")
    except CliError as exc:
        return OfflineBackend(home, str(exc))
    return backend


def _is_loopback_url(url: str) -> bool:
    # The token only ever goes to this machine.
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        return parts.scheme == "http" and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _initialized(home: Path) -> Path:
    if not (home / KEY_FILE).exists():
        raise CliError(f"no endpoint in {home}; create one with: p2pspace init --home {home}")
    return home


# -- endpoint commands --------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.node.node import home_lock, write_config
    from p2pspace.sync.endpoint import Endpoint

    try:
        with home_lock(home):
            endpoint = Endpoint(home, name=args.name or "")
            try:
                endpoint_id = endpoint.endpoint_id
            finally:
                endpoint.close()
            if args.name is not None:
                write_config(home, name=args.name)
    except LocalProtocolError as exc:
        raise CliError(str(exc)) from None
    print(format_endpoint_id(endpoint_id))
    return 0


def cmd_id(args: argparse.Namespace, home: Path) -> int:
    identity = load_or_create_identity(_initialized(home))
    endpoint_id = identity.endpoint_id
    print(endpoint_id.hex() if args.hex else format_endpoint_id(endpoint_id))
    return 0


def cmd_run(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.node.node import DEFAULT_PORT, parse_hostport

    _initialized(home)
    listen = bind_address(args.listen or DEFAULT_LISTEN, default_port=DEFAULT_PORT)
    peers = [parse_hostport(p, default_port=DEFAULT_PORT) for p in args.peer]
    api = bind_address(args.api, default_port=0)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(_run_node, home, listen, args.interface, peers, api, not args.no_discovery)
    return 0


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


async def _run_node(
    home: Path,
    listen: tuple[str, int],
    interfaces: list[str],
    peers: list[tuple[str, int]],
    api: tuple[str, int],
    discovery: bool,
) -> None:
    from p2pspace.node.node import open_node

    # Signals are caught from the start, so a SIGTERM during start-up still stops cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            home, listen=listen, interfaces=interfaces, peers=peers, api=api, discovery=discovery
        ) as node:
            print(f"endpoint {format_endpoint_id(node.endpoint_id)} ({node.endpoint_id.hex()})")
            for host, port in node.listen_addresses:
                print(f"listen {host}:{port}" if ":" not in host else f"listen [{host}]:{port}")
            print(f"api {node.api_url}", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_log_events, node)
                async for signum in signals:
                    log.info("stopping (%s)", signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
    log.info("stopped")


async def _log_events(node: Node) -> None:
    while True:
        with node.subscribe() as events:
            async for event in events:
                if event.get("type") not in SELF_LOGGED_EVENTS:
                    log.info("%s", describe_event(event))
        log.warning("the event log fell behind; some events were not logged")


def describe_event(event: dict[str, Any]) -> str:
    """One log line for a node event."""
    parts = [str(event.get("type", "event"))]
    for key, value in event.items():
        if key == "type" or value in ("", None):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def cmd_space(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    if args.space_command == "create":
        print(backend.create_space(args.name, args.tool)["id"])
        return 0
    spaces = backend.spaces()
    if args.json:
        print(json.dumps(spaces, indent=2))
        return 0
    for info in spaces:
        print(
            f"{info['id']}  {info['name'] or '-'}  {len(info['members'])} member(s), "
            f"{info['executed']} deltas{'' if info['member'] else '  (joining)'}"
        )
    return 0


def cmd_invite(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    print(backend.invite(args.space, args.role, args.ttl))
    return 0


def cmd_join(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    print(backend.join(args.code, args.timeout))
    return 0


def cmd_rdb(args: argparse.Namespace, home: Path) -> int:
    if args.rdb_command == "set":
        fields = dict(parse_field(item) for item in args.fields)
        connect(_initialized(home)).rdb_set(args.space, args.table, args.record, fields)
        return 0
    if args.rdb_command == "delete":
        connect(_initialized(home)).rdb_delete(args.space, args.table, args.record)
        return 0
    found = connect(_initialized(home)).rdb_get(args.space, args.table, args.record, args.wait)
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    elif args.record is not None:
        for name, value in sorted(found.items()):
            print(f"{name}={_show(value)}")
    else:
        for record, fields in found.items():
            shown = " ".join(f"{k}={_show(v)}" for k, v in sorted(fields.items()))
            print(f"{record}  {shown}")
    return 0


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def cmd_discuss(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    command = args.discuss_command
    if command == "show":
        threads = backend.discuss_threads(args.space, args.topic)
        if args.json:
            shown: object = {"thread": threads[0]} if args.topic else {"threads": threads}
            print(json.dumps(shown, indent=2))
        elif threads:
            print("\n".join(line for thread in threads for line in format_thread(thread)))
        else:
            print("no topics yet")
        return 0
    if command == "post":
        print(backend.discuss_post(args.space, args.title, args.body))
    elif command == "reply":
        print(backend.discuss_reply(args.space, args.post, args.body))
    elif command == "edit":
        print(backend.discuss_edit(args.space, args.post, args.body, args.title))
    elif command == "delete":
        print(backend.discuss_delete(args.space, args.post))
    else:
        print(backend.discuss_undo(args.space))
    return 0


def format_thread(thread: dict[str, Any], depth: int = 0) -> list[str]:
    """One line a post of ``thread`` (``Post.to_json()``), replies indented under their parent:
    id, author, sync status, then the title and body (``[deleted]`` for a tombstone)."""
    if thread["deleted"]:
        text = "[deleted]"
    else:
        title, body = _one_line(thread.get("title") or ""), _one_line(thread["body"])
        text = f"{title} -- {body}" if title and body else title or body
        if thread.get("edited"):
            text += " (edited)"
    name = _one_line(thread["author_name"]) or thread["author"][:8]
    lines = [f"{'  ' * depth}{thread['id']}  {name}  [{thread['status']}]  {text}"]
    for reply in thread["replies"]:
        lines += format_thread(reply, depth + 1)
    return lines


# Bidirectional overrides and isolates: text from peers must not reorder what a line shows.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _one_line(text: str) -> str:
    """``text`` (from any member) safe to print on a terminal: whitespace runs become one space,
    control characters (escape sequences!) and bidirectional controls become U+FFFD."""
    return "".join(
        "\ufffd" if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS else c
        for c in " ".join(text.split())
    )


def cmd_open(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    if not isinstance(backend, HttpBackend):
        if isinstance(backend, OfflineBackend):
            backend.check_lock()  # a node runs but its API does not answer: says so
        raise CliError(
            f"no node is running on {home} (the web UI is served by the node); "
            f"start it with: p2pspace run --home {home}"
        )
    url = f"{backend.url}/?token={_quote(backend.token)}"
    if args.space is not None:
        url += f"#space={backend.space_id(args.space)}"
    print(url, flush=True)
    if not args.print_url and not webbrowser.open(url):
        raise CliError("cannot start a web browser here; open the URL above by hand")
    return 0


def cmd_status(args: argparse.Namespace, home: Path) -> int:
    backend = connect(_initialized(home))
    status = backend.status()
    if args.json:
        status["online"] = backend.online
        print(json.dumps(status, indent=2))
        return 0
    print(format_status(status, online=backend.online))
    return 0


def format_status(status: dict[str, Any], *, online: bool) -> str:
    """The text form of ``status``: the endpoint, its spaces with members, its peers."""
    name = f" ({status['name']})" if status.get("name") else ""
    lines = [f"endpoint {status['display_id']}{name}"]
    if online:
        lines.append(f"  listen {', '.join(status['listen']) or '-'}   api {status['api']}")
    else:
        lines.append("  node not running (offline view of the store)")
    for space in status["spaces"]:
        lines.append(
            f"space {space['name'] or '-'} {space['id']}: {space['executed']} executed, "
            f"{space['pending']} pending, {space['staged']} staged, processor {space['processor']}"
            + ("" if space["member"] else ", not yet a member")
        )
        for member in space["members"]:
            who = f"  {member['display_id'][:14]} {member['name'] or '-'} ({member['role']})"
            if member["me"]:
                lines.append(f"{who}: this endpoint")
            else:
                link = "connected" if member.get("connected") else "not connected"
                lines.append(f"{who}: {member.get('sync', 'disconnected')}, {link}")
    if status["peers"]:
        lines.append("peers")
    for peer in status["peers"]:
        where = peer.get("address") or ", ".join(peer["addresses"]) or "-"
        states = ", ".join(f"{s[:8]} {state}" for s, state in peer["spaces"].items())
        connected = "connected" if peer["connected"] else "not connected"
        lines.append(f"  {peer['display_id'][:14]} {connected} {where}  {states}".rstrip())
    return "\n".join(lines)


ENDPOINT_COMMANDS: dict[str, Callable[[argparse.Namespace, Path], int]] = {
    "init": cmd_init,
    "id": cmd_id,
    "run": cmd_run,
    "space": cmd_space,
    "invite": cmd_invite,
    "join": cmd_join,
    "rdb": cmd_rdb,
    "discuss": cmd_discuss,
    "status": cmd_status,
    "open": cmd_open,
}


# -- entry --------------------------------------------------------------------------------------

USER_ERRORS = (CliError, P2PSpaceError, OSError, trio.TooSlowError)


def _user_error(exc: BaseException) -> BaseException | None:
    """The error to report if ``exc`` (or every error in a group) is one the user caused."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)]
        if leaves and all(isinstance(e, USER_ERRORS) for e in leaves):
            return leaves[0]
        return None
    return exc if isinstance(exc, USER_ERRORS) else None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _message(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "simulate":
            return cmd_simulate(args)
        if args.command == "bench":
            return cmd_bench(args)
        home = args.home.expanduser() if args.home is not None else default_home()
        return ENDPOINT_COMMANDS[args.command](args, home)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``p2pspace status | head``): stop quietly, like other tools.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return 0
    except BaseException as exc:
        error = _user_error(exc)
        if error is None:
            raise
        print(f"p2pspace: error: {_message(error)}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


__all__ = [
    "ApiError",
    "CliError",
    "HttpBackend",
    "OfflineBackend",
    "build_parser",
    "connect",
    "default_home",
    "describe_event",
    "entry",
    "format_status",
    "format_thread",
    "main",
    "parse_field",
    "write_logs",
]
