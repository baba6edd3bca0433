"""``p2pspace member`` and ``space leave`` end to end: real node processes, loopback only.

Three endpoints -- ann (manager), bob (participant), cy (guest) -- each a ``p2pspace run``
process; every command is a ``p2pspace`` subprocess. Waits are on the nodes' event streams,
bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import TIMEOUT
from tests.helpers.cli_node import NodeProcess, cli, fails, running, status_of


def wait_status(node: NodeProcess, what: str, ready: Callable[[dict[str, Any]], bool]) -> None:
    """Until ``status --json`` of ``node`` satisfies ``ready`` (re-checked after each event)."""
    token = (node.home / "api.token").read_text().strip()
    request = urllib.request.Request(f"{node.api_url}/api/events?token={token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + TIMEOUT
    with opener.open(request, timeout=TIMEOUT) as events:
        while not ready(status := status_of(node.home)):
            while True:
                assert time.monotonic() < deadline, f"waiting for {what}: {status}"
                if events.readline().startswith(b"data: "):
                    break


def member_list(home: Path, space: str) -> dict[str, dict[str, Any]]:
    members = json.loads(cli(home, "member", "list", space, "--json").stdout)
    return {m["name"]: m for m in members}


def roles_in(status: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["role"] for m in status["spaces"][0]["members"]}


def test_roles_removal_and_leaving_through_the_command_line(tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("ann", "bob", "cy")}
    for name, home in homes.items():
        cli(home, "init", "--name", name)
    ann_h, bob_h, cy_h = homes["ann"], homes["bob"], homes["cy"]
    space = cli(ann_h, "space", "create", "notes").stdout.strip()

    with (
        running(ann_h, tmp_path / "ann.log") as ann,
        running(bob_h, tmp_path / "bob.log") as bob,
        running(cy_h, tmp_path / "cy.log") as cy,
    ):
        code = cli(ann_h, "invite", "notes").stdout.strip()
        assert cli(bob_h, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space
        code = cli(ann_h, "invite", "notes", "--role", "guest").stdout.strip()
        assert cli(cy_h, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space
        full = {"ann": "manager", "bob": "participant", "cy": "guest"}
        wait_status(ann, "three members", lambda s: roles_in(s) == full)

        listed = member_list(ann_h, "notes")
        assert {n: m["role"] for n, m in listed.items()} == full
        assert listed["ann"]["me"] and not listed["bob"]["me"]
        text = cli(ann_h, "member", "list", "notes").stdout
        assert "ann (you)" in text and "bob" in text and "guest" in text
        assert listed["bob"]["id"] not in text  # names, not hex

        # Only a manager invites; a guest writes nothing; a participant manages nothing.
        fails(bob_h, "invite", "notes", match="only a manager can invite")
        fails(cy_h, "rdb", "set", "notes", "t", "r", "v=1", match="a guest cannot make changes")
        fails(cy_h, "discuss", "post", "notes", "Hi", "guest here", match="a guest cannot")
        fails(bob_h, "member", "remove", "notes", "cy", match="only a manager")
        fails(bob_h, "member", "role", "notes", "bob", "manager", match="only a manager")
        # The last manager cannot be removed, demoted or leave.
        fails(ann_h, "member", "remove", "notes", "ann", match="you are the last manager")
        fails(ann_h, "member", "role", "notes", "ann", "guest", match="you are the last manager")
        fails(ann_h, "space", "leave", "notes", match="you are the last manager")
        # Names that match nothing, or several, and roles that do not exist.
        fails(ann_h, "member", "remove", "notes", "zed", match="no member 'zed'")
        fails(ann_h, "member", "role", "notes", "bob", "emperor", match="invalid choice")
        fails(ann_h, "member", "remove", "nope", "bob", match="no space named 'nope'")

        # The manager removes the guest, by its short id.
        cy_short = listed["cy"]["short_id"]
        out = cli(ann_h, "member", "remove", "notes", cy_short).stdout
        assert out.strip() == "cy was removed from notes"
        wait_status(cy, "cy removed", lambda s: s["spaces"][0]["removed_by_name"] == "ann")
        assert "removed by ann (read-only)" in cli(cy_h, "status").stdout
        assert "removed by ann, read-only" in cli(cy_h, "space", "list").stdout
        fails(cy_h, "rdb", "set", "notes", "t", "r", "v=1", match="you were removed by ann")
        assert cli(cy_h, "rdb", "get", "notes", "t", "--json").stdout.strip() == "{}"
        gone = member_list(ann_h, "notes")["cy"]
        assert (gone["current"], gone["removed_by_name"]) == (False, "ann")
        assert "removed by ann" in cli(ann_h, "member", "list", "notes").stdout

        # The manager promotes bob; then bob may manage, and ann may leave.
        out = cli(ann_h, "member", "role", "notes", "bob", "manager").stdout
        assert out.strip() == "bob is now a manager"
        wait_status(bob, "bob a manager", lambda s: s["spaces"][0]["role"] == "manager")
        cli(bob_h, "member", "role", "notes", "ann", "participant")
        wait_status(ann, "ann demoted", lambda s: s["spaces"][0]["role"] == "participant")
        out = cli(ann_h, "space", "leave", "notes").stdout
        assert out.strip() == "You left 'notes'; it stays readable here"
        assert "you left it (read-only)" in cli(ann_h, "status").stdout
        fails(ann_h, "rdb", "set", "notes", "t", "r", "v=1", match="you left it")
        wait_status(bob, "ann gone", lambda s: roles_in(s) == {"bob": "manager"})
        left = member_list(bob_h, "notes")["ann"]
        assert (left["current"], left["left"]) == (False, True)

        for node in (ann, bob, cy):
            assert node.stop() == 0
            assert "Traceback" not in node.stderr()

    # Offline, on the stores: the same commands and answers.
    offline = member_list(bob_h, "notes")
    assert {n: (m["current"], m["role"]) for n, m in offline.items()} == {
        "ann": (False, "participant"),
        "bob": (True, "manager"),
        "cy": (False, "guest"),
    }
    fails(bob_h, "space", "leave", "notes", match="you are the last manager")
    fails(cy_h, "member", "remove", "notes", "bob", match="you were removed by ann")
    assert "removed by ann" in cli(cy_h, "status").stdout


def test_a_member_removed_while_its_node_was_stopped_is_told_when_it_comes_back(
    tmp_path: Path,
) -> None:
    homes = {name: tmp_path / name for name in ("ann", "bob")}
    for name, home in homes.items():
        cli(home, "init", "--name", name)
    ann_h, bob_h = homes["ann"], homes["bob"]
    cli(ann_h, "space", "create", "notes")
    with running(ann_h, tmp_path / "ann.log") as ann:
        with running(bob_h, tmp_path / "bob.log") as bob:
            code = cli(ann_h, "invite", "notes").stdout.strip()
            cli(bob_h, "join", code, "--timeout", str(TIMEOUT))
            cli(bob_h, "rdb", "set", "notes", "t", "before", "v=1")
            wait_status(ann, "bob's change", lambda s: s["spaces"][0]["executed"] >= 3)
            assert bob.stop() == 0
        # bob is away: ann removes it, then goes on writing.
        assert cli(ann_h, "member", "remove", "notes", "bob").stdout.strip() == (
            "bob was removed from notes"
        )
        cli(ann_h, "rdb", "set", "notes", "t", "after", "v=2")
        assert "removed by ann" not in cli(bob_h, "status").stdout
        with running(bob_h, tmp_path / "bob-again.log") as bob:
            wait_status(bob, "bob told", lambda s: s["spaces"][0]["removed_by_name"] == "ann")
            assert "removed by ann (read-only)" in cli(bob_h, "status").stdout
            records = json.loads(cli(bob_h, "rdb", "get", "notes", "t", "--json").stdout)
            assert set(records) == {"before"}  # its history stays; nothing after the removal
            fails(bob_h, "rdb", "set", "notes", "t", "r", "v=3", match="you were removed by ann")
            assert bob.stop() == 0
            assert "Traceback" not in bob.stderr()
        assert ann.stop() == 0
        assert "Traceback" not in ann.stderr()
