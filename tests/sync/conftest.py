from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync.endpoints import Net


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()
