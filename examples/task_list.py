"""A shared task list: a small tool on the record database, using only the public API.

Run it: ``python examples/task_list.py``; docs/writing-a-tool.md walks through it. Each operation
is one delta of ``rdb`` commands; the space's total order resolves concurrent changes."""

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
TABLE = "tasks"
Commit = Callable[[Sequence[Command]], Delta]  # makes one delta of the commands, returns it


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: str
    title: str
    assignee: bytes  # a member's endpoint id, b"" for nobody
    done: bool
    created: int
    rev: tuple[bytes, int]  # (creator, seq) of the delta that last changed the task


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
        task_id = f"{rev[0].hex()}-{rev[1]}"  # the creating delta's id: unique, no coordination
        fields = dict(title=title, assignee=b"", done=False, created=self._now(), rev=rev)
        self._commit([rdb.create(TABLE, task_id, fields, instance=self.instance)])
        return task_id

    def _set(self, task_id: str, fields: dict[str, Any]) -> None:
        self.get(task_id)  # refuse an unknown id before anything is committed
        fields["rev"] = self._rev()
        self._commit([rdb.set_fields(TABLE, task_id, fields, instance=self.instance)])

    def assign(self, task_id: str, member: bytes) -> None:
        if member and not self.replica.is_member(member):
            raise LocalProtocolError("tasks can only be assigned to members of the space")
        self._set(task_id, {"assignee": member})

    def done(self, task_id: str) -> None:
        self._set(task_id, {"done": True})

    def reopen(self, task_id: str) -> None:
        self._set(task_id, {"done": False})

    def get(self, task_id: str) -> Task:
        fields = self.view.get(TABLE, task_id)
        if fields is None:
            raise LocalProtocolError(f"no task {task_id!r}")
        known = {k: fields[k] for k in ("title", "assignee", "done", "created")}  # not others
        return Task(id=task_id, rev=(fields["rev"][0], fields["rev"][1]), **known)

    def tasks(self) -> list[Task]:  # open ones first, oldest first: the same on every replica
        found = [self.get(task_id) for task_id, _fields in self.view.records(TABLE)]
        return sorted(found, key=lambda t: (t.done, t.created, t.id))

    def changes(self, executed: Iterable[Delta]) -> list[tuple[str, str]]:  # (what, task id)
        out = []
        for c in (c for d in executed for c in d.commands if c.engine == self.instance):
            if c.args["table"] == TABLE:
                f = c.args["fields"]
                what = "added" if c.name == "create" else "assigned" if "assignee" in f else ""
                out.append((what or ("done" if f["done"] else "reopened"), c.args["record"]))
        return out

    def delivered(self, task_id: str, acks: Mapping[bytes, Mapping[bytes, int]]) -> int:
        """Members known to hold the task's last change (``acks``: peer -> acknowledged vector)."""
        creator, seq = self.get(task_id).rev
        have = {p for p, vector in acks.items() if vector.get(creator, 0) >= seq}
        have |= {creator, self.replica.endpoint_id}  # both hold it, acknowledged or not
        return sum(1 for p in have if self.replica.is_member(p))


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
