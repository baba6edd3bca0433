"""One function per ``p2pspace`` command: arguments in, output printed, exit status returned.

The endpoint commands reach the endpoint through :func:`~p2pspace.app.cli.choose_backend.connect`
and print with :mod:`~p2pspace.app.cli.rendering`; a command that talks to a running node
imports nothing else. Everything heavy -- the demo, the simulator, the bench, the identity
(cryptography), the foreground node (trio) -- is imported inside the one command that needs it.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.choose_backend import connect
from p2pspace.app.cli.rendering import (
    format_members,
    format_status,
    format_thread,
    format_value,
    one_line,
    say,
)


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


# -- programs: no endpoint needed ---------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    import trio

    from p2pspace.app.demo import run as demo_run

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
    from p2pspace.testing.simnet import run_simulation

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
    from p2pspace.app.bench.report import format_table, to_json_lines
    from p2pspace.app.bench.suite import run

    results = run(args.workload, quick=args.quick, repeat=args.repeat)
    print(to_json_lines(results) if args.json else format_table(results))
    return 0


PROGRAMS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "bench": cmd_bench,
}


# -- the endpoint: its identity and the foreground node -----------------------------------------


def cmd_init(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.core.identity import format_endpoint_id
    from p2pspace.core.membership import member_name_problem
    from p2pspace.errors import LocalProtocolError
    from p2pspace.node.home import encrypt_new_home, home_lock, open_endpoint, write_config

    if args.name is not None and (problem := member_name_problem(args.name)) is not None:
        raise CliError(problem)
    passphrase = bool(getattr(args, "passphrase", False))
    encrypt = passphrase or bool(getattr(args, "encrypt", False))
    try:
        with home_lock(home):
            # An encrypted home gets its key before anything else is written there.
            home_key = encrypt_new_home(home, use_keyring=not passphrase) if encrypt else None
            endpoint = open_endpoint(
                home,
                name=args.name or "",
                new_store=bool(getattr(args, "new_store", False)),
                home_key=home_key,
            )
            try:
                endpoint_id = endpoint.endpoint_id
            finally:
                endpoint.close()
            if args.name is not None:
                write_config(home, name=args.name)
    except LocalProtocolError as exc:
        raise CliError(str(exc)) from None
    print(format_endpoint_id(endpoint_id))
    if home_key is not None:
        kept = {
            "keyring": "under a key kept in the OS keyring",
            "passphrase": "under your passphrase (nothing opens them without it)",
        }[home_key.method.value]
        print(f"the store and identity key are encrypted at rest, {kept}", file=sys.stderr)
    return 0


def cmd_id(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.app.cli.offline_backend import require_endpoint
    from p2pspace.core.identity import format_endpoint_id
    from p2pspace.node.home import load_or_create_identity

    endpoint_id = load_or_create_identity(require_endpoint(home)).endpoint_id
    print(endpoint_id.hex() if args.hex else format_endpoint_id(endpoint_id))
    return 0


def cmd_run(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.app.cli.offline_backend import require_endpoint
    from p2pspace.app.cli.run_node import run_node

    run_node(
        require_endpoint(home),
        listen=args.listen,
        interfaces=args.interface,
        peers=args.peer,
        api=args.api,
        discovery=not args.no_discovery,
    )
    return 0


# -- the endpoint through a backend (the running node, else the store) --------------------------


def cmd_space(args: argparse.Namespace, home: Path) -> int:
    backend = connect(home)
    if args.space_command == "create":
        info = backend.create_space(args.name, args.tool, args.allow_duplicate)
        print(info["id"])
        say(
            f"Created the space {one_line(info['name'])!r}; invite people with: "
            f"p2pspace invite {shlex.quote(info['name'])}"
        )
        return 0
    if args.space_command == "rename":
        old, info = backend.rename_space(args.space, args.name)
        print(f"Renamed {one_line(old)!r} to {one_line(info['name'])!r} for every member")
        return 0
    if args.space_command == "leave":
        info = backend.leave_space(args.space)
        print(f"You left {one_line(info['name']) or info['id']!r}; it stays readable here")
        return 0
    if args.space_command == "compact":
        done = backend.compact_space(args.space, args.keep_history)
        name = one_line(done["name"]) or done["id"]
        if done["keep_history"]:
            print(f"{name!r} keeps its whole history; nothing was deleted")
        else:
            print(
                f"{name!r}: deleted {done['deleted']:,} old change(s) this computer no longer "
                f"needs (everything up to checkpoint {done['checkpoint']}; what they made stays)"
            )
        return 0
    spaces = backend.spaces()
    if args.json:
        print(json.dumps(spaces, indent=2))
        return 0
    names = [info["name"] for info in spaces]
    for info in spaces:
        name = one_line(info["name"]) or "(no name)"
        if names.count(info["name"]) > 1:
            name += f" [{info['id'][:8]}]"  # two spaces share the name: which is which
        count = len(info["members"])
        people = f"{count} member{'' if count == 1 else 's'}"
        role = f", you are a {info['role']}" if info.get("role") else ""
        print(f"{name}  {people}{role}{_standing(info)}  {info['id']}")
    return 0


def _standing(info: dict[str, Any]) -> str:
    """What ``space list`` adds after a space this endpoint cannot write to."""
    if info.get("removed_by"):
        return f"  (removed by {one_line(info['removed_by_name'])}, read-only)"
    return "" if info["member"] else "  (joining)"


def cmd_member(args: argparse.Namespace, home: Path) -> int:
    backend = connect(home)
    command = args.member_command
    if command == "list":
        members = backend.members(args.space)
        if args.json:
            print(json.dumps(members, indent=2))
        else:
            print(format_members(members))
        return 0
    if command == "remove":
        removed = backend.remove_member(args.space, args.member)
        print(f"{one_line(removed['display_name'])} was removed from {one_line(args.space)}")
        return 0
    changed = backend.set_role(args.space, args.member, args.role)
    print(f"{one_line(changed['display_name'])} is now a {changed['role']}")
    return 0


def cmd_invite(args: argparse.Namespace, home: Path) -> int:
    print(connect(home).invite(args.space, args.role, args.ttl))
    say(
        f"One person can join {one_line(args.space)!r} with this code, as {args.role}: "
        "p2pspace join CODE (it works once)"
    )
    return 0


def cmd_join(args: argparse.Namespace, home: Path) -> int:
    joined = connect(home).join(args.code, args.timeout)
    print(joined["space"])
    count = joined["members"]
    inviter = f" from {one_line(joined['inviter'])}" if joined.get("inviter") else ""
    say(f"Joined {one_line(joined['name'])!r}{inviter}: {count} member{'' if count == 1 else 's'}")
    return 0


def cmd_rdb(args: argparse.Namespace, home: Path) -> int:
    if args.rdb_command == "set":
        fields = dict(parse_field(item) for item in args.fields)
        connect(home).rdb_set(args.space, args.table, args.record, fields)
        names = ", ".join(one_line(name) for name in sorted(fields))
        say(f"Set {names} of {one_line(args.table)}/{one_line(args.record)}")
        return 0
    if args.rdb_command == "delete":
        connect(home).rdb_delete(args.space, args.table, args.record)
        say(f"Deleted {one_line(args.table)}/{one_line(args.record)}")
        return 0
    found = connect(home).rdb_get(args.space, args.table, args.record, args.wait)
    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    elif args.record is not None:
        for name, value in sorted(found.items()):
            print(f"{name}={format_value(value)}")
    else:
        for record, fields in found.items():
            shown = " ".join(f"{k}={format_value(v)}" for k, v in sorted(fields.items()))
            print(f"{record}  {shown}")
    return 0


def cmd_discuss(args: argparse.Namespace, home: Path) -> int:
    backend = connect(home)
    command = args.discuss_command
    if command == "show":
        threads = backend.discuss_threads(args.space, args.topic)
        if args.json:
            shown: object = {"thread": threads[0]} if args.topic else {"threads": threads}
            print(json.dumps(shown, indent=2))
        elif threads:
            lines = (line for t in threads for line in format_thread(t, full=args.full))
            print("\n".join(lines))
        else:
            print("no topics yet")
        return 0
    if command == "post":
        print(backend.discuss_post(args.space, args.title, args.body))
        say(f"Posted the topic {one_line(args.title.strip())!r}")
    elif command == "reply":
        reply = backend.discuss_reply(args.space, args.post, args.body)
        print(reply["id"])
        say(f"Replied to {one_line(reply['parent_author_name'])}")
    elif command == "edit":
        edited = backend.discuss_edit(args.space, args.post, args.body, args.title)
        print(edited["id"])
        say(f"Saved your edit of {_label(edited)}")
    elif command == "delete":
        deleted = backend.discuss_delete(args.space, args.post)
        print(deleted["id"])
        say(f"Deleted your {_label(deleted)} (p2pspace discuss undo brings it back)")
    else:
        undone = backend.discuss_undo(args.space)
        print(undone["id"])
        what = {"edit": "edit of", "delete": "delete of"}.get(undone["kind"], "change to")
        say(f"Undid your {what} {_label(undone)}")
    return 0


def _label(answer: dict[str, Any]) -> str:
    """A post in words for a message: its label from the node, or "post" when it has none."""
    return one_line(str(answer.get("label") or "")) or "post"


def cmd_open(args: argparse.Namespace, home: Path) -> int:
    import html
    import webbrowser

    from p2pspace.node.home import OPEN_FILE, write_private

    url = connect(home).web_ui_url(args.space)
    print(url, flush=True)
    if args.print_url:
        return 0
    # The browser is handed a page in the home folder (mode 0600, the folder 0700) that
    # forwards to the one-time link: the link itself never appears on the browser's command
    # line, which other users of this computer can read in /proc.
    page = home / OPEN_FILE
    quoted = html.escape(url, quote=True)
    write_private(
        page,
        "<!doctype html><meta charset=utf-8><meta name=referrer content=no-referrer>"
        f'<meta http-equiv=refresh content="0;url={quoted}"><title>p2pspace</title>'
        f'<p><a href="{quoted}">Open p2pspace</a>',
    )
    if not webbrowser.open(page.resolve().as_uri()):
        raise CliError("cannot start a web browser here; open the URL above by hand")
    return 0


def cmd_status(args: argparse.Namespace, home: Path) -> int:
    backend = connect(home)
    status = backend.status()
    if args.json:
        status["online"] = backend.online
        print(json.dumps(status, indent=2))
        return 0
    print(format_status(status, online=backend.online, verbose=args.verbose))
    return 0


class ToolClient:
    """What a tool's command-line entry gets: :meth:`call` reaches the tool's API on the running
    node (paths relative to ``/tools/NAME/api``), :meth:`say` prints a line of words."""

    def __init__(self, backend: Any, name: str) -> None:
        self._backend = backend
        self._base = f"/tools/{name}/api"

    def call(self, method: str, path: str, body: object = None) -> Any:
        return self._backend.call(method, self._base + path, body)

    def say(self, line: str) -> None:
        say(one_line(line))


def cmd_tool(args: argparse.Namespace, home: Path) -> int:
    from p2pspace.tools.plugin import installed_plugin

    plugin = installed_plugin(args.name)
    if plugin is None:
        raise CliError(f"no tool named {args.name!r} is installed (pip install it first)")
    if not plugin.cli:
        raise CliError(f"the tool {args.name!r} has no commands of its own")
    main = plugin.load(plugin.cli)
    backend = connect(home)
    if not backend.online:
        raise CliError(
            f"the tool {args.name!r} works through the running node: start it with "
            f"p2pspace run --home {home}"
        )
    status: int = main(list(args.tool_args), ToolClient(backend, args.name))
    return status


ENDPOINT_COMMANDS: dict[str, Callable[[argparse.Namespace, Path], int]] = {
    "init": cmd_init,
    "id": cmd_id,
    "run": cmd_run,
    "space": cmd_space,
    "member": cmd_member,
    "invite": cmd_invite,
    "join": cmd_join,
    "rdb": cmd_rdb,
    "discuss": cmd_discuss,
    "status": cmd_status,
    "open": cmd_open,
    "tool": cmd_tool,
}

__all__ = ["ENDPOINT_COMMANDS", "PROGRAMS", "parse_field"]
