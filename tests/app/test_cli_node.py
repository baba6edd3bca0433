"""The endpoint commands end to end: real processes, loopback only, no discovery.

Waits are on process output, long-polls and the event stream, each with a bounded timeout.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import TIMEOUT
from tests.helpers.cli_node import cli, fails, running, status_of, wait_live


def test_offline_commands_work_on_the_store(tmp_path: Path) -> None:
    home = tmp_path / "a"
    fails(home, "space", "list", match="p2pspace init")
    shown = cli(home, "init", "--name", "ann").stdout.strip()
    assert cli(home, "id").stdout.strip() == shown
    hex_id = cli(home, "id", "--hex").stdout.strip()
    assert len(hex_id) == 32 and int(hex_id, 16) >= 0
    assert cli(home, "init").stdout.strip() == shown  # idempotent: the same identity

    space = cli(home, "space", "create", "notes").stdout.strip()
    assert len(space) == 32
    assert space in cli(home, "space", "list").stdout
    cli(home, "rdb", "set", "notes", "t", "r1", "n=1", "s=hello", 'q="2"', "b=true", "z=null")
    got = json.loads(cli(home, "rdb", "get", "notes", "t", "r1", "--json").stdout)
    assert got == {"n": 1, "s": "hello", "q": "2", "b": True, "z": None}
    assert cli(home, "rdb", "get", space, "t").stdout.startswith("r1  ")
    cli(home, "rdb", "delete", space[:8], "t", "r1")
    assert json.loads(cli(home, "rdb", "get", "notes", "t", "--json").stdout) == {}

    status = status_of(home)
    assert status["online"] is False and status["name"] == "ann"
    assert [s["id"] for s in status["spaces"]] == [space]
    assert "your node is not running" in cli(home, "status").stdout

    fails(home, "invite", "notes", match="p2pspace run")
    fails(home, "rdb", "set", "notes", "t", "r1", "novalue", match="FIELD=VALUE")
    fails(home, "rdb", "set", "notes", "t", "r1", "=1", match="FIELD=VALUE")
    fails(home, "rdb", "get", "nope", "t", match="no space named 'nope'")
    fails(home, "rdb", "get", "notes", "t", "r1", match="no record t/r1")
    fails(home, "join", "p2ps1-garbage", match="invitation code")
    fails(home, "rdb", "frobnicate", match="invalid choice")

    # A stale api.json (its node is gone) does not stop offline work.
    (home / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": 1}))
    assert space in cli(home, "space", "list").stdout


def test_two_nodes_invite_join_and_share_records(tmp_path: Path) -> None:
    a_home, b_home, c_home = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cli(a_home, "init", "--name", "ann")
    cli(b_home, "init", "--name", "bob")
    cli(c_home, "init", "--name", "cid")
    b_id = cli(b_home, "id", "--hex").stdout.strip()
    space = cli(a_home, "space", "create", "notes").stdout.strip()

    with running(a_home, tmp_path / "a.log") as a, running(b_home, tmp_path / "b.log") as b:
        assert a.info["listen"].startswith("127.0.0.1:")
        assert a.api_url.startswith("http://127.0.0.1:")
        assert json.loads((a_home / "api.json").read_text())["url"] == a.api_url

        code = cli(a_home, "invite", "notes", "--ttl", "600").stdout.strip()
        assert code.startswith("p2ps1-")
        assert cli(b_home, "join", code, "--timeout", str(TIMEOUT)).stdout.strip() == space
        cli(b_home, "rdb", "set", "notes", "t", "r2", 'y="hello"', "z=true", "n=2.5")
        got = cli(a_home, "rdb", "get", "notes", "t", "r2", "--wait", str(TIMEOUT), "--json")
        assert json.loads(got.stdout) == {"y": "hello", "z": True, "n": 2.5}

        a_status = wait_live(a, b_id, space)
        assert a_status["online"] is True and a_status["api"] == a.api_url
        members = {m["name"]: m for m in a_status["spaces"][0]["members"]}
        assert members["bob"]["sync"] == "live" and members["bob"]["connected"] is True
        a_id = a_status["endpoint"]
        b_status = wait_live(b, a_id, space)
        assert b_status["spaces"][0]["member"] is True
        assert "bob (participant): in sync" in cli(a_home, "status").stdout
        assert "live" in cli(a_home, "status", "--verbose").stdout

        # An offline join (c runs no node): a temporary node joins, catches up, exits.
        code = cli(a_home, "invite", space).stdout.strip()
        assert cli(c_home, "join", code).stdout.strip() == space
        assert json.loads(cli(c_home, "rdb", "get", "notes", "t", "r2", "--json").stdout)["y"]

        # Errors through the API: one line each.
        fails(b_home, "join", "p2ps1-garbage", match="invitation code")
        fails(a_home, "rdb", "get", "nope", "t", match="no space named 'nope'")
        fails(a_home, "rdb", "set", "notes", "t", "r", "oops", match="FIELD=VALUE")
        fails(a_home, "rdb", "get", "notes", "t", "missing", "--wait", "0.1", match="no record")
        fails(a_home, "invite", "notes", "--role", "emperor", match="role")

        # A token file that does not match the node: the listener cannot prove it is this
        # home's node, so the token is not sent -- and the store is not touched either.
        token = (a_home / "api.token").read_text()
        (a_home / "api.token").write_text("wrong\n")
        try:
            fails(a_home, "space", "list", match="is not this home's node; its token was not sent")
        finally:
            (a_home / "api.token").write_text(token)

        assert a.stop() == 0 and b.stop() == 0
        assert "Traceback" not in a.stderr() + b.stderr()
        assert "stopped" in a.stderr()

    for home in (a_home, b_home):
        assert not (home / "api.json").exists()
    # The records stay in the stores: offline reads see them.
    got = cli(a_home, "rdb", "get", "notes", "t", "r2", "--json")
    assert json.loads(got.stdout)["n"] == 2.5
