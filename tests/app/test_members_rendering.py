"""What the command line prints about members: ``member list``, and ``status`` of a space this
endpoint was removed from -- names, not ids; text from members made terminal-safe."""

from __future__ import annotations

from typing import Any

from p2pspace.app.cli import parser
from p2pspace.app.cli.rendering import format_members, format_status
from p2pspace.core.membership import ROLES

ANN, BOB, CY = "aa" * 16, "bb" * 16, "cc" * 16


def member(name: str, id_: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": id_,
        "display_id": "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ",
        "short_id": "ABCD-EFGH",
        "name": name,
        "display_name": name,
        "role": "participant",
        "current": True,
        "me": False,
        "removed_by": None,
        "removed_by_name": "",
        "left": False,
        "online": False,
        "connected": False,
        "sync": None,
    }
    entry.update(fields)
    return entry


def test_the_parser_knows_the_roles_of_the_core() -> None:
    assert parser.ROLES == ROLES


def test_member_list_shows_names_roles_and_who_removed_whom() -> None:
    text = format_members(
        [
            member("ann", ANN, role="manager", me=True, online=True),
            member("bob\x1b[31m", BOB, display_name="bob\x1b[31m", online=True, sync="live"),
            member("cy", CY, role="guest", current=False, removed_by=ANN, removed_by_name="ann"),
            member("dee", "dd" * 16, current=False, removed_by="dd" * 16, left=True),
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["ann", "(you)", "manager", "this", "endpoint"]
    assert lines[1].split() == ["bob\ufffd[31m", "participant", "online,", "live"]
    assert lines[2].split() == ["cy", "-", "removed", "by", "ann"]
    assert lines[3].split() == ["dee", "-", "left"]
    assert ANN not in text and "\x1b" not in text
    assert format_members([]) == "no members"


def space(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "ee" * 16,
        "name": "notes",
        "processor": "ready",
        "member": True,
        "role": "participant",
        "removed_by": None,
        "removed_by_name": "",
        "members": [],
        "executed": 3,
        "pending": 0,
        "staged": 0,
        "vector": {},
    }
    entry.update(fields)
    return entry


def status(*spaces: dict[str, Any], peers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "endpoint": CY,
        "display_id": "CCCC-DDDD",
        "name": "cy",
        "listen": [],
        "api": None,
        "spaces": list(spaces),
        "peers": peers or [],
    }


def test_status_says_who_removed_this_endpoint_and_names_peers() -> None:
    bob = member("bob", BOB, display_name="bob", connected=True, sync="live")
    text = format_status(
        status(
            space(members=[bob]),
            space(
                id="ff" * 16,
                name="old",
                member=False,
                role=None,
                removed_by=ANN,
                removed_by_name="ann",
            ),
            space(
                id="11" * 16,
                name="mine",
                member=False,
                role=None,
                removed_by=CY,
                removed_by_name="cy",
            ),
            peers=[
                {
                    "id": BOB,
                    "display_id": "BBBB-BBBB-BBBB",
                    "connected": True,
                    "addresses": [],
                    "address": "127.0.0.1:1",
                    "spaces": {"ee" * 16: "live"},
                }
            ],
        ),
        online=False,
        verbose=True,
    )
    assert f"space old {'ff' * 16}: removed by ann (read-only), 3 executed" in text
    assert f"space mine {'11' * 16}: you left it (read-only), 3 executed" in text
    assert "  bob (participant): live, connected" in text
    assert "  bob connected 127.0.0.1:1  notes live" in text


def test_an_equivocator_is_named_in_member_list() -> None:
    text = format_members([member("mallory", BOB, equivocated=True), member("ann", ANN)])
    (line,) = [row for row in text.splitlines() if "mallory" in row]
    assert "signed two histories" in line
    assert "signed two" not in next(row for row in text.splitlines() if "ann" in row)


def test_status_shows_each_spaces_horizon() -> None:
    fresh = space(window=12, window_bytes=3 * 1024)
    closed = space(
        id="22" * 16,
        name="busy",
        checkpoints=3,
        last_checkpoint=1_790_000_000_000,
        window=4,
        window_bytes=2 * 1048576,
        bad_checkpoints=1,
    )
    text = format_status(status(fresh, closed), online=False, verbose=True)
    assert (
        "  history: no checkpoint yet; 12 change(s) since (3.0 KiB) can still be reordered" in text
    )
    assert (
        "  history: 3 checkpoint(s), the last at 2026-09-21 14:13 UTC; 4 change(s) since "
        "(2.0 MiB) can still be reordered"
    ) in text
    assert "1 checkpoint(s) carried a state that is not this space's" in text


def test_status_speaks_of_spaces_people_and_sync() -> None:
    bob = member("bob", BOB, display_name="bob", connected=True, sync="live")
    ann = member("ann", ANN, display_name="ann", role="manager", sync="catching up")
    me = member("cy", CY, display_name="cy", me=True)
    given = status(
        space(members=[bob, ann, me]),
        space(id="ff" * 16, name="old", member=False, role=None, removed_by=ANN,
              removed_by_name="ann"),
        space(id="12" * 16, name="twin", members=[me]),
        space(id="34" * 16, name="twin", members=[me], member=False, role=None),
    )  # fmt: skip
    text = format_status(given, online=True)
    assert text.splitlines() == [
        "You are cy (CCCC-DDDD)",
        "  your node is running; open the web UI with: p2pspace open",
        "notes: you are a participant, 3 members",
        "  ann (manager): catching up",
        "  bob (participant): in sync",
        "old: removed by ann (read-only)",
        f"twin [{'12' * 4}]: you are a participant, 1 member",
        f"twin [{'34' * 4}]: not yet a member",
    ]
    # No internals: counts of deltas, processors, hex ids of whole spaces.
    assert "executed" not in text and "processor" not in text and "ee" * 16 not in text
    offline = format_status(given, online=False)
    assert "your node is not running (start it with: p2pspace run)" in offline
    assert "  bob (participant)" in offline.splitlines() and "in sync" not in offline
