"""Releases that speak different protocol versions: what they agree on, and how they part when
they cannot sync (a clear UNSUPPORTED_VERSION naming both sides)."""

from __future__ import annotations

import pytest

from p2pspace.core import codec
from p2pspace.engines import rdb
from p2pspace.errors import ErrorCode, RemoteProtocolError
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.messages import LEGACY, PROTOCOL_VERSION, Error, Versions
from p2pspace.sync.session import Session, State
from p2pspace.testing.loopback import Link
from tests.sync.endpoints import Net, messages, same, space_of

NEWER = Versions(
    protocol_low=PROTOCOL_VERSION + 1,
    protocol_high=PROTOCOL_VERSION + 2,
    formats_low=1,
    formats_high=1,
)


def link_with(a: Endpoint, b: Endpoint, versions: Versions) -> Link:
    """``a`` runs this release; ``b``'s session speaks ``versions`` (another release)."""
    sa = a.open_session(expected_peer=b.endpoint_id)
    sb = Session(b, expected_peer=a.endpoint_id, versions=versions)
    b.sessions.append(sb)
    return Link(a=sa, b=sb, ea=a, eb=b)


def frame_versions(data: bytes) -> set[int]:
    return {codec.decode(payload)[1] for payload in FrameDecoder().feed(data)}


def test_a_first_release_peer_gets_only_first_release_frames_and_syncs(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    a.create_many(sid, [[rdb.create("t", f"r{i}", {"v": i})] for i in range(20)], time=3)
    link = link_with(a, b, LEGACY)
    sent: set[int] = set()
    for _ in range(50):
        data = link.a.data_to_send()
        sent |= frame_versions(data)
        if data:
            b.receive_data(link.b, data)
        back = link.b.data_to_send()
        if back:
            a.receive_data(link.a, back)
        a.tick()
        b.tick()
    assert sent == {1}
    assert link.a.protocol == 1 and link.a.peer_versions == LEGACY
    same(a.replica(sid), b.replica(sid))
    assert link.a.state is State.OPEN and link.b.state is State.OPEN


def test_releases_without_a_common_version_part_naming_both(net: Net) -> None:
    (a, b), _sid = space_of(net, "a", "b")
    link = link_with(a, b, NEWER)
    with pytest.raises(RemoteProtocolError) as info:
        a.receive_data(link.a, link.b.data_to_send())  # the newer release's Hello
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    ours = link.a
    assert ours.state is State.ERROR
    assert ours.version_gap is not None
    assert ours.version_gap.describe() == (
        f"runs protocol v{PROTOCOL_VERSION + 1}; this release speaks v1-v{PROTOCOL_VERSION}: "
        "upgrade p2pspace"
    )
    assert ours.error is not None and ours.error.code == ErrorCode.UNSUPPORTED_VERSION
    # The newer release hears why, in its own terms.
    b.receive_data(link.b, ours.data_to_send())
    assert link.b.state is State.CLOSED and link.b.error is not None
    assert link.b.error.code == ErrorCode.UNSUPPORTED_VERSION
    assert f"you run protocol v{PROTOCOL_VERSION + 1}; this endpoint speaks v1-v" in str(
        link.b.error
    )


def test_a_frame_in_a_newer_layout_is_refused_with_both_versions(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    session = a.open_session(expected_peer=b.endpoint_id)
    newer = frame(codec.encode([5, PROTOCOL_VERSION + 1, [sid, {}]]))
    with pytest.raises(RemoteProtocolError):
        a.receive_data(session, newer)
    assert session.version_gap is not None
    assert session.version_gap.peer == PROTOCOL_VERSION + 1
    (error,) = [m for m in messages(session.data_to_send()) if isinstance(m, Error)]
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert error.message == (
        f"you run protocol v{PROTOCOL_VERSION + 1}; this endpoint speaks v1-v{PROTOCOL_VERSION}"
    )


def test_a_peer_writing_a_delta_format_this_release_cannot_read_is_refused(net: Net) -> None:
    (a, b), _sid = space_of(net, "a", "b")
    writes_newer = Versions(
        protocol_low=1, protocol_high=PROTOCOL_VERSION, formats_low=1, formats_high=2
    )
    link = link_with(a, b, writes_newer)
    with pytest.raises(RemoteProtocolError):
        a.receive_data(link.a, link.b.data_to_send())
    assert link.a.version_gap is not None and link.a.version_gap.what == "delta format"
    assert link.a.version_gap.describe().startswith("writes delta format v2; this release reads")
