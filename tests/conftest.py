"""Shared fixtures: identities, stores and replicas in temporary folders.

Importing ``p2pspace.engines`` registers the built-in engines, so every test opens replicas
with them available (as the node does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.engines import members
from tests.helpers.replicas import wires_of


@pytest.fixture
def identities() -> list[Identity]:
    """Five deterministic identities."""
    return [Identity.from_seed(f"test-{i}".encode()) for i in range(5)]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    """Open (or reopen) a store file by name under the test's temporary folder."""
    opened: list[Store] = []

    def make(name: str) -> Store:
        store = Store(tmp_path / f"{name}.sqlite3", durability="normal")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def space_pair(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> tuple[Replica, Replica]:
    """Replica ``a`` (creator, manager) and ``b`` (added member) of one space, b synced."""
    a_id, b_id = identities[0], identities[1]
    a = Replica.create_space(make_store("a"), a_id, name="test", time=1, nonce=b"\x00" * 16)
    a.create(
        [members.add_command(member_id=b_id.endpoint_id, key=b_id.public_key, name="b")], time=2
    )
    b = Replica.join(make_store("b"), b_id, a.genesis.wire())
    result = b.receive(wires_of(a))
    assert not result.rejected
    return a, b
