"""The command line in plain words: what happened to the user's things on stderr (stdout keeps
what scripts read), names checked where they are typed, duplicate names refused, no silent
no-ops, addresses validated in one line each, node log lines in words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.rendering import describe_event, format_thread
from p2pspace.app.cli.run_node import interface_addresses, listen_address, peer_address
from tests.helpers.cli_inproc import Cli


def test_init_refuses_a_name_the_members_engine_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(tmp_path / "a", capsys)
    line = run.fails("init", "--name", "x" * 201, match="a name is at most 200 characters")
    assert "this one has 201" in line
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    run("init", "--name", "y" * 200)


def test_spaces_records_and_posts_say_what_happened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Cli(tmp_path / "a", capsys)
    run("init", "--name", "ann")
    out, err = run.said("space", "create", "team")
    space = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", space)
    assert err == "Created the space 'team'; invite people with: p2pspace invite team\n"

    # A second 'team' would make every command that says 'team' ambiguous: refused.
    run.fails("space", "create", "team", match="a space named 'team' is here already")
    twin = run.said("space", "create", "team", "--allow-duplicate")[0].strip()
    listed = run("space", "list").splitlines()
    assert sorted(listed) == sorted(
        [
            f"team [{space[:8]}]  1 member, you are a manager  {space}",
            f"team [{twin[:8]}]  1 member, you are a manager  {twin}",
        ]
    )
    line = run.fails("rdb", "get", "team", "t", match="'team' names 2 spaces here")
    assert space[:8] in line and twin[:8] in line

    # Records: a set and a delete say so; a set of a deleted record is an error, not a no-op.
    assert run.said("rdb", "set", space, "t", "r1", "b=2", "a=1")[1] == "Set a, b of t/r1\n"
    assert run.said("rdb", "delete", space, "t", "r1")[1] == "Deleted t/r1\n"
    run.fails("rdb", "set", space, "t", "r1", "a=3", match="record t/r1 was deleted")
    run.fails("rdb", "delete", space, "t", "r1", match="already deleted")
    run.fails("rdb", "delete", space, "t", "nope", match="no record t/nope")

    # Posts: stdout the id, stderr what happened to it.
    run("space", "rename", twin, "other")
    out, err = run.said("discuss", "post", "team", "Lunch?", "Where shall we go?\nNoon?")
    topic = out.strip()
    assert err == "Posted the topic 'Lunch?'\n"
    out, err = run.said("discuss", "reply", "team", topic, "Pizza")
    reply = out.strip()
    assert err == "Replied to ann\n"
    assert run.said("discuss", "edit", "team", topic, "Somewhere else")[1] == (
        "Saved your edit of 'Lunch?'\n"
    )
    assert run.said("discuss", "undo", "team")[1] == "Undid your edit of 'Lunch?'\n"
    assert run.said("discuss", "delete", "team", reply)[1] == (
        "Deleted your reply “Pizza” (p2pspace discuss undo brings it back)\n"
    )
    assert run.said("discuss", "undo", "team")[1] == "Undid your delete of reply “Pizza”\n"

    # One line a post; --full adds the bodies under them.
    shown = run("discuss", "show", "team").splitlines()
    assert len(shown) == 2
    assert re.fullmatch(rf"ann, just now: Lunch\? -- Where shall we go\?  · {topic}", shown[0])
    assert re.fullmatch(rf"  ann, just now: Pizza  · {re.escape(reply)}", shown[1])
    full = run("discuss", "show", "team", "--full").splitlines()
    assert full[1:3] == ["    Where shall we go?", "    Noon?"]


def test_discuss_show_cuts_long_first_lines_and_shows_status_only_while_not_everywhere() -> None:
    post = {
        "id": "p",
        "title": "",
        "body": "word " * 40 + "\nsecond line",
        "deleted": False,
        "edited": None,
        "author_name": "bob",
        "author": "bb" * 16,
        "status": "pending",
        "pending": True,
        "delivered": 1,
        "members": 2,
        "created": 1_000_000,
        "replies": [],
    }
    (line,) = format_thread(post, now=1_000 + 3 * 3600)
    assert line.startswith("bob, 3 h ago [pending]: word word")
    assert line.endswith("…  · p") and len(line.split(": ", 1)[1]) < 100
    everywhere = {**post, "pending": False, "delivered": 2, "status": "delivered to 2 of 2"}
    assert "[" not in format_thread(everywhere, now=1_000)[0]


def test_addresses_are_validated_in_one_line_each() -> None:
    assert listen_address("0.0.0.0:7654", default_port=7654) == ("0.0.0.0", 7654)
    assert listen_address("[::1]:0", default_port=7654) == ("::1", 0)
    for bad in ("nowhere:7654", "1.2.3.4:99999", ":", "0.0.0.0:x"):
        with pytest.raises(CliError, match=r"--listen|HOST:PORT") as caught:
            listen_address(bad, default_port=7654)
        assert "\n" not in str(caught.value)
    assert peer_address("192.168.1.20", default_port=7654) == ("192.168.1.20", 7654)
    assert peer_address("alice-laptop.local:9000", default_port=7654) == (
        "alice-laptop.local",
        9000,
    )
    for bad in ("", "bad host:1", "host:0", "host:70000", "-x-:1", "a..b", "[::1"):
        with pytest.raises(CliError, match="--peer") as caught:
            peer_address(bad, default_port=7654)
        assert "\n" not in str(caught.value)
    assert interface_addresses(["127.0.0.1"]) == ["127.0.0.1"]
    assert "127.0.0.1" in interface_addresses(["lo"])
    for bad in ("eth-nonexistent", "203.0.113.9", "not an address"):
        with pytest.raises(CliError, match="--interface") as caught:
            interface_addresses([bad])
        assert "\n" not in str(caught.value) and "lo" in str(caught.value)


def test_node_events_are_logged_in_words() -> None:
    space, ann, bob = "aa" * 16, "01" * 16, "02" * 16
    names = {"": "team", ann: "ann", bob: "bob"}

    def name_of(space_id: str, member: str) -> str:
        assert space_id == space
        return names[member]

    def words(**event: object) -> str:
        return describe_event({"space": space, **event}, name_of)

    assert words(type="sync", peer=bob, state="live", error="") == "Bob is in sync in 'team'"
    assert words(type="sync", peer=bob, state="catching up", error="") == (
        "Bob is catching up in 'team'"
    )
    assert words(type="sync", peer=bob, state="error", error="bad frame") == (
        "Cannot sync 'team' with bob: bad frame"
    )
    assert words(type="member_added", member=bob, role="guest", by=ann) == (
        "Ann added bob to 'team' as guest"
    )
    assert words(type="member_removed", member=bob, by=ann) == "Ann removed bob from 'team'"
    assert words(type="member_removed", member=bob, by=bob) == "Bob left 'team'"
    assert words(type="role", member=bob, role="manager", by=ann) == (
        "Ann made bob a manager in 'team'"
    )
    assert words(type="space", name="team") == "The space 'team' is here now"
    # Without names (or for a kind without words) the line keeps its fields.
    assert describe_event({"type": "acks", "space": space, "peer": bob}) == (
        f"acks space={space} peer={bob}"
    )
