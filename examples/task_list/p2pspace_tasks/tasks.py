"""A shared task list: a small tool on the record database, using only the public API.

docs/writing-a-tool.md walks through it. Each operation is one delta of ``rdb`` commands; the
space's total order resolves concurrent changes. Run ``python -m p2pspace_tasks.tasks`` to see
two endpoints share a list in this process."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pspace import Command, Delta, Endpoint, LocalProtocolError, Replica, open_endpoint
from p2pspace.engines import members, rdb
from p2pspace.testing.loopback import connect, pump

INSTANCE = "tasks"  # the rdb instance this tool keeps its records in
TASKS = "tasks"  # owned by their creator: the title, which only the creator may change
STATE = "state"  # anyone's to change: done or not, and who does it
Commit = Callable[[Sequence[Command]], Delta]  # makes one delta of the commands, returns it


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: str
    title: str
    creator: bytes
    assignee: bytes  # a member's endpoint id, b"" for nobody
    done: bool
    created: int
    rev: tuple[bytes, int]  # (creator, seq) of the delta that last changed its state

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "creator": self.creator.hex(),
                "assignee": self.assignee.hex(), "done": self.done,
                "created": self.created}  # fmt: skip


class TaskList:
    """The task list of one space, read from (and written as) one endpoint."""

    def __init__(
        self, replica: Replica, *, commit: Commit, now: Callable[[], int], instance: str = INSTANCE
    ) -> None:
        self.replica, self.instance, self._commit, self._now = replica, instance, commit, now
        self.view = rdb.view(replica, instance)  # LocalProtocolError if the space has no such rdb

    def _rev(self) -> list[Any]:
        me = self.replica.endpoint_id  # the change goes into this endpoint's next delta
        return [me, self.replica.vector.get(me, 0) + 1]

    def add(self, title: str) -> str:
        title = title.strip()
        if not 0 < len(title) <= 200:
            raise LocalProtocolError("a task needs a title of 1 to 200 characters")
        rev = self._rev()
        # In the creator's namespace: no other member can create this id first.
        task_id = rdb.owned_id(rev[0], str(rev[1]))
        task = {"title": title, "created": self._now(), "rev": rev}
        state = {"assignee": b"", "done": False, "rev": rev}
        self._commit([rdb.create(TASKS, task_id, task, instance=self.instance, owned=True),
                      rdb.create(STATE, task_id, state, instance=self.instance)])  # fmt: skip
        return task_id

    def rename(self, task_id: str, title: str) -> None:
        if self.get(task_id).creator != self.replica.endpoint_id:
            raise LocalProtocolError("only the task's creator can rename it")
        title = title.strip()
        if not 0 < len(title) <= 200:
            raise LocalProtocolError("a task needs a title of 1 to 200 characters")
        fields = {"title": title, "rev": self._rev()}
        self._commit([rdb.set_fields(TASKS, task_id, fields, instance=self.instance)])

    def _set(self, task_id: str, fields: dict[str, Any]) -> None:
        self.get(task_id)  # refuse an unknown id before anything is committed
        fields["rev"] = self._rev()
        self._commit([rdb.set_fields(STATE, task_id, fields, instance=self.instance)])

    def assign(self, task_id: str, member: bytes) -> None:
        if member and not self.replica.is_member(member):
            raise LocalProtocolError("tasks can only be assigned to members of the space")
        self._set(task_id, {"assignee": member})

    def done(self, task_id: str) -> None:
        self._set(task_id, {"done": True})

    def reopen(self, task_id: str) -> None:
        self._set(task_id, {"done": False})

    def get(self, task_id: str) -> Task:
        task, state = self.view.get(TASKS, task_id), self.view.get(STATE, task_id)
        creator = self.view.owner(TASKS, task_id)
        if task is None or state is None or creator is None or not _typed(task, state):
            raise LocalProtocolError(f"no task {task_id!r}")  # absent, or not one we wrote
        return Task(id=task_id, title=task["title"], creator=creator, created=task["created"],
                    assignee=state["assignee"], done=state["done"],
                    rev=(state["rev"][0], state["rev"][1]))  # fmt: skip

    def tasks(self) -> list[Task]:  # open ones first, oldest first: the same on every replica
        found = []
        for task_id, _fields in self.view.records(TASKS):
            try:  # any member can write any record: one that is not a task is not shown
                found.append(self.get(task_id))
            except LocalProtocolError:
                continue
        return sorted(found, key=lambda t: (t.done, t.created, t.id))

    def changes(self, executed: Iterable[Delta]) -> list[tuple[str, str]]:  # (what, task id)
        out = []
        for c in (c for d in executed for c in d.commands if c.engine == self.instance):
            f, table = c.args.get("fields", {}), c.args["table"]
            if table == TASKS:
                out.append(("added" if c.name == "create" else "renamed", c.args["record"]))
            elif table == STATE and c.name == "set":
                what = "assigned" if "assignee" in f else "done" if f.get("done") else "reopened"
                out.append((what, c.args["record"]))
        return out

    def delivered(self, task_id: str, acks: Mapping[bytes, Mapping[bytes, int]]) -> int:
        """Members known to hold the task's last change (``acks``: peer -> acknowledged vector)."""
        creator, seq = self.get(task_id).rev
        have = {p for p, vector in acks.items() if vector.get(creator, 0) >= seq}
        have |= {creator, self.replica.endpoint_id}  # both hold it, acknowledged or not
        return sum(1 for p in have if self.replica.is_member(p))


def _typed(task: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    """Whether the records hold what this tool writes (another member's software may not)."""
    rev = state.get("rev")
    return (
        type(task.get("title")) is str
        and type(task.get("created")) is int
        and type(state.get("done")) is bool
        and type(state.get("assignee")) is bytes
        and type(rev) is list
        and len(rev) == 2
        and type(rev[0]) is bytes
        and type(rev[1]) is int
    )


def main(root: Path) -> dict[str, Any]:
    alice = open_endpoint(root / "alice", name="alice")
    bob = open_endpoint(root / "bob", name="bob")
    try:
        space = alice.create_space("chores", time=1, engines={INSTANCE: "rdb"}).space_id
        bob_id, key = bob.endpoint_id, bob.identity.public_key
        alice.create(space, [members.add_command(member_id=bob_id, key=key, name="bob")], time=2)
        bob.join_space(alice.replica(space).genesis.wire())  # the invitation, done by hand
        ms = iter(range(10, 1_000_000)).__next__  # a clock

        def tool(e: Endpoint) -> TaskList:
            return TaskList(
                e.replica(space), now=ms, commit=lambda c: e.create(space, c, time=ms())
            )

        def sync() -> None:  # deliver, then let both acknowledge what they executed
            for _ in range(2):
                pump(links)
                alice.tick()
                bob.tick()

        a, b = tool(alice), tool(bob)
        seen: list[tuple[str, str]] = []  # change events, as bob's replica executes deltas
        bob.replica(space).listeners.append(lambda _r, ex: seen.extend(b.changes(d for d, _ in ex)))
        links = [link := connect(alice, bob)]
        milk, bins = a.add("buy milk"), a.add("take out the bins")
        delivered = [a.delivered(milk, {})]  # no acknowledgements yet: only alice has it
        sync()  # what bob acknowledged is on alice's session (a node keeps it: Node.acked)
        delivered.append(a.delivered(milk, {bob_id: link.a.acked(space)}))
        # Concurrent (no pump between): both assign the milk, one field: the later in the total
        # order wins; alice marks the bins done while bob assigns them: both changes stay.
        a.assign(milk, alice.endpoint_id)
        b.assign(milk, bob_id)
        a.done(bins)
        b.assign(bins, alice.endpoint_id)
        sync()
        assert a.tasks() == b.tasks()
        return {"tasks": a.tasks(), "delivered": delivered, "seen_by_bob": seen,
                "alice": alice.endpoint_id, "bob": bob_id}  # fmt: skip
    finally:
        alice.close()
        bob.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for task in main(Path(tmp))["tasks"]:
            print(f"[{'x' if task.done else ' '}] {task.title}")
