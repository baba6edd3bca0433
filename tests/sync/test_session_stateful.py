"""Hypothesis state machine: three endpoints, real sessions on reliable links, random steps.

Steps interleave local edits (single and group commits), partial delivery of bytes in either
direction, ticks, disconnects and reconnects, and crash/restart of an endpoint (its store is
reopened from disk). Whatever the interleaving, once every link is up and fully pumped all
replicas hold the same order and state, and every executed order respects every dependency.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pspace.engines import members, rdb
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.testing import causality_violation
from p2pspace.testing.loopback import Link, connect, pump

PAIRS = [(0, 1), (0, 2), (1, 2)]


class ThreeEndpoints(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="p2pspace-stateful-"))
        self.eps: list[Endpoint] = [self._open(i) for i in range(3)]
        replica = self.eps[0].create_space("s", time=1, nonce=b"\x03" * 16)
        self.space = replica.space_id
        self.eps[0].create(
            self.space,
            [
                members.add_command(member_id=e.endpoint_id, key=e.identity.public_key, name=e.name)
                for e in self.eps[1:]
            ],
            time=1,
        )
        self.eps[0].create(
            self.space, [rdb.create("t", f"r{k}", {"v": 0}) for k in range(4)], time=1
        )
        everyone = [e.endpoint_id for e in self.eps]
        for e in self.eps[1:]:
            e.join_space(replica.genesis.wire(), sponsors=everyone)
        self.links: dict[tuple[int, int], Link] = {}
        self.clock = 2

    def _open(self, i: int) -> Endpoint:
        return open_endpoint(
            self.root / f"e{i}", seed=f"st-{i}".encode(), durability="normal", name=f"e{i}"
        )

    def teardown(self) -> None:
        for e in self.eps:
            e.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------------

    @rule(i=st.integers(0, 2), k=st.integers(0, 3), v=st.integers(0, 99), many=st.integers(1, 3))
    def edit(self, i: int, k: int, v: int, many: int) -> None:
        replica = self.eps[i].replica(self.space)
        if not replica.can_create():
            return
        self.clock += 1
        batches = [
            [rdb.set_fields("t", f"r{(k + n) % 4}", {"v": v, f"e{i}": n})] for n in range(many)
        ]
        self.eps[i].create_many(self.space, batches, time=self.clock)

    @rule(pair=st.sampled_from(PAIRS))
    def link_up(self, pair: tuple[int, int]) -> None:
        if pair not in self.links:
            self.links[pair] = connect(self.eps[pair[0]], self.eps[pair[1]])

    @precondition(lambda self: bool(self.links))
    @rule(data=st.data())
    def link_down(self, data: st.DataObject) -> None:
        pair = data.draw(st.sampled_from(sorted(self.links)))
        link = self.links.pop(pair)
        self.eps[pair[0]].close_session(link.a)
        self.eps[pair[1]].close_session(link.b)

    @precondition(lambda self: bool(self.links))
    @rule(data=st.data(), forward=st.booleans(), size=st.integers(1, 4000))
    def deliver_some(self, data: st.DataObject, forward: bool, size: int) -> None:
        pair = data.draw(st.sampled_from(sorted(self.links)))
        link = self.links[pair]
        src, dst, endpoint = (link.a, link.b, link.eb) if forward else (link.b, link.a, link.ea)
        chunk = src.data_to_send(size)
        if chunk:
            endpoint.receive_data(dst, chunk)

    @rule(i=st.integers(0, 2))
    def tick(self, i: int) -> None:
        self.eps[i].tick()

    @rule(i=st.integers(0, 2))
    def crash_and_restart(self, i: int) -> None:
        for pair in [p for p in self.links if i in p]:
            link = self.links.pop(pair)
            other = pair[1] if pair[0] == i else pair[0]
            self.eps[other].close_session(link.b if pair[0] == i else link.a)
        self.eps[i].store.close()  # abrupt: nothing in memory is saved
        self.eps[i] = self._open(i)

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def stores_agree_with_memory(self) -> None:
        for e in self.eps:
            replica = e.replica(self.space)
            assert replica.executed_count() == replica.store.log_size(self.space)

    def teardown_check(self) -> None:
        for pair in PAIRS:
            self.link_up(pair)
        pump(self.links.values())
        replicas = [e.replica(self.space) for e in self.eps]
        for r in replicas:
            assert r.staged_count == 0 and r.pending_count == 0
            assert causality_violation(r.dump_order()) is None
        assert all(r.vector == replicas[0].vector for r in replicas)
        assert len({r.order_digest() for r in replicas}) == 1
        assert len({r.state_digest() for r in replicas}) == 1


class CheckedThreeEndpoints(ThreeEndpoints):
    def teardown(self) -> None:
        try:
            self.teardown_check()
        finally:
            super().teardown()


CheckedThreeEndpoints.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_three_endpoints_converge = CheckedThreeEndpoints.TestCase
