"""``kill -9`` of a node process in the middle of a write storm loses no acknowledged write.

Node A and node B run as separate processes (``tests/helpers/node_script.py``) sharing a space.
A writes thousands of records, one delta each, and prints an ack after each write returned; B
writes a few of its own meanwhile. After about 500 acks A is killed with SIGKILL -- no cleanup, no
shutdown, possibly inside a transaction. Restarted on the same home, A must hold every record it
acked; then A and B must converge to the same order and state, and B must hold them all too.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.helpers import TIMEOUT
from tests.helpers.nodeproc import NodeProcess, converge

STORM = 3000
KILL_AFTER = 500
B_WRITES = 200
# Every write is durable (an fsync each) and two storms share the disk: B's storm, and the
# catch-up after the restart, can take longer than one ordinary wait.
STORM_TIMEOUT = 2 * TIMEOUT


async def test_kill_9_mid_storm_loses_no_acked_write(tmp_path: Path) -> None:
    nodes: list[NodeProcess] = []
    try:
        a = await NodeProcess.start(tmp_path / "a", listen="127.0.0.1:0", name="a")
        nodes.append(a)
        b = await NodeProcess.start(tmp_path / "b", listen="127.0.0.1:0", name="b")
        nodes.append(b)
        space = (await a.call("create", name="storm"))["space"]
        code = (await a.call("invite", space=space))["code"]
        assert (await b.call("join", code=code, timeout=STORM_TIMEOUT))["space"] == space

        await b.send("storm", space=space, count=B_WRITES, prefix="b")
        await a.send("storm", space=space, count=STORM, prefix="a")
        acked: list[int] = []
        while len(acked) < KILL_AFTER:
            line = await a.read(timeout=STORM_TIMEOUT)
            assert "acked" in line, line
            acked.append(line["acked"])
        a.kill()
        await a.process.wait()
        # Every ack the child printed before it died was for a write that had returned.
        acked += [line["acked"] for line in await a.drain() if "acked" in line]
        assert acked == list(range(len(acked)))
        assert len(acked) < STORM, "the storm ended before the kill; nothing was tested"
        assert (await b.answer(timeout=STORM_TIMEOUT))["count"] == B_WRITES
        await a.aclose()
        nodes.remove(a)

        # Restart A on the same home. It dials B (B's dial target for A may point at the old
        # port, which nothing listens on now).
        a = await NodeProcess.start(
            tmp_path / "a", listen="127.0.0.1:0", name="a", peers=[b.listen]
        )
        nodes.append(a)
        records = (await a.call("get", space=space))["records"]
        lost = [i for i in acked if records.get(f"a-{i:06d}", {}).get("i") != i]
        assert not lost, f"{len(lost)} acked writes lost by the crash, first {lost[:5]}"

        digest_a, digest_b = await converge([a, b], space, timeout=STORM_TIMEOUT)
        assert digest_a["vector"] == digest_b["vector"]
        assert digest_a["order"] == digest_b["order"]
        assert digest_a["state"] == digest_b["state"]
        assert digest_a["pending"] == digest_b["pending"] == 0
        on_b = (await b.call("get", space=space))["records"]
        assert not [i for i in acked if f"a-{i:06d}" not in on_b]
        assert all(f"b-{i:06d}" in on_b for i in range(B_WRITES))
        assert on_b == (await a.call("get", space=space))["records"]
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                await node.aclose()
