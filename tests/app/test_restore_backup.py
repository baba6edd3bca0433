"""A user restores an older copy of their home folder and posts again: nothing is lost, nothing
is signed twice, and no one logs a storm. Real node processes on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.helpers import TIMEOUT
from tests.helpers.cli_node import cli, rdb_records, running, status_of, wait_until


def records(home: Path) -> dict[str, Any]:
    return rdb_records(home, "notes", "t")


def vector(home: Path) -> dict[str, int]:
    spaces = status_of(home)["spaces"]
    return dict(spaces[0]["vector"]) if spaces else {}


def test_a_restored_home_recovers_its_own_changes_before_posting(tmp_path: Path) -> None:
    ann_h, bob_h = tmp_path / "ann", tmp_path / "bob"
    cli(ann_h, "init", "--name", "ann")
    cli(bob_h, "init", "--name", "bob")
    cli(ann_h, "space", "create", "notes")
    backup = tmp_path / "bob-backup"
    with running(ann_h, tmp_path / "ann.log") as ann:
        code = cli(ann_h, "invite", "notes").stdout.strip()
        with running(bob_h, tmp_path / "bob-1.log"):
            cli(bob_h, "join", code, "--timeout", str(TIMEOUT))
            cli(bob_h, "rdb", "set", "notes", "t", "r1", "v=1")
            wait_until(ann, "r1 at ann", lambda: "r1" in records(ann_h))
        shutil.copytree(bob_h, backup)  # the backup: taken while bob's node is stopped
        with running(bob_h, tmp_path / "bob-2.log"):
            cli(bob_h, "rdb", "set", "notes", "t", "r2", "v=2")
            wait_until(ann, "r2 at ann", lambda: "r2" in records(ann_h))
        shutil.rmtree(bob_h)
        shutil.copytree(backup, bob_h)  # restored: bob's store lacks r2
        assert "r2" not in records(bob_h)
        with running(bob_h, tmp_path / "bob-3.log") as bob:
            wait_until(bob, "bob recovers r2", lambda: "r2" in records(bob_h))
            cli(bob_h, "rdb", "set", "notes", "t", "r3", "v=3")
            wait_until(ann, "r3 at ann", lambda: "r3" in records(ann_h))
            wait_until(bob, "same vectors", lambda: vector(bob_h) == vector(ann_h))
        assert set(records(ann_h)) == set(records(bob_h)) == {"r1", "r2", "r3"}
    # Nothing was signed twice: no evidence, no refusals, a quiet log.
    ann_log = (tmp_path / "ann.log").read_text()
    assert "BrokenChain" not in ann_log and "equivocat" not in ann_log.lower()
    assert len(ann_log.splitlines()) < 100
    bob_log = (tmp_path / "bob-3.log").read_text()
    assert "recovering" in bob_log
