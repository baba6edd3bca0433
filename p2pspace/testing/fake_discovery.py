"""A discovery service a test drives by hand: it announces and withdraws sightings itself.

Theory of operation. :class:`FakeDiscovery` implements what a node uses of mDNS discovery
(:class:`~p2pspace.node.discovery.PeerDiscovery`): the ``peers`` present now and the ``events``
stream of :class:`~p2pspace.node.discovery.Sighting`. Instead of listening to the LAN, a test
calls :meth:`FakeDiscovery.announce` ("this endpoint is at these addresses") and
:meth:`FakeDiscovery.withdraw` ("it left"), exactly what the node would hear from mDNS, so the
node's reaction -- which peers become dial targets, which are forgotten -- runs unchanged.
Give each node its own fake (``open_test_node(..., discovery=FakeDiscovery())``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import trio

from p2pspace.errors import LocalProtocolError
from p2pspace.node.discovery import Sighting
from p2pspace.sync.messages import PROTOCOL_VERSION

EVENT_QUEUE = 256


class FakeDiscovery:
    """Sightings announced by the test. Use :meth:`run` with ``nursery.start`` (the node does)."""

    def __init__(self, *, max_events: int = EVENT_QUEUE) -> None:
        self._peers: dict[bytes, Sighting] = {}
        self._send, self._events = trio.open_memory_channel[Sighting](max_events)
        self.running = False

    @property
    def peers(self) -> Mapping[bytes, Sighting]:
        return self._peers

    @property
    def events(self) -> trio.MemoryReceiveChannel[Sighting]:
        return self._events

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; the events stream ends then (as the mDNS one does)."""
        self.running = True
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.running = False
            self._send.close()

    def announce(
        self,
        endpoint: bytes,
        addresses: Iterable[tuple[str, int]],
        *,
        version: int = PROTOCOL_VERSION,
    ) -> Sighting:
        """Report ``endpoint`` present at ``addresses`` (an unchanged sighting is not repeated,
        as with mDNS). Raises :class:`LocalProtocolError` if the node has not consumed the last
        ``max_events`` sightings (the test outran it)."""
        sighting = Sighting(endpoint=endpoint, addresses=tuple(addresses), version=version)
        if self._peers.get(endpoint) != sighting:
            self._peers[endpoint] = sighting
            self._emit(sighting)
        return sighting

    def find(self, endpoint: bytes) -> Sighting | None:
        return self._peers.get(endpoint)

    def rematch(self) -> None:
        """Nothing to do: the test announces endpoints by id."""

    def withdraw(self, endpoint: bytes) -> None:
        """Report ``endpoint`` gone (nothing happens if it was not present)."""
        seen = self._peers.pop(endpoint, None)
        if seen is not None:
            self._emit(Sighting(endpoint=endpoint, addresses=(), version=seen.version, gone=True))

    def _emit(self, sighting: Sighting) -> None:
        try:
            self._send.send_nowait(sighting)
        except trio.WouldBlock:
            raise LocalProtocolError("the node is not consuming sightings") from None
        except trio.ClosedResourceError:
            raise LocalProtocolError("this discovery has stopped") from None


__all__ = ["FakeDiscovery"]
