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
from collections.abc import Callable
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


SYNC_WORDS = {
    "live": "in sync",
    "catching up": "catching up",
    "connecting": "connecting",
    "disconnected": "offline",
    "error": "cannot sync (see the node's log)",
}


def format_status(status: dict[str, Any], *, online: bool, verbose: bool = False) -> str:
    """The text form of ``status`` in words: who this endpoint is, whether its node runs, each
    space with this endpoint's standing and each other member's sync in words. ``verbose``:
    the internals too (:func:`format_status_verbose`)."""
    if verbose:
        return format_status_verbose(status, online=online)
    who = one_line(status.get("name") or "") or "this endpoint"
    lines = [f"You are {who} ({status['display_id']})"]
    if online:
        lines.append("  your node is running; open the web UI with: p2pspace open")
    else:
        lines.append("  your node is not running (start it with: p2pspace run)")
    if status.get("at_rest"):
        lines.append(f"  at rest: {one_line(status['at_rest'])}")
    if not status["spaces"]:
        lines.append("No spaces yet: p2pspace space create NAME, or p2pspace join CODE")
    names = [s["name"] for s in status["spaces"]]
    for space in status["spaces"]:
        name = one_line(space["name"]) or space["id"][:8]
        if names.count(space["name"]) > 1:
            name += f" [{space['id'][:8]}]"
        others = [m for m in space["members"] if not m["me"]]
        count = len(space["members"])
        if space.get("removed_by") or not space["member"]:
            lines.append(f"{name}: {_space_standing(space, status).rstrip(', ')}")
        else:
            lines.append(
                f"{name}: you are a {space['role']}, {count} member{'' if count == 1 else 's'}"
            )
        lines += _warnings(space)
        if space.get("removed_by"):
            continue
        for member in sorted(others, key=lambda m: _display_name(m).casefold()):
            who = f"  {one_line(_display_name(member))} ({member['role']})"
            state = SYNC_WORDS.get(member.get("sync") or "", "offline")
            lines.append(f"{who}: {state}" if online else who)
    return "\n".join(lines)


def _warnings(space: dict[str, Any]) -> list[str]:
    lines = []
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
    return lines


def format_status_verbose(status: dict[str, Any], *, online: bool) -> str:
    """``status --verbose``: the endpoint, its spaces with their counts, processor and horizon,
    members with sync states, and its peers with addresses. Members and peers are shown by
    display name, spaces by name (ids where there is none)."""
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
        lines += _warnings(space)
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


PREVIEW = 80  # characters of a post's first line that `discuss show` prints


def format_thread(
    thread: dict[str, Any], depth: int = 0, *, full: bool = False, now: float | None = None
) -> list[str]:
    """One line a post of ``thread`` (``Post.to_json()``), replies indented under their parent:
    who wrote it and when, how far it got (only while it has not reached everyone), what it
    says (a topic's title, then the start of its first line; ``[deleted]`` for a tombstone),
    and its id, for ``reply``, ``edit`` and ``delete``. ``full``: each post's whole text
    follows its line, indented under it."""
    now = time.time() if now is None else now
    indent = "  " * depth
    if thread["deleted"]:
        text = "[deleted]"
    else:
        title, first = one_line(thread.get("title") or ""), _first_line(thread["body"])
        text = f"{title} -- {first}" if title and first else title or first
        if thread.get("edited"):
            text += " (edited)"
    name = one_line(thread["author_name"]) or thread["author"][:8]
    status = "" if _reached_everyone(thread) else f" [{thread['status']}]"
    when = ago(thread["created"], now)
    lines = [f"{indent}{name}, {when}{status}: {text}  · {thread['id']}"]
    if full and not thread["deleted"] and thread["body"].strip():
        lines += [f"{indent}    {one_line(line)}" for line in thread["body"].strip().splitlines()]
    for reply in thread["replies"]:
        lines += format_thread(reply, depth + 1, full=full, now=now)
    return lines


def _first_line(body: str) -> str:
    for line in body.splitlines():
        shown = one_line(line)
        if shown:
            return shown if len(shown) <= PREVIEW else shown[: PREVIEW - 1].rstrip() + "…"
    return ""


def _reached_everyone(post: dict[str, Any]) -> bool:
    return not post.get("pending") and post.get("delivered", 0) >= post.get("members", 0)


def ago(ms: object, now: float) -> str:
    """A time (ms since the epoch, from any member) in words relative to ``now`` (seconds):
    "just now", "5 min ago", "3 h ago", "2 days ago", then the date."""
    if not isinstance(ms, int) or not 0 < ms < 2**53:
        return "at an unknown time"
    seconds = now - ms / 1000
    if abs(seconds) < 60:
        return "just now"
    if seconds < 0:
        return "in the future"
    for limit, unit, name in ((3600, 60, "min"), (86400, 3600, "h"), (7 * 86400, 86400, "day")):
        if seconds < limit:
            count = int(seconds // unit)
            return f"{count} {name}{'s' if name == 'day' and count != 1 else ''} ago"
    try:
        return "on " + datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "at an unknown time"


def format_value(value: object) -> str:
    """A record field for ``rdb get``: text as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


Names = Callable[[str, str], str]  # (space hex, member hex or "") -> a name to show


def describe_event(event: dict[str, Any], names: Names | None = None) -> str:
    """One log line for a node event (its JSON form), in words: spaces and people by name
    (``names``: space id, member id -> name; "" for the space's own name). An event kind
    without words of its own is shown as ``type key=value ...``."""
    if names is not None:
        words = _event_words(event, names)
        if words is not None:
            return words[:1].upper() + words[1:]
    parts = [str(event.get("type", "event"))]
    for key, value in event.items():
        if key == "type" or value in ("", None):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def _event_words(event: dict[str, Any], names: Names) -> str | None:
    kind, space = event.get("type"), str(event.get("space") or "")

    def who(key: str) -> str:
        return one_line(names(space, str(event.get(key) or "")))

    where = f"{one_line(names(space, ''))!r}"
    if kind == "space":
        return f"The space {where} is here now"
    if kind == "sync":
        state = str(event.get("state", ""))
        if state == "error":
            return f"Cannot sync {where} with {who('peer')}: {one_line(str(event.get('error')))}"
        return f"{who('peer')} is {SYNC_WORDS.get(state, state)} in {where}"
    if kind == "processor":
        return f"The space {where} cannot be written here any more ({event.get('state')})"
    if kind == "member_added":
        return f"{who('by')} added {who('member')} to {where} as {event.get('role')}"
    if kind == "member_removed":
        if event.get("by") == event.get("member"):
            return f"{who('member')} left {where}"
        return f"{who('by')} removed {who('member')} from {where}"
    if kind == "role":
        by = f"{who('by')} made" if event.get("by") else "Now"
        return f"{by} {who('member')} a {event.get('role')} in {where}"
    if kind == "removed":
        return f"You are no longer a member of {where} (by {who('by')}); it stays readable here"
    return None


class ProgressPrinter:
    """Catch-up progress on stderr, at most once a second and only once it takes a while."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False
        self.total = 0

    def __call__(self, have: int, total: int) -> None:
        now = time.monotonic()
        if total <= have or now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        self.shown = True
        self.total = total
        say(f"Receiving the space: {have:,} of {total:,} changes")

    def done(self) -> None:
        """The join finished: called only then, never after a failure."""
        if self.shown:
            say(f"Received all {self.total:,} changes")


def say(line: str) -> None:
    """A line in words for the person at the terminal (on stderr: standard output keeps what a
    script reads, such as the id a command made)."""
    print(line, file=sys.stderr, flush=True)


__all__ = [
    "ProgressPrinter",
    "say",
    "describe_event",
    "format_members",
    "format_status",
    "format_status_verbose",
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
