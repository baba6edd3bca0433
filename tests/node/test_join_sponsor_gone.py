"""A join whose sponsor goes away part-way fails at once, saying how far it got, instead of
waiting out its timeout or claiming success (two nodes on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pspace.engines import rdb
from p2pspace.errors import TransportError
from tests.helpers import TIMEOUT
from tests.helpers.nodes import node_at

RECORDS = 12_000  # enough history that a join sees several progress steps before it ends


async def test_the_inviter_going_away_mid_join_fails_the_join_at_once(tmp_path: Path) -> None:
    # No grace: the first break fails the join (by default a break of up to
    # sponsor_grace seconds is waited out, as the next test shows).
    async with (
        node_at(tmp_path / "a", "ann") as a,
        node_at(tmp_path / "b", "bob", sponsor_grace=0) as b,
    ):
        space = a.create_space("big").space_id
        batches = [[rdb.create("t", f"r{i}", {"v": i})] for i in range(RECORDS)]
        for start in range(0, RECORDS, 1024):
            a.endpoint.create_many(space, batches[start : start + 1024], time=1)
        code = a.invite(space)
        seen: list[tuple[int, int]] = []

        def progress(have: int, total: int) -> None:
            seen.append((have, total))
            if 0 < have < total and b.endpoint_id in a.connections:
                a.connections[b.endpoint_id].scope.cancel()  # ann's node drops bob mid-stream

        with pytest.raises(TransportError, match="the connection to ann broke") as caught:
            await b.join(code, timeout=TIMEOUT * 10, progress=progress)
        message = str(caught.value)
        assert "'big'" in message
        got = [have for have, total in seen if 0 < have < total]
        assert got, seen  # it did break part-way
        # It failed on the break, not after the (ten times longer) timeout: the space stays,
        # short of the history, to be completed by a member later.
        assert sum(b.replica(space).vector.values()) < RECORDS


async def test_a_moment_s_break_mid_join_is_waited_out(tmp_path: Path) -> None:
    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("big").space_id
        batches = [[rdb.create("t", f"r{i}", {"v": i})] for i in range(RECORDS)]
        for start in range(0, RECORDS, 1024):
            a.endpoint.create_many(space, batches[start : start + 1024], time=1)
        code = a.invite(space)
        cuts: list[int] = []

        def progress(have: int, total: int) -> None:
            if not cuts and 0 < have < total and b.endpoint_id in a.connections:
                cuts.append(have)
                a.connections[b.endpoint_id].scope.cancel()  # once: the nodes dial again

        assert await b.join(code, timeout=TIMEOUT, progress=progress) == space
        assert cuts, "the connection was never cut"
        await b.wait_until(
            lambda: b.replica(space).vector == a.replica(space).vector, timeout=TIMEOUT
        )
