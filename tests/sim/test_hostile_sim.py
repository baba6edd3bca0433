"""A byzantine member on the simulated network: the honest replicas still converge.

For every seed, 4 endpoints share a space and the last one is a byzantine member
(:mod:`p2pspace.testing.hostile`) -- a participant, in some seeds a guest, and in some seeds
removed midway by the space's creator. Besides ordinary writes it backdates deltas (old
dependency vectors, low ranks), squats record ids other members use, and tries every managing
action (a sybil added as manager, promoting itself, demoting or removing the creator, the
quota); what its own replica refuses it hands straight to its neighbours. Network faults vary
with the seed. After healing, every *honest* replica must have the same executed order and
engine state, in an order that respects every dependency. CI runs 200 seeds;
``P2PSPACE_SEEDS=N`` runs N. A failing seed names the ``p2pspace simulate`` command that
replays it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from p2pspace.app.cli import main
from p2pspace.core.delta import DeltaId
from p2pspace.core.merge import VOID
from p2pspace.core.replica import Replica
from p2pspace.engines import members
from p2pspace.testing import Faults, SimNetwork, run_simulation
from p2pspace.testing.hostile import ATTACKS, Byzantine

SEEDS = int(os.environ.get("P2PSPACE_SEEDS", "200"))
ENDPOINTS = 4
DELTAS = 30
NETWORK = (
    [],
    ["drop", "dup", "reorder"],
    ["partition"],
    ["crash"],
    ["drop", "reorder", "crash", "partition"],
)


def scenario(seed: int, *member: str) -> tuple[list[str], str]:
    faults = [*NETWORK[seed % len(NETWORK)], *(member or ("hostile",))]
    topology = "ring" if (seed // len(NETWORK)) % 2 else "mesh"
    return faults, topology


def replay(seed: int, faults: list[str], topology: str) -> str:
    return (
        f"p2pspace simulate --seed {seed} --endpoints {ENDPOINTS} --deltas {DELTAS} "
        f"--faults {','.join(faults)} --topology {topology}"
    )


@pytest.mark.parametrize("seed", range(SEEDS))
def test_honest_replicas_converge_despite_a_hostile_member(seed: int, tmp_path: Path) -> None:
    faults, topology = scenario(seed)
    report = run_simulation(
        tmp_path, endpoints=ENDPOINTS, deltas=DELTAS, seed=seed, faults=faults, topology=topology
    )
    assert report.converged, (
        f"seed {seed} did not converge ({replay(seed, faults, topology)}): {report.reasons}"
    )
    assert report.deltas == DELTAS
    assert report.byzantine is not None and report.byzantine["moves"] > 0
    assert len(report.endpoints) == ENDPOINTS - 1  # the honest ones
    assert len({e["order_digest"] for e in report.endpoints}) == 1
    assert len({e["state_digest"] for e in report.endpoints}) == 1


EQUIVOCATION_SEEDS = int(os.environ.get("P2PSPACE_SEEDS", "200"))


def test_honest_replicas_converge_despite_an_equivocating_member(tmp_path: Path) -> None:
    failed = []
    for seed in range(EQUIVOCATION_SEEDS):
        faults, topology = scenario(seed, "hostile", "equivocate")
        report = run_simulation(
            tmp_path / str(seed),
            endpoints=ENDPOINTS,
            deltas=DELTAS,
            seed=seed,
            faults=faults,
            topology=topology,
            quiet_limit_ms=10_000,
        )
        if not report.converged:
            failed.append(f"{replay(seed, faults, topology)}: {report.reasons}")
    assert not failed, failed


# -- what the byzantine member does, and what every honest replica makes of it ---------------


@contextmanager
def network(root: Path, seed: int, kinds: list[str]) -> Iterator[SimNetwork]:
    net = SimNetwork(root, endpoints=ENDPOINTS, seed=seed, faults=Faults.of(kinds))
    try:
        yield net
    finally:
        net.close()


def run(net: SimNetwork, *, turns: int) -> None:
    net.schedule_workload(DELTAS, over_ms=2000)
    net.schedule_hostile(turns, over_ms=2000)
    net.schedule_faults(over_ms=2000)
    net.run_for(2100)
    net.heal()
    assert net.run_until_quiet()
    result = net.check_convergence()
    assert result.converged, result.reasons


def honest(net: SimNetwork) -> list[Replica]:
    return [net.replica(i) for i in net.honest]


def byzantine(net: SimNetwork) -> Byzantine:
    assert net.byzantine is not None
    return net.byzantine


def hostile_ids(replica: Replica, creator: bytes) -> list[DeltaId]:
    log = replica.store.iter_log(replica.space_id)
    return [DeltaId(c, s) for c, s, _r, _w in log if c == creator]


def test_the_byzantine_member_tries_everything_and_gains_nothing(tmp_path: Path) -> None:
    seed = next(seeds_drawing(tmp_path, "participant", removed=False))
    with network(tmp_path / "run", seed, ["drop", "hostile"]) as net:
        run(net, turns=24)
        member = byzantine(net).member
        assert set(member.counts) == {"write", *(a for a in ATTACKS if a != "equivocate")}
        me, creator = member.identity.endpoint_id, net.endpoint(0).endpoint_id
        refused = 0
        for replica in honest(net):
            view = replica.members()
            assert view.managers() == {creator}
            assert view.role_of(me) == "participant"
            assert view.get(member.sybil.endpoint_id) is None
            assert view.quota() == members.DEFAULT_QUOTA
            # Its ordinary, backdated and squatting deltas are in the log like anyone's.
            assert hostile_ids(replica, me)
            refused += replica.stats.rejected
        assert refused > 0  # its managing deltas, refused before storage


def test_a_hostile_guest_gets_nothing_stored(tmp_path: Path) -> None:
    seed = next(seeds_drawing(tmp_path, "guest", removed=False))
    with network(tmp_path / "run", seed, ["reorder", "hostile"]) as net:
        run(net, turns=16)
        me = byzantine(net).member.identity.endpoint_id
        refused = 0
        for replica in honest(net):
            assert hostile_ids(replica, me) == []
            assert replica.members().role_of(me) == "guest"
            refused += replica.stats.rejected
        assert refused > 0


def test_a_removed_byzantine_members_concurrent_deltas_are_void(tmp_path: Path) -> None:
    """Among the seeds where a participant is removed midway (under partitions, so some of its
    deltas are concurrent with the removal), every one of its deltas that the removal does not
    cover is void on every honest replica; at least one such run has some."""
    with_void = 0
    candidates = list(itertools.islice(seeds_drawing(tmp_path, "participant", removed=True), 4))
    for seed in candidates:
        with network(tmp_path / f"run{seed}", seed, ["partition", "reorder", "hostile"]) as net:
            run(net, turns=20)
            me = byzantine(net).member.identity.endpoint_id
            for replica in honest(net):
                assert not replica.is_member(me)
                covered = removal_covers(replica, me)
                for did in hostile_ids(replica, me):
                    if did.seq > covered:
                        assert replica.refusal(did) == VOID
                        with_void += 1
    assert with_void > 0, candidates


def removal_covers(replica: Replica, victim: bytes) -> int:
    """The victim's last delta the (first) executed removal of it depends on."""
    record = replica.members().get(victim)
    assert record is not None and record.removed_by is not None
    remover, seq = record.removed_by
    for entry in replica.dump_order():
        if entry["creator"] == remover.hex() and entry["seq"] == seq:
            return int(entry["deps"].get(victim.hex(), 0))
    raise AssertionError("the removal is not in the executed order")


def drawn(root: Path, seed: int) -> tuple[str, bool]:
    """The byzantine member's role and whether it will be removed, for ``seed`` (mesh)."""
    with network(root / f"draw{seed}", seed, ["hostile"]) as net:
        return byzantine(net).role, byzantine(net).removal_due


def seeds_drawing(root: Path, role: str, *, removed: bool) -> Iterator[int]:
    """The seeds (of the first 100) whose mesh run has the byzantine member drawn so."""
    return (s for s in range(100) if drawn(root, s) == (role, removed))


def test_roles_and_removals_vary_across_seeds(tmp_path: Path) -> None:
    seen = {drawn(tmp_path, s) for s in range(20)}
    assert {role for role, _removed in seen} == {"participant", "guest"}
    assert {removed for _role, removed in seen} == {True, False}


def test_same_seed_same_hostile_run(tmp_path: Path) -> None:
    faults, topology = scenario(4)
    reports = [
        run_simulation(
            tmp_path / name,
            endpoints=ENDPOINTS,
            deltas=DELTAS,
            seed=4,
            faults=faults,
            topology=topology,
        )
        for name in ("a", "b")
    ]
    first, second = reports
    assert [e["order_digest"] for e in first.endpoints] == [
        e["order_digest"] for e in second.endpoints
    ]
    assert first.byzantine == second.byzantine
    assert first.stats == second.stats


def test_simulate_command_takes_the_member_faults(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--endpoints", "4", "--deltas", "20", "--seed", "3"]
    assert main([*argv, "--faults", "drop,hostile"]) == 0
    assert "converged" in capsys.readouterr().out
