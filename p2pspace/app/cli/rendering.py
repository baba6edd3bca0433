"""What the command line prints: status, threads, records, node events, catch-up progress.

A thread's text came from other members (authors' names, titles, bodies): :func:`one_line`
makes it safe for a terminal, since escape sequences and bidirectional controls from a peer must
not change what a line shows. ``--json`` output is not rendered: it carries the text as it is.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
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
    "format_status",
    "format_thread",
    "format_value",
    "one_line",
]
