"""The grammar of the ``p2pspace`` command: every command, option and argument type.

Building the parser costs only the standard library and two light modules (the local API's
file names and the bench's workload names), so ``p2pspace --help`` and every usage error answer
at interpreter-start speed. An argument type that needs a heavy module (the simulator's fault
kinds) imports it when such an argument is parsed, not when the parser is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from p2pspace.app.bench import WORKLOADS
from p2pspace.app.space_tools import DEFAULT_TOOL

if TYPE_CHECKING:
    from typing import TypeAlias

    # What ``add_subparsers`` returns (argparse's own, private name); its parsers inherit the
    # class of their parent, so usage errors of every command are one line.
    Subparsers: TypeAlias = argparse._SubParsersAction["OneLineParser"]

JOIN_TIMEOUT = 60.0
DEFAULT_API = "127.0.0.1"  # no port: the one kept in the home (a stable web UI address)
# Shown in ``simulate --help``; ``_faults`` checks the names against the simulator's own list
# (and a test checks this text names every kind).
FAULTS_HELP = "drop,dup,reorder,partition,crash,hostile,equivocate"
# The roles of p2pspace.core.membership.ROLES, spelled out: the parser loads no core module
# (a test checks the two agree).
ROLES = ("manager", "participant", "guest")
HOME_HELP = "the endpoint's folder (default: $P2PSPACE_HOME or ~/.local/share/p2pspace)"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"p2pspace: error: {message} (see: {self.prog} --help)\n")


def _faults(text: str) -> list[str]:
    from p2pspace.testing.simnet import FAULT_KINDS

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
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"workloads are {', '.join(WORKLOADS)}")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 10**9:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``parse_args`` exits 2 with one line on a usage error."""
    parser = OneLineParser(
        prog="p2pspace", description="Peer-to-peer shared spaces: replicated, signed, ordered."
    )
    # --home goes before or after the command; after it, SUPPRESS keeps an absent option from
    # overwriting one given before.
    parser.add_argument("--home", type=Path, metavar="DIR", help=HOME_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    homed = OneLineParser(add_help=False)
    homed.add_argument(
        "--home", type=Path, metavar="DIR", default=argparse.SUPPRESS, help=HOME_HELP
    )
    _add_programs(sub)
    _add_endpoint_commands(sub, homed)
    _add_member_commands(sub, homed)
    _add_record_commands(sub, homed)
    _add_discussion_commands(sub, homed)
    _add_views(sub, homed)
    return parser


def _add_programs(sub: Subparsers) -> None:
    """The commands that need no endpoint: demo, simulate, bench."""
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
    sim.add_argument("--faults", type=_faults, default=[], help=FAULTS_HELP)
    sim.add_argument("--topology", choices=("mesh", "ring"), default="mesh")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--dump-logs", type=Path, metavar="DIR", help="write each executed order")

    ben = sub.add_parser("bench", help="run the benchmark workloads with same-run baselines")
    ben.add_argument("--json", action="store_true", help="one JSON object per workload and line")
    ben.add_argument("--workload", type=_workloads, default=list(WORKLOADS))
    ben.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ben.add_argument(
        "--repeat", type=_positive, default=3, help="runs per workload; medians are reported"
    )


def _add_endpoint_commands(sub: Subparsers, homed: OneLineParser) -> None:
    """The endpoint itself: init, id, run, space, invite, join."""
    init = sub.add_parser("init", parents=[homed], help="create this endpoint's identity and store")
    init.add_argument("--name", help="the name other members see")
    init.add_argument(
        "--new-store",
        action="store_true",
        help="start an empty store for an existing identity (its changes are recovered from "
        "peers before it makes new ones)",
    )
    init.add_argument(
        "--encrypt",
        action="store_true",
        help="keep the store and key encrypted at rest, under a key held in the OS keyring if "
        "there is one, else under a passphrase (asked, or $P2PSPACE_PASSPHRASE)",
    )
    init.add_argument(
        "--passphrase",
        action="store_true",
        help="encrypt at rest under a passphrase, not the OS keyring (implies --encrypt)",
    )

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

    space = sub.add_parser("space", help="create, list, rename, leave or compact spaces")
    space_sub = space.add_subparsers(
        dest="space_command", required=True, metavar="{create,list,rename,leave,compact}"
    )
    create = space_sub.add_parser("create", parents=[homed], help="found a new space")
    create.add_argument("name")
    create.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="found it even if a space here has that name (name them by id then)",
    )
    create.add_argument(
        "--tool",
        default=DEFAULT_TOOL,
        metavar="NAME",
        help=f"an installed tool the space holds (default {DEFAULT_TOOL}; none: records only)",
    )
    listing = space_sub.add_parser("list", parents=[homed], help="the spaces of this endpoint")
    listing.add_argument("--json", action="store_true")
    rename = space_sub.add_parser(
        "rename", parents=[homed], help="give a space a new name, for every member (managers)"
    )
    rename.add_argument("space", metavar="SPACE", help="space id or name")
    rename.add_argument("name", metavar="NAME", help="the new name")
    leave = space_sub.add_parser(
        "leave", parents=[homed], help="leave a space (it stays readable here, read-only)"
    )
    leave.add_argument("space", metavar="SPACE", help="space id or name")
    compact = space_sub.add_parser(
        "compact",
        parents=[homed],
        help="delete the history below the last checkpoint (the state stays)",
    )
    compact.add_argument("space", metavar="SPACE", help="space id or name")
    compact.add_argument(
        "--keep-history",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep this space's whole history from now on (an audit trail), or stop keeping it",
    )

    invite = sub.add_parser("invite", parents=[homed], help="print a one-time invitation code")
    invite.add_argument("space", metavar="SPACE", help="space id or name")
    invite.add_argument("--role", default="participant", help="manager, participant or guest")
    invite.add_argument("--ttl", type=_seconds, metavar="SECONDS", help="valid for (default 1 d)")

    join = sub.add_parser("join", parents=[homed], help="join a space with an invitation code")
    join.add_argument("code", metavar="CODE")
    join.add_argument("--timeout", type=_seconds, default=JOIN_TIMEOUT, metavar="SECONDS")


def _add_member_commands(sub: Subparsers, homed: OneLineParser) -> None:
    """``member list|remove|role``: who is in a space, and (for managers) changing it."""
    member = sub.add_parser("member", help="the members of a space: list, remove, change roles")
    member_sub = member.add_subparsers(
        dest="member_command", required=True, metavar="{list,remove,role}"
    )
    who = "a display name unique in the space, or an endpoint id (hex, ABCD-EFGH-..., short id)"
    listing = member_sub.add_parser(
        "list", parents=[homed], help="current and removed members, with roles"
    )
    listing.add_argument("space", metavar="SPACE", help="space id or name")
    listing.add_argument("--json", action="store_true")
    remove = member_sub.add_parser(
        "remove", parents=[homed], help="remove a member from a space (managers)"
    )
    remove.add_argument("space", metavar="SPACE", help="space id or name")
    remove.add_argument("member", metavar="MEMBER", help=who)
    role = member_sub.add_parser("role", parents=[homed], help="change a member's role (managers)")
    role.add_argument("space", metavar="SPACE", help="space id or name")
    role.add_argument("member", metavar="MEMBER", help=who)
    role.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))


def _add_views(sub: Subparsers, homed: OneLineParser) -> None:
    """What the endpoint shows: status, and the web UI (open)."""
    status = sub.add_parser("status", parents=[homed], help="spaces, members, peers, sync states")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--verbose", action="store_true", help="the internals too: counts, history, peers"
    )

    tool = sub.add_parser(
        "tool",
        parents=[homed],
        help="an installed tool's own commands (p2pspace tool NAME --help)",
        add_help=False,
    )
    tool.add_argument("name", metavar="NAME", help="the tool, as installed (e.g. tasks)")

    ui = sub.add_parser("open", parents=[homed], help="open the running node's web UI")
    ui.add_argument("space", metavar="SPACE", nargs="?", help="open on this space")
    ui.add_argument("--print-url", action="store_true", help="only print the URL")


def _add_record_commands(sub: Subparsers, homed: OneLineParser) -> None:
    """``rdb set|get|delete``: records of a space's database."""
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


def _add_discussion_commands(sub: Subparsers, homed: OneLineParser) -> None:
    """``discuss post|reply|edit|delete|undo|show``: the threaded discussion of a space."""
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
    d_show.add_argument("--full", action="store_true", help="each post's whole text too")
    d_show.add_argument("--json", action="store_true")


__all__ = ["OneLineParser", "build_parser"]
