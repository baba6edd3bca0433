"""Who hears of a node's changes: bounded subscriptions and ``wait_until``.

Theory of operation. Every collaborator of the node reports a change through
:meth:`ChangeFeed.announce`: with an event (:mod:`p2pspace.node.events`) when subscribers should
hear of it, without one when only waiters should look again (bytes moved, a tick ran). Waiters
(:meth:`ChangeFeed.wait_until`) re-check their predicate after every announcement. Subscribers
each get a bounded queue; one that falls ``max_events`` behind is dropped -- its channel ends --
rather than buffered for, so a slow reader can cost the node neither memory nor time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import trio

from p2pspace.node.events import NodeEvent


class ChangeFeed:
    """Fan-out of a node's change events. Every method runs on the node's trio thread."""

    def __init__(self, *, max_events: int) -> None:
        self.max_events = max_events
        self._changed = trio.lowlevel.ParkingLot()
        self._subscribers: list[trio.MemorySendChannel[NodeEvent]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def announce(self, event: NodeEvent | None = None) -> None:
        """Wake every waiter; hand ``event`` (if any) to every subscriber that keeps up."""
        self._changed.unpark_all()
        if event is None:
            return
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # A subscriber that does not keep up is dropped, not buffered for.
                self._subscribers.remove(channel)
                channel.close()

    @contextlib.contextmanager
    def subscribe(
        self, max_events: int | None = None
    ) -> Iterator[trio.MemoryReceiveChannel[NodeEvent]]:
        """A stream of the events announced from now on, at most ``max_events`` (default: the
        node's ``event_queue``) behind; past that the stream ends instead of growing."""
        send, receive = trio.open_memory_channel[NodeEvent](max_events or self.max_events)
        self._subscribers.append(send)
        try:
            yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()
            receive.close()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Return once ``predicate()`` is true (checked now and after every announcement).

        Raises :class:`trio.TooSlowError` after ``timeout`` seconds (of trio's clock).
        """
        with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
            while not predicate():
                await self._changed.park()


__all__ = ["ChangeFeed"]
