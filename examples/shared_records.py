"""Two endpoints share a space and edit the same record concurrently.

Run it: ``python examples/shared_records.py``. It uses only the public API: endpoints with their
own home folders and SQLite stores, a space with the record database, an invitation done by
hand (adding the member and handing over the genesis), and the in-process link from
``p2pspace.testing`` standing in for the network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from p2pspace import open_endpoint
from p2pspace.engines import members, rdb
from p2pspace.testing.loopback import connect, pump


def main(root: Path) -> dict[str, object]:
    alice = open_endpoint(root / "alice", name="alice")
    bob = open_endpoint(root / "bob", name="bob")
    try:
        space = alice.create_space("groceries", time=1)
        alice.create(
            space.space_id,
            [
                members.add_command(
                    member_id=bob.endpoint_id, key=bob.identity.public_key, name="bob"
                )
            ],
            time=2,
        )
        alice.create(space.space_id, [rdb.create("list", "milk", {"qty": 1})], time=3)
        bob.join_space(space.genesis.wire())  # the invitation hands over the genesis
        pump([connect(alice, bob)])  # bob catches up: he is now a member with the record

        # Both change the same record while disconnected.
        for session in list(alice.sessions) + list(bob.sessions):
            (alice if session in alice.sessions else bob).close_session(session)
        alice.create(space.space_id, [rdb.set_fields("list", "milk", {"qty": 2})], time=10)
        bob.create(
            space.space_id, [rdb.set_fields("list", "milk", {"qty": 3, "note": "oat"})], time=10
        )

        pump([connect(alice, bob)])  # reconnect: both execute both edits in the same order
        a_view = rdb.view(alice.replica(space.space_id))
        b_view = rdb.view(bob.replica(space.space_id))
        assert a_view.get("list", "milk") == b_view.get("list", "milk")
        return {
            "milk": a_view.get("list", "milk"),
            "alice": alice.endpoint_id,
            "bob": bob.endpoint_id,
        }
    finally:
        alice.close()
        bob.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(main(Path(tmp)))
