"""What the command line prints: status, members, threads, records, node events, progress.

A thread's text came from other members (authors' names, titles, bodies): :func:`one_line`
makes it safe for a terminal, since escape sequences and bidirectional controls from a peer must
not change what a line shows. ``--json`` output is not rendered: it carries the text as it is.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

PROGRESS_EVERY = 1.0  # seconds between catch-up progress lines
# Bidirectional overrides and isolates: text from peers must not reorder what a line shows.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """``text`` (from any member) safe to print on a terminal: whitespace runs become one space,
    control characters (escape sequences!) and bidirectional controls become U+FFFD."""
    return "".join(
        "\ufffd" if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS else c
        for c in " ".join(text.split())
    )


def format_status(status: dict[str, Any], *, online: bool) -> str:
    """The text form of ``status``: the endpoint, its spaces with members, its peers. Members and
    peers are shown by display name, spaces by name (ids where there is none)."""
    name = f" ({one_line(status['name'])})" if status.get("name") else ""
    lines = [f"endpoint {status['display_id']}{name}"]
    if online:
        lines.append(f"  listen {', '.join(status['listen']) or '-'}   api {status['api']}")
    else:
        lines.append("  node not running (offline view of the store)")
    if status.get("at_rest"):
        lines.append(f"  at rest: {one_line(status['at_rest'])}")
    people: dict[str, str] = {}
    space_names: dict[str, str] = {}
    for space in status["spaces"]:
        space_names[space["id"]] = one_line(space["name"]) or space["id"][:8]
        for member in space["members"]:
            people.setdefault(member["id"], one_line(_display_name(member)))
    for space in status["spaces"]:
        standing = _space_standing(space, status)
        lines.append(
            f"space {one_line(space['name']) or '-'} {space['id']}: {standing}"
            f"{space['executed']} executed, {space['pending']} pending, {space['staged']} staged, "
            f"processor {space['processor']}"
        )
        lines.append(f"  history: {_horizon(space)}")
        if space.get("bad_checkpoints"):
            lines.append(
                f"  warning: {space['bad_checkpoints']} checkpoint(s) carried a state that is "
                "not this space's and closed nothing (made by a manager whose copy differs)"
            )
        for name in space.get("equivocators", ()):
            lines.append(
                f"  warning: {one_line(name)} signed two different histories; its changes since "
                "count for nothing (a manager can remove it: p2pspace member remove)"
            )
        for member in space["members"]:
            who = f"  {one_line(_display_name(member))} ({member['role']})"
            if member["me"]:
                lines.append(f"{who}: this endpoint")
            else:
                link = "connected" if member.get("connected") else "not connected"
                lines.append(f"{who}: {member.get('sync', 'disconnected')}, {link}")
    if status["peers"]:
        lines.append("peers")
    for peer in status["peers"]:
        where = peer.get("address") or ", ".join(peer["addresses"]) or "-"
        states = ", ".join(
            f"{space_names.get(s, s[:8])} {state}" for s, state in peer["spaces"].items()
        )
        connected = "connected" if peer["connected"] else "not connected"
        shown = people.get(peer["id"]) or peer["display_id"][:14]
        lines.append(f"  {shown} {connected} {where}  {states}".rstrip())
    return "\n".join(lines)


def _display_name(member: dict[str, Any]) -> str:
    return str(member.get("display_name") or member.get("name") or member["display_id"][:9])


def _space_standing(space: dict[str, Any], status: dict[str, Any]) -> str:
    """The start of a space's status line when this endpoint cannot write to it."""
    if space.get("removed_by"):
        if space["removed_by"] == status["endpoint"]:
            return "you left it (read-only), "
        return f"removed by {one_line(space['removed_by_name'])} (read-only), "
    return "" if space["member"] else "not yet a member, "


def format_members(members: list[dict[str, Any]]) -> str:
    """``member list``: one line a member (``SpaceMemberView.to_json()``) -- display name,
    role, and what this node knows: "you", presence and sync state, or who removed it."""
    rows = []
    for m in members:
        name = one_line(m["display_name"]) + (" (you)" if m["me"] else "")
        if not m["current"]:
            note = "left" if m["left"] else f"removed by {one_line(m['removed_by_name'])}"
        elif m["me"]:
            note = "this endpoint"
        else:
            presence = "online" if m["online"] else "offline"
            note = f"{presence}, {m['sync'] or 'disconnected'}"
        if m.get("equivocated"):
            note += "; signed two histories (its changes since count for nothing)"
        rows.append((name, m["role"] if m["current"] else "-", note))
    if not rows:
        return "no members"
    width = max(len(name) for name, _r, _n in rows)
    return "\n".join(f"{name:<{width}}  {role:<11}  {note}" for name, role, note in rows)


def format_thread(thread: dict[str, Any], depth: int = 0) -> list[str]:
    """One line a post of ``thread`` (``Post.to_json()``), replies indented under their parent:
    id, author, sync status, then the title and body (``[deleted]`` for a tombstone)."""
    if thread["deleted"]:
        text = "[deleted]"
    else:
        title, body = one_line(thread.get("title") or ""), one_line(thread["body"])
        text = f"{title} -- {body}" if title and body else title or body
        if thread.get("edited"):
            text += " (edited)"
    name = one_line(thread["author_name"]) or thread["author"][:8]
    lines = [f"{'  ' * depth}{thread['id']}  {name}  [{thread['status']}]  {text}"]
    for reply in thread["replies"]:
        lines += format_thread(reply, depth + 1)
    return lines


def format_value(value: object) -> str:
    """A record field for ``rdb get``: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def describe_event(event: dict[str, Any]) -> str:
    """One log line for a node event."""
    parts = [str(event.get("type", "event"))]
    for key, value in event.items():
        if key == "type" or value in ("", None):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)


class ProgressPrinter:
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


__all__ = [
    "ProgressPrinter",
    "describe_event",
    "format_members",
    "format_status",
    "format_thread",
    "format_value",
    "one_line",
]


def _horizon(space: dict[str, Any]) -> str:
    """The space's horizon in words: what is closed, and what a late change can still reorder."""
    window = space.get("window", 0)
    size = _kib(space.get("window_bytes", 0))
    open_part = f"{window} change(s) since ({size}) can still be reordered"
    count = space.get("checkpoints", 0)
    if not count:
        return f"no checkpoint yet; {open_part}"
    when = datetime.fromtimestamp(space["last_checkpoint"] / 1000, tz=UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    return f"{count} checkpoint(s), the last at {when}; {open_part}"


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1048576:.1f} MiB"
