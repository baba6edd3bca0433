"""The engine registry: kinds are filled from above, by imports or installed entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest

from p2pspace.core import engine_registry
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext, Engine, EngineState
from p2pspace.core.engine_registry import (
    ENTRY_POINT_GROUP,
    load_installed_engines,
    lookup_engine,
    register_engine,
    registered_kinds,
)
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members
from p2pspace.engines.members import MembersEngine
from p2pspace.engines.rdb import RdbEngine
from p2pspace.errors import CommandError, LocalProtocolError
from tests.helpers import TIMEOUT
from tests.helpers.replicas import assert_same, wires_of


class CounterEngine(Engine):
    """A minimal engine the core has never heard of: one integer per key, ``add`` to it."""

    kind: ClassVar[str] = "test-counter"

    def validate(self, command: Command) -> None:
        args = command.args
        if command.name != "add" or type(args) is not dict or set(args) != {"key", "n"}:
            raise CommandError("counter takes add {key, n}")
        if type(args["key"]) is not str or type(args["n"]) is not int:
            raise CommandError("counter add: key is a string, n an integer")

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        key = command.args["key"].encode()
        old = state.get(key)
        value = int.from_bytes(old, "big", signed=True) if old is not None else 0
        state.put(key, (value + command.args["n"]).to_bytes(16, "big", signed=True))
        return [old]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        (old,) = undo_record
        key = command.args["key"].encode()
        if old is None:
            state.delete(key)
        else:
            state.put(key, old)


class InstalledEngine(CounterEngine):
    """Stands for an engine of a separately installed distribution (found by entry point)."""

    kind: ClassVar[str] = "test-installed"


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations and entry-point loading made by the test do not outlive it."""
    monkeypatch.setattr(engine_registry, "_KINDS", dict(engine_registry._KINDS))
    monkeypatch.setattr(engine_registry, "_installed_loaded", False)


def _add(key: str, n: int) -> Command:
    return Command(engine="c", name="add", args={"key": key, "n": n})


def test_builtins_are_registered_by_importing_the_engines() -> None:
    assert lookup_engine("members") is MembersEngine
    assert lookup_engine("rdb") is RdbEngine
    assert {"members", "rdb"} <= registered_kinds()


@pytest.mark.usefixtures("isolated_registry")
def test_register_is_idempotent_and_refuses_conflicts() -> None:
    assert register_engine(CounterEngine) is CounterEngine
    assert register_engine(CounterEngine) is CounterEngine
    assert lookup_engine("test-counter") is CounterEngine

    class Impostor(CounterEngine):
        pass

    with pytest.raises(LocalProtocolError):
        register_engine(Impostor)  # same kind, another class
    assert lookup_engine("test-counter") is CounterEngine
    with pytest.raises(LocalProtocolError):
        register_engine(dict)  # type: ignore[type-var]

    class Nameless(CounterEngine):
        kind: ClassVar[str] = ""

    with pytest.raises(LocalProtocolError):
        register_engine(Nameless)


@pytest.mark.usefixtures("isolated_registry")
def test_a_space_runs_an_engine_registered_from_outside_the_core(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    register_engine(CounterEngine)
    a_id, b_id = identities[0], identities[1]
    a = Replica.create_space(
        make_store("a"), a_id, name="counters", time=1, engines={"c": "test-counter"}
    )
    assert a.engine_kinds == {"members": "members", "c": "test-counter"}
    a.create(
        [members.add_command(member_id=b_id.endpoint_id, key=b_id.public_key, name="b")], time=2
    )
    b = Replica.join(make_store("b"), b_id, a.genesis.wire())
    assert not b.receive(wires_of(a)).rejected
    # Concurrent adds merge by undo/redo through the registered engine's undo records.
    a.create([_add("x", 5)], time=3)
    b.create([_add("x", -2), _add("y", 1)], time=3)
    a.receive(wires_of(b))
    b.receive(wires_of(a))
    assert a.stats.undone + b.stats.undone > 0
    assert_same(a, b)
    assert a.state("c").get(b"x") == (3).to_bytes(16, "big", signed=True)
    with pytest.raises(LocalProtocolError):
        a.create([Command(engine="c", name="add", args={"key": "x"})], time=4)


@pytest.mark.usefixtures("isolated_registry")
def test_unregistered_kind_is_a_typed_error(
    make_store: Callable[[str], Store], identities: list[Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_registry, "_installed_loaded", True)  # nothing else installed
    store = make_store("u")
    with pytest.raises(CommandError, match="unknown engine kind"):
        Replica.create_space(store, identities[0], name="x", time=1, engines={"c": "test-counter"})
    assert store.spaces() == []
    # A genesis made where the kind exists cannot be joined where it does not.
    register_engine(CounterEngine)
    other = Replica.create_space(
        make_store("o"), identities[1], name="x", time=1, engines={"c": "test-counter"}
    )
    del engine_registry._KINDS["test-counter"]  # this test's copy (see isolated_registry)
    with pytest.raises(CommandError, match="unknown engine kind"):
        Replica.join(store, identities[0], other.genesis.wire())
    assert store.spaces() == []


@pytest.mark.usefixtures("isolated_registry")
def test_installed_engines_load_once_on_the_first_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[str] = []
    here = __name__

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        scans.append(group)
        return [
            EntryPoint(name="test-installed", value=f"{here}:InstalledEngine", group=group),
            EntryPoint(name="test-mislabelled", value=f"{here}:CounterEngine", group=group),
            EntryPoint(name="test-broken", value=f"{here}:NoSuchEngine", group=group),
            EntryPoint(name="rdb", value="p2pspace.engines.rdb:RdbEngine", group=group),
        ]

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    assert lookup_engine("rdb") is RdbEngine  # registered: no scan
    assert scans == []
    assert lookup_engine("test-installed") is InstalledEngine
    assert scans == [ENTRY_POINT_GROUP]
    # A broken or mislabelled plugin is skipped, and a second miss does not scan again.
    assert lookup_engine("test-broken") is None
    assert lookup_engine("test-mislabelled") is None
    assert lookup_engine("test-counter") is None
    assert scans == [ENTRY_POINT_GROUP]
    # Called directly, it scans again and reports only kinds it added.
    assert load_installed_engines() == []
    assert len(scans) == 2


def test_the_built_ins_are_declared_as_installed_entry_points() -> None:
    declared = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
    assert {"members", "rdb"} <= set(declared)
    assert declared["members"].load() is MembersEngine
    assert declared["rdb"].load() is RdbEngine


PROBE = """
import json, sys
from p2pspace.core import engine_registry
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
before = sorted(engine_registry.registered_kinds())
from pathlib import Path
store = Store(Path(sys.argv[1]), durability="normal")
replica = Replica.create_space(store, Identity.from_seed(b"p"), name="s", time=1)
print(json.dumps({"before": before, "after": sorted(engine_registry.registered_kinds()),
                  "engines": sorted(replica.engine_kinds.values())}))
"""


def test_a_process_that_never_imports_the_engines_finds_them_installed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(tmp_path / "s.sqlite3")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["before"] == []  # the core registered nothing itself
    assert {"members", "rdb"} <= set(result["after"])
    assert result["engines"] == ["members", "rdb"]
