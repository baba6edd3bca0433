"""Fixtures of the tools' tests: forums of endpoints sharing a discussion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pspace.sync.endpoint import Endpoint
from tests.tools.forum import Forum, make_forum


@pytest.fixture
def forum_of(tmp_path: Path) -> Iterator[Callable[[list[str]], Forum]]:
    opened: list[Endpoint] = []
    yield lambda names: make_forum(tmp_path, names, opened)
    for endpoint in opened:
        endpoint.close()


@pytest.fixture
def solo(forum_of: Callable[[list[str]], Forum]) -> Forum:
    return forum_of(["alice"])


@pytest.fixture
def pair(forum_of: Callable[[list[str]], Forum]) -> Forum:
    forum = forum_of(["alice", "bob"])
    forum.connect(0, 1)
    return forum
