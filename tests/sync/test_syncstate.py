"""The processor and peer sync state machines are tables; anything else is an error."""

from __future__ import annotations

import pytest

from p2pspace.errors import LocalProtocolError
from p2pspace.sync.syncstate import (
    PEER_TRANSITIONS,
    PeerInput,
    PeerMachine,
    PeerState,
    ProcessorInput,
    ProcessorMachine,
    ProcessorState,
)


def test_a_connection_lifecycle() -> None:
    m = PeerMachine()
    assert m.state is PeerState.DISCONNECTED
    for event, state in (
        (PeerInput.DIAL, PeerState.CONNECTING),
        (PeerInput.OPENED, PeerState.CATCHING_UP),
        (PeerInput.SYNCED, PeerState.LIVE),
        (PeerInput.BEHIND, PeerState.CATCHING_UP),
        (PeerInput.SYNCED, PeerState.LIVE),
        (PeerInput.FAILED, PeerState.ERROR),
        (PeerInput.DIAL, PeerState.CONNECTING),
        (PeerInput.CLOSED, PeerState.DISCONNECTED),
    ):
        assert m.feed(event, "boom") is state
    assert m.error == ""


def test_failure_keeps_its_reason_until_reconnected() -> None:
    m = PeerMachine()
    m.feed(PeerInput.DIAL)
    m.feed(PeerInput.FAILED, "bad signature")
    assert (m.state, m.error) == (PeerState.ERROR, "bad signature")
    m.feed(PeerInput.CLOSED)
    assert m.error == "bad signature"
    m.feed(PeerInput.DIAL)
    assert m.error == ""


@pytest.mark.parametrize("state", list(PeerState))
@pytest.mark.parametrize("event", list(PeerInput))
def test_every_input_outside_the_table_raises_and_errors(
    state: PeerState, event: PeerInput
) -> None:
    m = PeerMachine()
    m.state = state
    if (state, event) in PEER_TRANSITIONS:
        assert m.feed(event) is PEER_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(LocalProtocolError):
            m.feed(event)
        assert m.state is PeerState.ERROR


def test_reach_feeds_the_needed_inputs() -> None:
    m = PeerMachine()
    assert m.reach(PeerState.LIVE) and m.state is PeerState.LIVE
    assert m.reach(PeerState.CATCHING_UP) and m.state is PeerState.CATCHING_UP
    assert not m.reach(PeerState.CATCHING_UP)
    with pytest.raises(LocalProtocolError):
        m.reach(PeerState.DISCONNECTED)


def test_processor() -> None:
    p = ProcessorMachine()
    assert p.state is ProcessorState.LOADING
    p.feed(ProcessorInput.LOADED)
    assert p.state is ProcessorState.READY
    p.feed(ProcessorInput.FAILED, "disk full")
    assert (p.state, p.error) == (ProcessorState.ERROR, "disk full")
    p.feed(ProcessorInput.RELOADED)
    assert (p.state, p.error) == (ProcessorState.READY, "")
    with pytest.raises(LocalProtocolError):
        p.feed(ProcessorInput.LOADED)
    assert p.state is ProcessorState.ERROR
