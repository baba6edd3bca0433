"""Whether simulated replicas converged: the same executed order, the same engine state, and
an executed order that respects every dependency on each of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2pspace.sync.endpoint import Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class Convergence:
    converged: bool
    reasons: tuple[str, ...]
    endpoints: tuple[dict[str, Any], ...]


def compare(
    endpoints: Sequence[tuple[int, Endpoint | None]],
    space_id: bytes,
    protocol_errors: Sequence[str] = (),
) -> Convergence:
    """Compare the replicas of ``space_id`` on ``endpoints`` (``(index, endpoint or None if
    down)``); ``protocol_errors`` between them count against convergence."""
    reasons: list[str] = []
    info: list[dict[str, Any]] = []
    orders = set()
    states = set()
    for index, endpoint in endpoints:
        if endpoint is None:
            reasons.append(f"endpoint {index} is down")
            continue
        replica = endpoint.replica(space_id)
        order, state = replica.order_digest(), replica.state_digest()
        orders.add(order)
        states.add(state)
        info.append(
            {
                "id": endpoint.endpoint_id.hex(),
                "executed": replica.executed_count(),
                "order_digest": order,
                "state_digest": state,
            }
        )
        problem = causality_violation(replica.dump_order())
        if problem:
            reasons.append(f"endpoint {index}: {problem}")
    if len(orders) > 1:
        reasons.append("replicas differ in executed order")
    if len(states) > 1:
        reasons.append("replicas differ in engine state")
    reasons.extend(f"protocol error: {e}" for e in protocol_errors[:5])
    return Convergence(converged=not reasons, reasons=tuple(reasons), endpoints=tuple(info))


def causality_violation(order: list[dict[str, Any]]) -> str | None:
    """None if every delta in ``order`` comes after all of its dependencies, else why not."""
    executed: dict[str, int] = {}
    for entry in order:
        for creator, seq in entry["deps"].items():
            if executed.get(creator, 0) < seq:
                return f"{entry['creator'][:8]}:{entry['seq']} executed before {creator[:8]}:{seq}"
        if executed.get(entry["creator"], 0) != entry["seq"] - 1:
            return f"{entry['creator'][:8]}:{entry['seq']} executed out of seq order"
        executed[entry["creator"]] = entry["seq"]
    return None
