"""The (space, peer) sync states users see, fed from what connections and sessions show.

Theory of operation. Each (space, peer) pair has a
:class:`~p2pspace.sync.syncstate.PeerMachine` (``disconnected -> connecting -> catching up ->
live``, ``error``). Inputs arrive from three places: the dialler (an attempt starts, an attempt
fails), a connection's end (closed, or failed with a protocol error), and
:meth:`PeerStates.observe`, which reads a session's per-space links after every batch of bytes
and every tick and moves each machine to what the link shows (live once both directions caught
up). Every change of state is
announced as a :class:`~p2pspace.node.events.SyncStateChanged`.

The tables are strict (an input they do not allow raises :class:`LocalProtocolError`). Such a
gap is a bug of ours, never a reason to stop a node: it is logged and the input is applied
afresh from ``disconnected``, which accepts every input it can get.

Observing also records what the peer acknowledged (:class:`~p2pspace.node.acks.AckBook`) and
announces it: :class:`~p2pspace.node.events.AcksAdvanced`, and for spaces with the discussion
tool :class:`~p2pspace.node.events.PostStatusesChanged`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping

from p2pspace.core.identity import short_id
from p2pspace.errors import LocalProtocolError
from p2pspace.node.acks import AckBook
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.events import AcksAdvanced, PostStatusesChanged, SyncStateChanged
from p2pspace.sync.space_link import LinkView
from p2pspace.sync.syncstate import PeerInput, PeerMachine, PeerState

log = logging.getLogger("p2pspace.node")


class PeerStates:
    """Every (space, peer) machine of the node."""

    def __init__(
        self, *, changes: ChangeFeed, acks: AckBook, has_discussion: Callable[[bytes], bool]
    ) -> None:
        self._machines: dict[tuple[bytes, bytes], PeerMachine] = {}
        self._changes = changes
        self._acks = acks
        self._has_discussion = has_discussion

    @property
    def machines(self) -> Mapping[tuple[bytes, bytes], PeerMachine]:
        """(space, peer) -> machine, for pairs that ever had an input."""
        return self._machines

    def state(self, space: bytes, peer: bytes) -> PeerState:
        machine = self._machines.get((space, peer))
        return machine.state if machine is not None else PeerState.DISCONNECTED

    def _machine(self, space: bytes, peer: bytes) -> PeerMachine:
        machine = self._machines.get((space, peer))
        if machine is None:
            machine = self._machines[(space, peer)] = PeerMachine()
        return machine

    def feed(self, space: bytes, peer: bytes, event: PeerInput, error: str = "") -> None:
        """Apply ``event`` to the (space, peer) machine."""
        self._step(space, peer, lambda machine: machine.feed(event, error))

    def feed_all(
        self, spaces: Iterable[bytes], peer: bytes, event: PeerInput, error: str = ""
    ) -> None:
        for space in spaces:
            self.feed(space, peer, event, error)

    def connection_ended(
        self, spaces: Iterable[bytes], peer: bytes, *, error: str, failed: bool
    ) -> None:
        """A connection to ``peer`` ended: its pairs that ever moved go back to
        ``disconnected``, or to ``error`` if the session failed."""
        for space in sorted(spaces):
            if (space, peer) not in self._machines:
                continue
            if failed:
                self.feed(space, peer, PeerInput.FAILED, error)
            else:
                self.feed(space, peer, PeerInput.CLOSED)

    def observe(self, peer: bytes, links: Iterable[LinkView]) -> None:
        """Move ``peer``'s machines to what its session's links show; record its acks."""
        for link in links:
            space = link.space
            if link.acked and self._acks.note(space, peer, link.acked):
                self._changes.announce(AcksAdvanced(space=space, peer=peer))
                if self._has_discussion(space):
                    self._changes.announce(PostStatusesChanged(space=space, peer=peer))
            target = PeerState.LIVE if link.live else PeerState.CATCHING_UP
            if self._machine(space, peer).state is not target:
                self._step(space, peer, functools.partial(PeerMachine.reach, target=target))

    def _step(self, space: bytes, peer: bytes, step: Callable[[PeerMachine], object]) -> None:
        machine = self._machine(space, peer)
        before = machine.state
        try:
            step(machine)
        except LocalProtocolError as exc:
            log.error("sync state of %s: %s", short_id(peer), exc)
            machine.feed(PeerInput.RESET)
            step(machine)
        if machine.state is not before:
            self._changes.announce(
                SyncStateChanged(space=space, peer=peer, state=machine.state, error=machine.error)
            )


__all__ = ["PeerStates"]
