"""examples/task_list (a second tool, public API only, packaged as a plugin) and
docs/writing-a-tool.md.

The doc's code is not copied by hand: every ``python`` block in it must appear verbatim (up to
indentation) in the example or in this file, both of which the suite runs.
"""

from __future__ import annotations

import random
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2pspace.errors import LocalProtocolError
from p2pspace.node.home import open_endpoint
from p2pspace.testing import Faults, SimNetwork
from tests.helpers import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "task_list"
EXAMPLE = PACKAGE / "p2pspace_tasks" / "tasks.py"
PLUGIN_FILES = [EXAMPLE.parent / n for n in ("__init__.py", "routes.py", "cli.py")]
DOC = ROOT / "docs" / "writing-a-tool.md"

example: dict[str, Any] = runpy.run_path(str(EXAMPLE))
TaskList = example["TaskList"]


def test_main_syncs_two_endpoints_and_resolves_the_conflict(tmp_path: Path) -> None:
    result = example["main"](tmp_path)
    milk, bins = result["tasks"]  # open tasks first
    assert (milk.title, milk.done) == ("buy milk", False)
    # Both assigned the milk concurrently, at the same rank: the creator id orders them, and
    # the later assignment wins on both replicas.
    later = max(result["alice"], result["bob"])
    assert milk.assignee == later
    # Different fields of the bins, changed concurrently: both changes stay.
    assert (bins.title, bins.done, bins.assignee) == ("take out the bins", True, result["alice"])
    assert result["delivered"] == [1, 2]
    seen = result["seen_by_bob"]
    assert seen[:2] == [("added", milk.id), ("added", bins.id)]
    assert sorted(seen[2:]) == sorted(
        [("assigned", milk.id), ("assigned", milk.id), ("done", bins.id), ("assigned", bins.id)]
    )


def test_the_example_runs_as_a_program() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pspace_tasks.tasks"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[ ] buy milk", "[x] take out the bins"]


def test_the_example_stays_small() -> None:
    assert len(EXAMPLE.read_text().splitlines()) < 200


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    ep = open_endpoint(tmp_path / "e", seed=b"e", durability="normal")
    try:
        replica = ep.create_space("s", time=1, engines={"tasks": "rdb"})
        tasks = TaskList(replica, now=lambda: 5, commit=lambda c: replica.create(c, time=5))
        task = tasks.add("  water the plants ")
        assert tasks.get(task).title == "water the plants"
        before = replica.state_digest()
        for call, message in [
            (lambda: tasks.add("   "), "title"),
            (lambda: tasks.add("x" * 201), "title"),
            (lambda: tasks.done("no-such-task"), "no task"),
            (lambda: tasks.reopen("no-such-task"), "no task"),
            (lambda: tasks.assign(task, b"\x01" * 16), "members"),
            (lambda: tasks.rename(task, ""), "title"),
            (lambda: tasks.rename("no-such-task", "x"), "no task"),
        ]:
            with pytest.raises(LocalProtocolError, match=message):
                call()
        assert replica.state_digest() == before
        tasks.done(task)
        tasks.reopen(task)
        tasks.assign(task, ep.endpoint_id)
        assert tasks.tasks()[0].assignee == ep.endpoint_id and not tasks.tasks()[0].done
        with pytest.raises(LocalProtocolError, match="not an rdb instance"):
            TaskList(replica, now=lambda: 5, commit=lambda c: replica.create(c, time=5),
                     instance="nope")  # fmt: skip
    finally:
        ep.close()


def test_task_list_converges_on_the_simulated_network(tmp_path: Path) -> None:
    net = SimNetwork(tmp_path, endpoints=3, seed=5, faults=Faults.of(["drop", "crash"]))
    try:
        check_task_list_on(net, random.Random(5))
    finally:
        net.close()


def check_task_list_on(net: SimNetwork, rng: random.Random) -> None:
    def tool(i: int) -> Any:  # the simulator's space holds one rdb instance, "db"
        ep = net.endpoint(i)
        return TaskList(
            net.replica(i),
            instance="db",
            now=lambda: net.now,
            commit=lambda c: ep.create(net.space_id, c, time=net.now),
        )

    net.schedule_faults(over_ms=3_000)
    for step in range(60):
        net.run_for(50)
        i = rng.randrange(3)
        if net.nodes[i].endpoint is None or not net.replica(i).can_create():
            continue  # down, or its membership has not reached it yet
        tasks = tool(i)
        known = tasks.tasks()
        if not known or rng.random() < 0.3:
            tasks.add(f"task {step}")
        elif rng.random() < 0.3:
            tasks.assign(rng.choice(known).id, rng.choice(net.replica(i).member_ids()))
        else:
            rng.choice([tasks.done, tasks.reopen])(rng.choice(known).id)
    net.heal()
    assert net.run_until_quiet()
    assert net.check_convergence().converged
    assert tool(0).tasks() == tool(1).tasks() == tool(2).tasks()
    assert len(tool(0).tasks()) >= 5 and net.stats.crashes > 0


def test_the_commands_the_tool_makes_keep_the_engine_contract(tmp_path: Path) -> None:
    from p2pspace.engines import rdb
    from p2pspace.testing import check_engine

    made: list[Any] = []  # every command the tool commits
    ep = open_endpoint(tmp_path / "e", seed=b"e", durability="normal")
    try:
        replica = ep.create_space("s", time=1, engines={"tasks": "rdb"})
        commit = lambda c: (made.extend(c), replica.create(c, time=5))[1]  # noqa: E731
        tasks = TaskList(replica, now=lambda: 5, commit=commit)
        milk = tasks.add("buy milk")
        tasks.assign(milk, ep.endpoint_id)
        tasks.done(milk)
        tasks.reopen(tasks.add("take out the bins"))
    finally:
        ep.close()
    report = check_engine(
        rdb.RdbEngine(),
        [*made, rdb.set_fields("state", "no-such-task", {"done": True})],  # a recorded no-op
        invalid=[rdb.set_fields("tasks", milk, {}), rdb.create("tasks", "", {"title": "x"})],
        creators=[ep.endpoint_id, b"\x02" * 16],  # the tasks' creator, and another member
    )
    assert report.changes > 0 and report.no_ops > 0  # both kinds of execution were checked


def test_an_owned_record_cannot_be_taken_by_another_member(tmp_path: Path) -> None:
    from p2pspace.engines import members, rdb
    from p2pspace.testing.loopback import connect, pump

    alice = open_endpoint(tmp_path / "alice", seed=b"alice", name="alice", durability="normal")
    bob = open_endpoint(tmp_path / "bob", seed=b"bob", name="bob", durability="normal")
    try:
        space = alice.create_space("notes", time=1, engines={"notes": "rdb"}).space_id
        add = members.add_command(member_id=bob.endpoint_id, key=bob.identity.public_key, name="b")
        alice.create(space, [add], time=2)
        bob.join_space(alice.replica(space).genesis.wire())
        links = [connect(alice, bob)]
        pump(links)
        alice.create(space, [rdb.create("t", "warm-up", {"v": 1}, instance="notes")], time=3)
        # An id only alice can create: "<16 hex digits of her endpoint id>~note-1".
        note = rdb.owned_id(alice.endpoint_id, "note-1")
        mine = rdb.create("notes", note, {"text": "mine"}, instance="notes", owned=True)
        made = alice.create(space, [mine], time=4)
        # Bob knows the id and creates it first, in a delta that sorts before alice's: a
        # recorded no-op, like his edit of her record.
        bobs = rdb.create("notes", note, {"text": "bob's"}, instance="notes", owned=True)
        squat = bob.create(space, [bobs], time=4)
        bob.create(space, [rdb.set_fields("notes", note, {"text": "b"}, instance="notes")], time=5)
        assert squat.order_key < made.order_key
        pump(links)
        for e in (alice, bob):
            view = rdb.view(e.replica(space), "notes")
            assert view.get("notes", note) == {"text": "mine"}
            assert view.owner("notes", note) == alice.endpoint_id
    finally:
        alice.close()
        bob.close()


# -- the doc ---------------------------------------------------------------------------------


def code_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def appears_in(block: str, source: str) -> bool:
    """``block`` is a run of ``source``'s lines, all indented by the same amount."""
    want = block.rstrip("\n").split("\n")
    lines = source.split("\n")
    for start, line in enumerate(lines):
        if line.strip() != want[0].strip() or not line.endswith(want[0]):
            continue
        indent = line[: len(line) - len(want[0])]
        window = lines[start : start + len(want)]
        if len(window) == len(want) and all(
            (got == indent + w) if w else not got.strip()
            for got, w in zip(window, want, strict=True)
        ):
            return True
    return False


def test_every_code_block_in_the_doc_is_code_the_suite_runs() -> None:
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 8
    files = [EXAMPLE, *PLUGIN_FILES, PACKAGE / "pyproject.toml", Path(__file__)]
    sources = "\n".join(f.read_text() for f in files)
    missing = [b for b in blocks if not appears_in(b, sources)]
    assert not missing, "doc code not found verbatim in the example or its test:\n" + "\n".join(
        missing
    )


def test_the_doc_check_notices_edited_code() -> None:
    source = EXAMPLE.read_text()
    assert appears_in("def reopen(self, task_id: str) -> None:\n", source)
    assert not appears_in("def reopen(self, task_id: str) -> bool:\n", source)
    assert not appears_in("def reopen(self, task_id: str) -> None:\n    pass\n", source)


def test_records_another_member_wrote_badly_are_not_tasks(tmp_path: Path) -> None:
    from p2pspace.engines import rdb

    ep = open_endpoint(tmp_path / "e", seed=b"e", durability="normal")
    try:
        replica = ep.create_space("s", time=1, engines={"tasks": "rdb"})
        tasks = TaskList(replica, now=lambda: 5, commit=lambda c: replica.create(c, time=5))
        good = tasks.add("fine")
        broken = tasks.add("broken")
        # Any member may set a task's state, with any fields its software likes.
        for fields in ({"rev": 5}, {"assignee": "x"}, {"done": "yes"}):
            replica.create([rdb.set_fields("state", broken, fields, instance="tasks")], time=6)
            assert [t.id for t in tasks.tasks()] == [good]  # the list still shows
            with pytest.raises(LocalProtocolError, match="no task"):
                tasks.get(broken)
            repaired = {"rev": [ep.endpoint_id, 1], "assignee": b"", "done": False}
            replica.create([rdb.set_fields("state", broken, repaired, instance="tasks")], time=7)
    finally:
        ep.close()
