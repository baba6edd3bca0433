"""``Node.compact_space``: purge of one space on a node, as ``p2pspace space compact`` runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pspace.engines import rdb
from p2pspace.errors import ConflictError, LocalProtocolError
from p2pspace.node.config import NodeConfig
from p2pspace.testing import MemoryNetwork, open_test_node

CONFIG = NodeConfig(listen=("127.0.0.1", 7455), discovery=False, durability="normal", jitter_seed=5)


async def test_compact_deletes_closed_history_unless_the_space_keeps_it(tmp_path: Path) -> None:
    async with open_test_node(tmp_path / "ann", network=MemoryNetwork(), config=CONFIG) as ann:
        space = ann.create_space("notes").space_id
        for k in range(40):
            ann.commit(space, [rdb.create("t", f"r{k}", {"v": k})])
        with pytest.raises(ConflictError, match="no checkpoint"):
            ann.compact_space(space)
        replica = ann.replica(space)
        replica.create_checkpoint(time=1)
        ann.commit(space, [rdb.set_fields("t", "r1", {"after": 1})])
        digest = replica.state_digest()
        kept = ann.compact_space(space, keep_history=True)
        assert (kept["deleted"], kept["keep_history"]) == (0, True)
        with pytest.raises(LocalProtocolError, match="keeps its history"):
            replica.compact()
        done = ann.compact_space(space, keep_history=False)
        assert done["deleted"] >= 35 and not done["keep_history"]
        assert done["checkpoint"] == 1 and done["name"] == "notes"
        assert replica.state_digest() == digest
        assert ann.compact_space(space)["deleted"] == 0
        ann.commit(space, [rdb.set_fields("t", "r2", {"later": 1})])
        assert replica.state_digest() != digest
