"""Digests and dumps that show whether two replicas agree, and whether an order was causal.

Theory of operation. Two replicas of a space that executed the same deltas in the same total
order hold the same log order and the same engine state. :func:`order_digest` hashes the
executed order (delta ids in log order); :func:`state_digest` hashes every engine state entry
of the space (instance, key, value; each part length-prefixed so no two states collide by
concatenation). :func:`dump_order` lists the order with each delta's *full* dependency vector
(rebuilt from the diffs carried on the wire), which the simulator's causality check reads.
They only read the store; they are for tests, the simulator and diagnostics, not the hot path.
"""

from __future__ import annotations

import hashlib
from typing import Any

from p2pspace.core.delta import decode_delta
from p2pspace.core.store import Store


def order_digest(store: Store, space_id: bytes) -> str:
    h = hashlib.sha256()
    for creator, seq, _rank, _wire in store.iter_log(space_id):
        h.update(creator)
        h.update(seq.to_bytes(8, "big"))
    return h.hexdigest()


def state_digest(store: Store, space_id: bytes) -> str:
    h = hashlib.sha256()
    for instance, key, value in store.state_rows(space_id):
        for part in (instance.encode(), key, value):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
    return h.hexdigest()


def dump_order(store: Store, space_id: bytes) -> list[dict[str, Any]]:
    """The executed order with each delta's full dependency vector (hex creator ids)."""
    running: dict[bytes, dict[bytes, int]] = {}
    out: list[dict[str, Any]] = []
    for creator, seq, rank, wire in store.iter_log(space_id):
        delta = decode_delta(wire)
        full = dict(running.get(creator, {}))
        for endpoint, dep in delta.deps:
            if dep > full.get(endpoint, 0):
                full[endpoint] = dep
        running[creator] = full
        deps = dict(full)
        if seq > 1:
            deps[creator] = seq - 1
        out.append(
            {
                "creator": creator.hex(),
                "seq": seq,
                "rank": rank,
                "deps": {e.hex(): s for e, s in sorted(deps.items())},
            }
        )
    return out
