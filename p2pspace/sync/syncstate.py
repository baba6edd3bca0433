"""Sync states shown to users: per space a processor state, per (space, peer) a sync state.

Theory of operation (after the entity and processor tracking of Chrome's Unified Sync and
Storage). Each space's *processor* is ``loading`` while its replica opens, ``ready`` while it
executes deltas, ``error`` if its store failed. Each (space, peer) pair moves through
``disconnected -> connecting -> catching up -> live`` and back to ``disconnected`` when the
connection ends; a connection that ends in a protocol error leaves ``error`` until the next
dial. Both are tables (:data:`PROCESSOR_TRANSITIONS`, :data:`PEER_TRANSITIONS`); an input a
table does not allow is a bug: :class:`~p2pspace.errors.LocalProtocolError`, and the machine
moves to ``error``; ``reset`` (allowed everywhere) starts a peer's machine afresh. The node
feeds inputs; the API reads states.
"""

from __future__ import annotations

import enum

from p2pspace.errors import LocalProtocolError


class ProcessorState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


class ProcessorInput(enum.Enum):
    LOADED = "loaded"
    FAILED = "failed"
    RELOADED = "reloaded"


PROCESSOR_TRANSITIONS: dict[tuple[ProcessorState, ProcessorInput], ProcessorState] = {
    (ProcessorState.LOADING, ProcessorInput.LOADED): ProcessorState.READY,
    (ProcessorState.LOADING, ProcessorInput.FAILED): ProcessorState.ERROR,
    (ProcessorState.READY, ProcessorInput.FAILED): ProcessorState.ERROR,
    (ProcessorState.ERROR, ProcessorInput.FAILED): ProcessorState.ERROR,
    (ProcessorState.ERROR, ProcessorInput.RELOADED): ProcessorState.READY,
}


class PeerState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CATCHING_UP = "catching up"
    LIVE = "live"
    ERROR = "error"


class PeerInput(enum.Enum):
    DIAL = "dial"  # a connection attempt started
    OPENED = "opened"  # connection authenticated; revision exchange under way
    SYNCED = "synced"  # both directions caught up
    BEHIND = "behind"  # a new revision exchange started on a live connection
    CLOSED = "closed"  # connection ended (or the attempt failed)
    FAILED = "failed"  # connection ended with a protocol error
    RESET = "reset"  # start afresh from disconnected (after the driver hit a gap in the table)


PEER_TRANSITIONS: dict[tuple[PeerState, PeerInput], PeerState] = {
    **{(state, PeerInput.RESET): PeerState.DISCONNECTED for state in PeerState},
    (PeerState.DISCONNECTED, PeerInput.DIAL): PeerState.CONNECTING,
    (PeerState.DISCONNECTED, PeerInput.OPENED): PeerState.CATCHING_UP,
    (PeerState.DISCONNECTED, PeerInput.CLOSED): PeerState.DISCONNECTED,
    (PeerState.DISCONNECTED, PeerInput.FAILED): PeerState.ERROR,
    (PeerState.CONNECTING, PeerInput.DIAL): PeerState.CONNECTING,
    (PeerState.CONNECTING, PeerInput.OPENED): PeerState.CATCHING_UP,
    (PeerState.CONNECTING, PeerInput.CLOSED): PeerState.DISCONNECTED,
    (PeerState.CONNECTING, PeerInput.FAILED): PeerState.ERROR,
    (PeerState.CATCHING_UP, PeerInput.SYNCED): PeerState.LIVE,
    (PeerState.CATCHING_UP, PeerInput.BEHIND): PeerState.CATCHING_UP,
    (PeerState.CATCHING_UP, PeerInput.CLOSED): PeerState.DISCONNECTED,
    (PeerState.CATCHING_UP, PeerInput.FAILED): PeerState.ERROR,
    (PeerState.LIVE, PeerInput.BEHIND): PeerState.CATCHING_UP,
    (PeerState.LIVE, PeerInput.SYNCED): PeerState.LIVE,
    (PeerState.LIVE, PeerInput.CLOSED): PeerState.DISCONNECTED,
    (PeerState.LIVE, PeerInput.FAILED): PeerState.ERROR,
    (PeerState.ERROR, PeerInput.DIAL): PeerState.CONNECTING,
    (PeerState.ERROR, PeerInput.OPENED): PeerState.CATCHING_UP,
    (PeerState.ERROR, PeerInput.CLOSED): PeerState.ERROR,
    (PeerState.ERROR, PeerInput.FAILED): PeerState.ERROR,
}


class ProcessorMachine:
    def __init__(self) -> None:
        self.state = ProcessorState.LOADING
        self.error = ""

    def feed(self, event: ProcessorInput, error: str = "") -> ProcessorState:
        new = PROCESSOR_TRANSITIONS.get((self.state, event))
        if new is None:
            old, self.state = self.state, ProcessorState.ERROR
            raise LocalProtocolError(f"processor: {event.value} not allowed in {old.value}")
        self.state = new
        self.error = error if new is ProcessorState.ERROR else ""
        return new


class PeerMachine:
    def __init__(self) -> None:
        self.state = PeerState.DISCONNECTED
        self.error = ""
        self.changes = 0

    def feed(self, event: PeerInput, error: str = "") -> PeerState:
        """Apply ``event``; returns the new state."""
        new = PEER_TRANSITIONS.get((self.state, event))
        if new is None:
            old, self.state = self.state, PeerState.ERROR
            raise LocalProtocolError(f"peer sync: {event.value} not allowed in {old.value}")
        if new is not self.state:
            self.changes += 1
        self.state = new
        if event is PeerInput.FAILED:
            self.error = error
        elif new is not PeerState.ERROR:
            self.error = ""
        return new

    def reach(self, target: PeerState) -> bool:
        """Feed the inputs that move a connected pair to ``target`` (CATCHING_UP or LIVE).

        Returns True if the state changed.
        """
        before = self.state
        if target is PeerState.LIVE:
            if self.state in (PeerState.DISCONNECTED, PeerState.CONNECTING, PeerState.ERROR):
                self.feed(PeerInput.OPENED)
            self.feed(PeerInput.SYNCED)
        elif target is PeerState.CATCHING_UP:
            if self.state in (PeerState.DISCONNECTED, PeerState.CONNECTING, PeerState.ERROR):
                self.feed(PeerInput.OPENED)
            else:
                self.feed(PeerInput.BEHIND)
        else:
            raise LocalProtocolError(f"reach() is for connected states, not {target.value}")
        return self.state is not before


__all__ = [
    "PEER_TRANSITIONS",
    "PROCESSOR_TRANSITIONS",
    "PeerInput",
    "PeerMachine",
    "PeerState",
    "ProcessorInput",
    "ProcessorMachine",
    "ProcessorState",
]
