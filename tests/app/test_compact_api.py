"""``POST /api/spaces/{space}/compact`` and ``p2pspace space compact``: purge, and its errors."""

from __future__ import annotations

from pathlib import Path

from p2pspace.engines import rdb
from tests.helpers.api_client import api_node, client_of
from tests.helpers.cli_node import cli, fails


async def test_compact_route_purges_and_refuses_bad_input(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", name="ann") as a, client_of(a) as ca:
        space = a.create_space("notes").space_id
        for k in range(20):
            a.commit(space, [rdb.create("t", f"r{k}", {"v": k})])
        early = await ca.post("/api/spaces/notes/compact", json={})
        assert early.status_code == 409 and "no checkpoint" in early.json()["error"]
        bad = await ca.post("/api/spaces/notes/compact", json={"keep_history": "yes"})
        assert bad.status_code == 400
        a.replica(space).create_checkpoint(time=1)
        kept = await ca.post("/api/spaces/notes/compact", json={"keep_history": True})
        assert kept.status_code == 200, kept.text
        assert kept.json()["compacted"]["deleted"] == 0 and kept.json()["compacted"]["keep_history"]
        done = await ca.post("/api/spaces/notes/compact", json={"keep_history": False})
        assert done.status_code == 200, done.text
        body = done.json()["compacted"]
        assert body["deleted"] >= 15 and body["checkpoint"] == 1 and body["id"] == space.hex()
        missing = await ca.post("/api/spaces/nope/compact", json={})
        assert missing.status_code == 404


def test_space_compact_command_says_what_it_did_and_why_not(tmp_path: Path) -> None:
    home = tmp_path / "ann"
    cli(home, "init", "--name", "ann")
    cli(home, "space", "create", "notes")
    cli(home, "rdb", "set", "notes", "t", "r", "v=1")
    fails(home, "space", "compact", "notes", match="no checkpoint has closed a block")
    fails(home, "space", "compact", "nope", match="no space named 'nope'")
    out = cli(home, "space", "compact", "notes", "--keep-history").stdout
    assert out.strip() == "'notes' keeps its whole history; nothing was deleted"
    assert cli(home, "space", "compact", "notes").stdout.strip() == out.strip()  # remembered
    fails(home, "space", "compact", "notes", "--no-keep-history", match="no checkpoint")
