"""A member signs two different changes under one sequence number (a cloned home folder) and
gives each to a different copy of itself: real node processes on loopback converge on one
outcome, name the equivocator, and keep their logs short."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tests.helpers import TIMEOUT
from tests.helpers.cli_node import NodeProcess, cli, rdb_records, running, status_of, wait_until


def records(home: Path) -> dict[str, Any]:
    return rdb_records(home, "notes", "t")


def cpu_seconds(node: NodeProcess) -> float:
    """User + system CPU time the node's process has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def space_of(home: Path) -> dict[str, Any]:
    space: dict[str, Any] = status_of(home)["spaces"][0]
    return space


def test_an_equivocating_member_is_resolved_the_same_everywhere(tmp_path: Path) -> None:
    ann_h, bob_h, clone_h = tmp_path / "ann", tmp_path / "bob", tmp_path / "bob-clone"
    cli(ann_h, "init", "--name", "ann")
    cli(bob_h, "init", "--name", "bob")
    cli(ann_h, "space", "create", "notes")
    with running(ann_h, tmp_path / "ann.log") as ann:
        code = cli(ann_h, "invite", "notes").stdout.strip()
        with running(bob_h, tmp_path / "bob.log"):
            cli(bob_h, "join", code, "--timeout", str(TIMEOUT))
            cli(bob_h, "rdb", "set", "notes", "t", "before", "v=0")
            wait_until(ann, "bob's first change", lambda: "before" in records(ann_h))
        shutil.copytree(bob_h, clone_h)  # the same identity and history, twice
        with running(bob_h, tmp_path / "bob-2.log"):
            cli(bob_h, "rdb", "set", "notes", "t", "r", "v=one")
            wait_until(ann, "bob's change", lambda: "r" in records(ann_h))
        # The clone, offline, signs a different change under the same sequence number.
        cli(clone_h, "rdb", "set", "notes", "t", "r", "v=two")
        assert records(clone_h)["r"] != records(ann_h)["r"]
        spent = cpu_seconds(ann)
        with running(clone_h, tmp_path / "clone.log") as clone:
            wait_until(
                ann,
                "the evidence and one outcome",
                lambda: (
                    bool(space_of(ann_h)["equivocators"])
                    and space_of(ann_h)["vector"] == space_of(clone_h)["vector"]
                    and records(ann_h) == records(clone_h)
                ),
            )
            wait_until(
                clone, "the clone sees it too", lambda: bool(space_of(clone_h)["equivocators"])
            )
            # No refusal loop meanwhile: a storm would burn a core for the whole wait.
            assert cpu_seconds(ann) - spent < TIMEOUT / 3
        # Neither copy counts; what came before the fork does.
        assert records(ann_h) == records(clone_h)
        assert "r" not in records(ann_h) and "before" in records(ann_h)
        assert space_of(ann_h)["equivocators"] == ["bob"]
        assert "signed two different histories" in cli(ann_h, "status").stdout
    # Bounded: no reconnect storm, no refusal storm.
    for log in ("ann.log", "clone.log"):
        lines = (tmp_path / log).read_text().splitlines()
        assert len(lines) < 150, (log, len(lines))
