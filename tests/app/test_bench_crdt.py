"""The pycrdt and loro baselines of W1-W3 (``p2pspace.app.bench.crdt_baselines``) at tiny sizes.

Each library's tests run only where it is importable (the ``bench`` extra). Timings are never
checked, only that the figures are there, positive, consistent with what the test computes
itself, and that the replicas converged.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2pspace.app.bench import crdt_baselines, suite
from p2pspace.app.bench.bulk import set_commands
from p2pspace.app.bench.crdt_baselines import Edit, creates, edits_of
from p2pspace.app.bench.merge import offline_batches
from p2pspace.engines import rdb
from p2pspace.errors import LocalProtocolError

LIBRARIES = ("pycrdt", "loro")


def _replica(name: str, client: int) -> crdt_baselines.CrdtReplica:
    pytest.importorskip(name)
    return crdt_baselines.libraries()[name](client)


def test_edits_are_the_workloads_commands_in_order() -> None:
    batches = set_commands(random.Random(5), 30, 7)
    edits = edits_of(batches)
    assert [(e.record, e.fields, e.create) for e in edits] == [
        (c.args["record"], c.args["fields"], False) for batch in batches for c in batch
    ]
    offline = edits_of(offline_batches(random.Random(6), 1, 50, 4))
    assert {e.create for e in offline} == {True, False}
    assert all(e.record.startswith("own1-") for e in offline if e.create)
    assert creates(3) == [Edit(record=f"r{k}", fields={"v": 0}, create=True) for k in range(3)]
    with pytest.raises(LocalProtocolError):
        edits_of([[rdb.delete("t", "r0")]])


@pytest.mark.parametrize("name", LIBRARIES)
def test_w1_logs_every_transaction(tmp_path: Path, name: str) -> None:
    pytest.importorskip(name)
    batches = set_commands(random.Random(1), 300, 10)
    figures = crdt_baselines.w1(tmp_path, batches, records=10, single=40)
    assert figures[f"{name}_deltas_per_s_single"] > 0
    assert figures[f"{name}_deltas_per_s_group"] > 0
    assert figures[f"{name}_bytes"] == (tmp_path / f"{name}-w1-group.log").stat().st_size
    # One transaction for all 300 edits costs fewer bytes than one transaction per edit.
    one_each = _replica(name, 1)
    one_each.commit(creates(10))
    per_edit = sum(len(one_each.commit([e])) for e in edits_of(batches))
    assert 0 < figures[f"{name}_bytes"] < per_edit
    assert (tmp_path / f"{name}-w1-single.log").stat().st_size > 0


@pytest.mark.parametrize("name", LIBRARIES)
def test_w2_sends_state_not_history(tmp_path: Path, name: str) -> None:
    pytest.importorskip(name)
    batches = set_commands(random.Random(2), 400, 10)
    figures = crdt_baselines.w2(tmp_path, batches, records=10, catch_ups=2)
    assert figures[f"{name}_converged"] is True
    assert figures[f"{name}_seconds"] > 0 and figures[f"{name}_deltas_per_s"] > 0
    # What B lacks is the last 200 edits on 10 records: the update carries about the 10 latest
    # values, far less than the 200 edits' own updates, and less than the whole state.
    history = _replica(name, 1)
    history.commit(creates(10))
    lacking = sum(len(history.commit([e])) for e in edits_of(batches)[200:])
    assert 0 < figures[f"{name}_bytes"] < lacking
    assert figures[f"{name}_bytes"] < figures[f"{name}_state_bytes"]
    state = (tmp_path / f"{name}-w2-b1.state").read_bytes()
    assert len(state) == figures[f"{name}_state_bytes"]


@pytest.mark.parametrize("name", LIBRARIES)
def test_w3_replicas_converge(tmp_path: Path, name: str) -> None:
    pytest.importorskip(name)
    rng = random.Random(3)
    offline = [offline_batches(rng, n, 120, 5) for n in range(3)]
    figures = crdt_baselines.w3(tmp_path, offline, shared=5)
    assert figures[f"{name}_converged"] is True
    made = sum(e.create for batches in offline for e in edits_of(batches))
    assert figures[f"{name}_records"] == 5 + made
    assert figures[f"{name}_seconds"] > 0 and figures[f"{name}_bytes"] > 0
    states = {(tmp_path / f"{name}-w3-{n}.state").stat().st_size for n in range(3)}
    assert min(states) > 0


@pytest.mark.parametrize("name", LIBRARIES)
def test_replicas_that_missed_an_update_differ(name: str) -> None:
    # The convergence figure compares values: replicas that did not exchange must not compare
    # equal, or a broken merge would still report converged.
    a, b = _replica(name, 1), _replica(name, 2)
    a.commit(creates(2))
    b.apply(a.encoded_state())
    assert a.value() == b.value()
    a.commit([Edit(record="r1", fields={"v": 9}, create=False)])
    assert a.value() != b.value()
    b.apply(a.update_since(b.version()))
    assert a.value() == b.value() == {"r0": {"v": 0}, "r1": {"v": 9}}


def test_missing_libraries_give_no_figures_and_one_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(crdt_baselines, "HAVE_PYCRDT", False)
    monkeypatch.setattr(crdt_baselines, "HAVE_LORO", False)
    crdt_baselines._note_missing.cache_clear()
    batches = set_commands(random.Random(1), 20, 4)
    assert crdt_baselines.w1(tmp_path, batches, records=4, single=5) == {}
    assert crdt_baselines.w2(tmp_path, batches, records=4, catch_ups=2) == {}
    err = capsys.readouterr().err
    assert err.count("not importable") == 1 and "pycrdt and loro" in err
    crdt_baselines._note_missing.cache_clear()


def test_the_quick_w2_reports_the_importable_libraries(tmp_path: Path) -> None:
    (result,) = suite.run(["W2"], quick=True, root=tmp_path)
    for name in crdt_baselines.libraries():
        assert result[f"{name}_converged"] is True
        assert 0 < result[f"{name}_bytes"] < result["bytes"]
    for name in set(LIBRARIES) - set(crdt_baselines.libraries()):
        assert not any(key.startswith(f"{name}_") for key in result)
