"""In-process connections: two endpoints' sessions wired back to back, pumped synchronously.

Used by the benchmarks and by tests that need the real protocol on a reliable, ordered link
without the simulator's clock and faults. :func:`pump` moves bytes until no session has anything
left to send (or a round limit is hit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.session import Session


@dataclass(slots=True)
class Link:
    """A connected pair of sessions (``a`` runs on endpoint ``ea``, ``b`` on ``eb``) and the
    bytes that crossed it."""

    a: Session
    b: Session
    ea: Endpoint
    eb: Endpoint
    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0


def connect(a: Endpoint, b: Endpoint) -> Link:
    """Open a session on each endpoint for the other (peer ids known, as after TLS)."""
    sa = a.open_session(expected_peer=b.endpoint_id)
    sb = b.open_session(expected_peer=a.endpoint_id)
    return Link(a=sa, b=sb, ea=a, eb=b)


def pump(links: Iterable[Link], *, max_rounds: int = 1_000_000, chunk: int = 1 << 20) -> int:
    """Deliver bytes both ways on every link until all are idle. Returns the rounds used."""
    links = list(links)
    for rounds in range(1, max_rounds + 1):
        moved = False
        for link in links:
            data = link.a.data_to_send(chunk)
            if data:
                moved = True
                link.bytes_a_to_b += len(data)
                link.eb.receive_data(link.b, data)
            data = link.b.data_to_send(chunk)
            if data:
                moved = True
                link.bytes_b_to_a += len(data)
                link.ea.receive_data(link.a, data)
        if not moved:
            return rounds
    raise RuntimeError(f"links still busy after {max_rounds} rounds")
