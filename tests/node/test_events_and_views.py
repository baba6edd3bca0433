"""The node's event and view records: their JSON is the documented vocabulary, key for key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from p2pspace.node.events import (
    EVENT_TYPES,
    AcksAdvanced,
    ConnectionRefused,
    DeltasExecuted,
    JoinProgress,
    MemberAdded,
    MemberRemoved,
    NodeEvent,
    PeerConnected,
    PeerDisconnected,
    PeerSighted,
    PostStatusesChanged,
    ProcessorChanged,
    RemovedFromSpace,
    RoleChanged,
    SpaceAdded,
    SyncStateChanged,
    ToolChanged,
)
from p2pspace.node.views import MemberView, NodeStatistics, PeerView, SpaceView
from p2pspace.sync.syncstate import PeerState, ProcessorState
from p2pspace.tools.discussion import ChangeEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
S, P, C = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))

SAMPLES: list[tuple[NodeEvent, dict[str, Any]]] = [
    (
        DeltasExecuted(space=S, count=2, creators=frozenset({P, C})),
        {"type": "deltas", "space": S.hex(), "count": 2, "creators": sorted([P.hex(), C.hex()])},
    ),
    (
        ToolChanged(
            space=S,
            tool="discussion",
            change=ChangeEvent(kind="added", post="ab" * 8, topic="ab" * 8, creator=P),
        ),
        {
            "type": "tool",
            "tool": "discussion",
            "kind": "added",
            "post": "ab" * 8,
            "topic": "ab" * 8,
            "by": P.hex(),
            "space": S.hex(),
        },
    ),
    (SpaceAdded(space=S, name="s"), {"type": "space", "space": S.hex(), "name": "s"}),
    (AcksAdvanced(space=S, peer=P), {"type": "acks", "space": S.hex(), "peer": P.hex()}),
    (PostStatusesChanged(space=S, peer=P), {"type": "status", "space": S.hex(), "peer": P.hex()}),
    (
        SyncStateChanged(space=S, peer=P, state=PeerState.CATCHING_UP, error=""),
        {"type": "sync", "space": S.hex(), "peer": P.hex(), "state": "catching up", "error": ""},
    ),
    (
        JoinProgress(space=S, have=3, total=9),
        {"type": "progress", "space": S.hex(), "have": 3, "total": 9},
    ),
    (
        ProcessorChanged(space=S, state=ProcessorState.ERROR),
        {"type": "processor", "space": S.hex(), "state": "error"},
    ),
    (PeerConnected(peer=P), {"type": "peer", "peer": P.hex(), "connected": True}),
    (
        PeerDisconnected(peer=P, error="gone"),
        {"type": "peer", "peer": P.hex(), "connected": False, "error": "gone"},
    ),
    (PeerSighted(peer=P, present=False), {"type": "discovery", "peer": P.hex(), "present": False}),
    (
        ConnectionRefused(error="TransportError: x"),
        {"type": "refused", "error": "TransportError: x"},
    ),
    (
        MemberAdded(space=S, member=P, role="guest", by=C),
        {"type": "member_added", "space": S.hex(), "member": P.hex(), "role": "guest",
         "by": C.hex()},
    ),
    (
        MemberRemoved(space=S, member=P, by=C),
        {"type": "member_removed", "space": S.hex(), "member": P.hex(), "by": C.hex()},
    ),
    (
        RoleChanged(space=S, member=P, role="manager", by=None),
        {"type": "role", "space": S.hex(), "member": P.hex(), "role": "manager", "by": None},
    ),
    (RemovedFromSpace(space=S, by=C), {"type": "removed", "space": S.hex(), "by": C.hex()}),
]  # fmt: skip


def documented_rows() -> dict[str, tuple[str, set[str]]]:
    """Record name -> (type, fields) from the table in docs/events.md."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in DOC.read_text("utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`") or cells[0] == "`type`":
            continue
        fields = {name for name in re.findall(r"`([a-z_]+)`", cells[1])}
        rows[cells[3].strip("`")] = (cells[0].strip("`"), fields)
    return rows


def test_every_event_serialises_as_it_always_has() -> None:
    assert {type(event) for event, _json in SAMPLES} == set(EVENT_TYPES)
    for event, expected in SAMPLES:
        assert event.to_json() == expected, type(event).__name__
        assert event.to_json()["type"] == event.TYPE


def test_the_documented_vocabulary_matches_the_records() -> None:
    rows = documented_rows()
    assert set(rows) == {cls.__name__ for cls in EVENT_TYPES}
    for event, expected in SAMPLES:
        kind, fields = rows[type(event).__name__]
        assert kind == expected["type"]
        # The Fields column names every key but "type" (and the values some keys take).
        assert set(expected) - {"type"} <= fields, (kind, fields)


def test_views_serialise_with_the_keys_the_api_serves() -> None:
    me = MemberView(id=S, name="ann", role="manager", me=True)
    other = MemberView(id=P, name="bob", role="participant", me=False, sync=PeerState.LIVE)
    space = SpaceView(
        id=S,
        name="s",
        processor="ready",
        member=True,
        members=(me, other),
        executed=3,
        pending=0,
        staged=0,
        vector={P: 1, S: 2},
    )
    assert space.to_json() == {
        "id": S.hex(),
        "tools": [],
        "checkpoints": 0,
        "last_checkpoint": 0,
        "window": 0,
        "window_bytes": 0,
        "bad_checkpoints": 0,
        "name": "s",
        "processor": "ready",
        "equivocators": [],
        "member": True,
        "role": None,
        "removed_by": None,
        "removed_by_name": "",
        "members": [
            {"id": S.hex(), "display_id": me.to_json()["display_id"], "name": "ann",
             "display_name": "ann", "role": "manager", "me": True},
            {"id": P.hex(), "display_id": other.to_json()["display_id"], "name": "bob",
             "display_name": "bob", "role": "participant", "me": False, "sync": "live",
             "connected": False},
        ],
        "executed": 3,
        "pending": 0,
        "staged": 0,
        "vector": {S.hex(): 2, P.hex(): 1},
    }  # fmt: skip
    peer = PeerView(
        id=P, connected=False, discovered=True, addresses=(("::1", 7),), spaces={S: PeerState.LIVE}
    )
    assert peer.to_json() == {
        "id": P.hex(),
        "display_id": peer.to_json()["display_id"],
        "connected": False,
        "discovered": True,
        "addresses": ["[::1]:7"],
        "spaces": {S.hex(): "live"},
    }
    stats = NodeStatistics(connections=1, targets=2, subscribers=3, refused=4)
    assert stats.to_json() == {"connections": 1, "targets": 2, "subscribers": 3, "refused": 4}
