"""Hostile clients against a live node on loopback: each is refused, the node keeps serving.

One honest pair -- A, the node under attack (with a short stall timeout), and B -- shares a space
made by invite/join. Every attack must be refused and counted in ``A.refused`` (exactly once),
and afterwards :func:`assert_serving` proves A was not disturbed: a record written on each honest
node reaches the other over the *same* A-B connection as before, and A still completes an honest
handshake with a newcomer.

The attackers speak the wire format by hand: TLS with their own self-signed key (``ssl`` with
CERT_NONE, as the node's own client does) and frames built with the library's encoders, so every
byte they send is chosen here. Nothing sleeps: waits are on node state (``wait_until``), node
events (``subscribe``) or bytes from the node, each bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pspace.core import codec
from p2pspace.core.identity import Identity
from p2pspace.errors import AuthenticationError, ErrorCode, InvitationError
from p2pspace.node.clock import SYSTEM_CLOCK, Clock
from p2pspace.node.connections import PeerConnection
from p2pspace.node.events import ConnectionRefused, NodeEvent, PeerDisconnected
from p2pspace.node.home import open_endpoint
from p2pspace.node.node import Node
from p2pspace.node.tls import client_context, server_context
from p2pspace.node.transport import dial
from p2pspace.sync import handshake, invitations
from p2pspace.sync.framing import MAX_FRAME, FrameDecoder, frame
from p2pspace.sync.handshake import Challenge, JoinRequest, Proof, Welcome
from p2pspace.sync.messages import (
    PROTOCOL_VERSION,
    Ack,
    Deltas,
    Error,
    Fetch,
    Hello,
    Message,
    MessageType,
    Revision,
    Synced,
    decode_message,
    encode_message,
)
from p2pspace.testing import ManualClock
from tests.helpers import TIMEOUT
from tests.helpers.nodes import attacker_context, node_at

STALL = 0.5
Events = trio.MemoryReceiveChannel[NodeEvent]

# -- the honest pair -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class Pair:
    a: Node  # under attack
    b: Node
    space: bytes
    link: PeerConnection  # A's connection to B: no attack may replace or break it
    tmp: Path
    clock: ManualClock  # A's wall clock
    rounds: int = 0
    _identities: Iterator[int] = dataclasses.field(default_factory=count)

    def new_identity(self) -> Identity:
        """A fresh identity for an attacker or a probe; seeded, so a failing test replays with
        the same ids whatever ran before it."""
        return Identity.from_seed(f"attacker-{next(self._identities)}".encode())

    @property
    def address(self) -> tuple[str, int]:
        return self.a.listen_addresses[0]


def _node(
    home: Path, name: str, *, clock: Clock = SYSTEM_CLOCK, **options: Any
) -> contextlib.AbstractAsyncContextManager[Node]:
    return node_at(home, name, clock=clock, **options)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    # Seeds chosen so that B's id is larger than A's: after the join, B's dialler then waits for
    # the join's connection instead of racing it with a second one, so A-B is one connection
    # from start to end and the test can insist it is never replaced.
    clock = ManualClock(ms=SYSTEM_CLOCK.now_ms())
    async with (
        _node(tmp_path / "a", "ann", seed=b"hostile-a", stall_timeout=STALL, clock=clock) as a,
        _node(tmp_path / "b", "bob", seed=b"hostile-b") as b,
    ):
        assert b.endpoint_id > a.endpoint_id
        space = a.create_space("shared").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        await a.wait_until(lambda: b.endpoint_id in a.connections, timeout=TIMEOUT)
        link = a.connections[b.endpoint_id]
        pair = Pair(a=a, b=b, space=space, link=link, tmp=tmp_path, clock=clock)
        await assert_serving(pair, refused=0)
        yield pair


async def assert_serving(pair: Pair, *, refused: int) -> None:
    """A has refused exactly ``refused`` connections, syncs both ways with B over the original
    connection, and still completes an honest handshake."""
    a, b, space = pair.a, pair.b, pair.space
    await a.wait_until(lambda: a.refused >= refused, timeout=TIMEOUT)
    pair.rounds += 1
    from_a, from_b = f"a{pair.rounds}", f"b{pair.rounds}"
    a.rdb_set(space, "t", from_a, {"round": pair.rounds})
    b.rdb_set(space, "t", from_b, {"round": pair.rounds})
    await b.wait_until(lambda: bool(b.rdb_get(space, "t", from_a)), timeout=TIMEOUT)
    await a.wait_until(lambda: bool(a.rdb_get(space, "t", from_b)), timeout=TIMEOUT)
    assert a.connections.get(b.endpoint_id) is pair.link
    async with connect(pair, pair.new_identity()) as probe:
        await probe.authenticate()
        assert await probe.hello() == ()
    assert a.refused == refused


# -- a hand-driven TLS client -------------------------------------------------------------------


class WireClient:
    """A TLS client that sends exactly the bytes the test gives it and reads frames back."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], identity: Identity) -> None:
        self.stream = stream
        self.identity = identity
        self.challenge: Challenge | None = None
        self._decoder = FrameDecoder()
        self._ready: deque[bytes] = deque()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_handshake(self, message: handshake.HandshakeMessage) -> None:
        await self.send(frame(handshake.encode(message)))

    async def send_message(self, message: Message) -> None:
        await self.send(frame(encode_message(message)))

    async def payload(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next frame payload from the node, or None once it closed the connection."""
        with trio.fail_after(timeout):
            while not self._ready:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    return None
                self._ready.extend(self._decoder.feed(bytes(data)))
        return self._ready.popleft()

    async def read_challenge(self) -> Challenge:
        payload = await self.payload()
        assert payload is not None, "node closed before its Challenge"
        self.challenge = handshake.decode(payload, Challenge)
        return self.challenge

    def proof_message(self, *, client: bytes | None = None, server: bytes | None = None) -> bytes:
        assert self.challenge is not None
        return handshake.proof_message(
            self.challenge.nonce,
            client if client is not None else self.identity.endpoint_id,
            server if server is not None else self.challenge.server,
        )

    async def authenticate(self) -> None:
        """The honest handshake: prove our key over the node's nonce, expect Welcome."""
        challenge = await self.read_challenge()
        await self.send_handshake(handshake.make_proof(self.identity, challenge, None))
        payload = await self.payload()
        assert payload is not None, "node closed instead of welcoming us"
        welcome: Welcome = handshake.decode(payload, Welcome)
        assert welcome.genesis == b""

    async def message(self, timeout: float = TIMEOUT) -> Message | None:
        payload = await self.payload(timeout)
        return None if payload is None else decode_message(payload)

    async def hello(self) -> tuple[bytes, ...]:
        """The spaces of the node's next frame, which must be a Hello."""
        message = await self.message()
        assert isinstance(message, Hello), message
        return message.spaces

    async def until_closed(self) -> list[Message]:
        out: list[Message] = []
        while (message := await self.message()) is not None:
            out.append(message)
        return out


def connect(pair: Pair, identity: Identity) -> contextlib.AbstractAsyncContextManager[WireClient]:
    return connect_to(pair.address, pair.tmp, identity)


@contextlib.asynccontextmanager
async def connect_to(
    address: tuple[str, int], tmp: Path, identity: Identity
) -> AsyncIterator[WireClient]:
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, attacker_context(tmp, identity), server_side=False)
    try:
        with trio.fail_after(TIMEOUT):
            await stream.do_handshake()
        yield WireClient(stream, identity)
    finally:
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.aclose()


async def closed_event(events: Events, peer: bytes) -> PeerDisconnected:
    """The next event saying ``peer``'s connection closed."""
    with trio.fail_after(TIMEOUT):
        async for event in events:
            if isinstance(event, PeerDisconnected) and event.peer == peer:
                return event
    raise AssertionError("the node's event stream ended")


async def refused_event(events: Events) -> ConnectionRefused:
    """The next event saying a connection was refused."""
    with trio.fail_after(TIMEOUT):
        async for event in events:
            if isinstance(event, ConnectionRefused):
                return event
    raise AssertionError("the node's event stream ended")


def only_error(messages: list[Message]) -> Error:
    assert len(messages) == 1 and isinstance(messages[0], Error), messages
    return messages[0]


# -- before TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        random.Random(7).randbytes(512),
        b"GET / HTTP/1.1\r\nHost: p2pspace\r\n\r\n",
        frame(encode_message(Hello(endpoint=bytes(16), spaces=(), reply=False))),
        b"",
    ],
    ids=["random-bytes", "http-request", "plaintext-hello", "connect-and-close"],
)
async def test_raw_tcp_without_tls_is_refused(pair: Pair, junk: bytes) -> None:
    with pair.a.subscribe() as events:
        async with await trio.open_tcp_stream(*pair.address) as tcp:
            await tcp.send_all(junk)
            if not junk:
                await tcp.send_eof()
            with trio.fail_after(TIMEOUT):
                while True:
                    try:
                        if not await tcp.receive_some(4096):
                            break
                    except trio.BrokenResourceError:
                        break
        event = await refused_event(events)
    assert event.error.startswith("TransportError"), event
    await assert_serving(pair, refused=1)


# -- after a proper handshake: bad frames ------------------------------------------------------

POST_HANDSHAKE: dict[str, tuple[bytes, ErrorCode]] = {
    "garbage-frame": (frame(b"\xff\xfe\xfd not CBOR at all"), ErrorCode.MALFORMED),
    "unframed-garbage": (b"GET / HTTP/1.1\r\n\r\n", ErrorCode.FRAME_TOO_LARGE),
    "oversized-length": ((MAX_FRAME + 1).to_bytes(4, "big"), ErrorCode.FRAME_TOO_LARGE),
    "max-length": (b"\xff\xff\xff\xff", ErrorCode.FRAME_TOO_LARGE),
    "handshake-challenge": (
        frame(handshake.encode(Challenge(server=bytes(16), nonce=bytes(32)))),
        ErrorCode.UNKNOWN_TYPE,
    ),
    "handshake-proof": (
        frame(handshake.encode(Proof(key=bytes(32), signature=bytes(64)))),
        ErrorCode.UNKNOWN_TYPE,
    ),
    "unknown-type-99": (frame(codec.encode([99, PROTOCOL_VERSION, []])), ErrorCode.UNKNOWN_TYPE),
    "future-version": (
        frame(codec.encode([int(MessageType.HELLO), PROTOCOL_VERSION + 1, []])),
        ErrorCode.UNSUPPORTED_VERSION,
    ),
    "bad-body": (
        frame(codec.encode([int(MessageType.HELLO), PROTOCOL_VERSION, ["x"]])),
        ErrorCode.MALFORMED,
    ),
    "synced-before-hello": (
        frame(encode_message(Synced(space=bytes(16), vector=()))),
        ErrorCode.UNEXPECTED_MESSAGE,
    ),
}


@pytest.mark.parametrize("attack", sorted(POST_HANDSHAKE))
async def test_bad_frame_after_handshake_is_refused(pair: Pair, attack: str) -> None:
    data, code = POST_HANDSHAKE[attack]
    attacker = pair.new_identity()
    with pair.a.subscribe() as events:
        async with connect(pair, attacker) as client:
            await client.authenticate()
            assert await client.hello() == ()
            await client.send(data)
            error = only_error(await client.until_closed())
        event = await closed_event(events, attacker.endpoint_id)
    assert error.code == code, error
    assert event.error and error.message in event.error
    assert attacker.endpoint_id not in pair.a.connections
    await assert_serving(pair, refused=1)


async def test_hello_naming_another_endpoint_is_refused(pair: Pair) -> None:
    attacker = pair.new_identity()
    async with connect(pair, attacker) as client:
        await client.authenticate()
        assert await client.hello() == ()
        await client.send_message(
            Hello(endpoint=pair.b.endpoint_id, spaces=(pair.space,), reply=False)
        )
        error = only_error(await client.until_closed())
    assert error.code == ErrorCode.BAD_SIGNATURE
    assert "other than the authenticated peer" in error.message
    await assert_serving(pair, refused=1)


@pytest.mark.parametrize("sent", [2, 4, 9], ids=["half-header", "header-only", "part-body"])
async def test_partial_frame_then_stall_is_dropped(pair: Pair, sent: int) -> None:
    a = pair.a
    attacker = pair.new_identity()
    data = frame(encode_message(Hello(endpoint=attacker.endpoint_id, spaces=(), reply=False)))
    async with connect(pair, attacker) as client:
        await client.authenticate()
        assert await client.hello() == ()
        await a.wait_until(lambda: attacker.endpoint_id in a.connections, timeout=TIMEOUT)
        with a.subscribe() as events:
            started = trio.current_time()
            await client.send(data[:sent])
            event = await closed_event(events, attacker.endpoint_id)
            waited = trio.current_time() - started
        assert await client.until_closed() == []
    assert event.error == f"peer stalled mid-frame for {STALL:g} s"
    assert waited >= STALL
    assert attacker.endpoint_id not in a.connections
    await assert_serving(pair, refused=1)


async def test_a_frame_trickled_a_byte_at_a_time_is_dropped(pair: Pair) -> None:
    # Each byte arrives well within the stall timeout, but the frame never completes: the
    # deadline is per frame, not per read.
    a = pair.a
    attacker = pair.new_identity()
    data = frame(encode_message(Hello(endpoint=attacker.endpoint_id, spaces=(), reply=False)))
    async with connect(pair, attacker) as client:
        await client.authenticate()
        assert await client.hello() == ()
        await a.wait_until(lambda: attacker.endpoint_id in a.connections, timeout=TIMEOUT)
        with a.subscribe() as events:

            async def trickle() -> None:
                for byte in data[:-1]:
                    await client.send(bytes([byte]))
                    await trio.sleep(STALL / 5)  # the attacker's pace, not a wait for the node

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                event = await closed_event(events, attacker.endpoint_id)
                nursery.cancel_scope.cancel()
    assert event.error == f"peer stalled mid-frame for {STALL:g} s"
    assert attacker.endpoint_id not in a.connections
    await assert_serving(pair, refused=1)


# -- the handshake: proofs that must not verify -------------------------------------------------


def _proof_signed_by_another_key(client: WireClient, pair: Pair) -> Proof:
    other = pair.new_identity()
    return Proof(key=client.identity.public_key, signature=other.sign(client.proof_message()))


def _proof_claiming_bs_key(client: WireClient, pair: Pair) -> Proof:
    # B's public key is no secret; without B's private key the signature cannot match it.
    b = pair.b.endpoint.identity
    message = client.proof_message(client=b.endpoint_id)
    return Proof(key=b.public_key, signature=client.identity.sign(message))


def _proof_claiming_bs_id(client: WireClient, pair: Pair) -> Proof:
    # Our own key, signing a message that names B as the client.
    message = client.proof_message(client=pair.b.endpoint_id)
    return Proof(key=client.identity.public_key, signature=client.identity.sign(message))


def _proof_claiming_the_servers_key(client: WireClient, pair: Pair) -> Proof:
    return Proof(
        key=pair.a.endpoint.identity.public_key,
        signature=client.identity.sign(client.proof_message()),
    )


def _proof_with_flipped_bit(client: WireClient, pair: Pair) -> Proof:
    signature = bytearray(client.identity.sign(client.proof_message()))
    signature[10] ^= 0x01
    return Proof(key=client.identity.public_key, signature=bytes(signature))


def _proof_of_zeros(client: WireClient, pair: Pair) -> Proof:
    return Proof(key=client.identity.public_key, signature=bytes(64))


def _proof_for_another_server(client: WireClient, pair: Pair) -> Proof:
    # A proof relayed from a connection to B must not open one to A.
    message = client.proof_message(server=pair.b.endpoint_id)
    return Proof(key=client.identity.public_key, signature=client.identity.sign(message))


BAD_PROOFS: dict[str, tuple[Callable[[WireClient, Pair], Proof], str]] = {
    "signed-by-another-key": (_proof_signed_by_another_key, "signature does not verify"),
    "claims-bs-key": (_proof_claiming_bs_key, "signature does not verify"),
    "claims-bs-id": (_proof_claiming_bs_id, "signature does not verify"),
    "claims-servers-key": (_proof_claiming_the_servers_key, "this endpoint's own key"),
    "flipped-bit": (_proof_with_flipped_bit, "signature does not verify"),
    "zero-signature": (_proof_of_zeros, "signature does not verify"),
    "for-another-server": (_proof_for_another_server, "signature does not verify"),
}


@pytest.mark.parametrize("attack", sorted(BAD_PROOFS))
async def test_bad_proof_is_refused(pair: Pair, attack: str) -> None:
    make, reason = BAD_PROOFS[attack]
    with pair.a.subscribe() as events:
        async with connect(pair, pair.new_identity()) as client:
            await client.read_challenge()
            await client.send_handshake(make(client, pair))
            error = only_error(await client.until_closed())
        event = await refused_event(events)
    assert error.code == ErrorCode.BAD_SIGNATURE
    assert reason in error.message
    assert event.error.startswith("AuthenticationError: ") and reason in event.error
    await assert_serving(pair, refused=1)


async def test_replayed_proof_is_refused(pair: Pair) -> None:
    attacker = pair.new_identity()
    async with connect(pair, attacker) as first:
        challenge = await first.read_challenge()
        captured = handshake.make_proof(attacker, challenge, None)
    # The first connection closed without sending its proof (A refuses that one too).
    await assert_serving(pair, refused=1)
    async with connect(pair, attacker) as second:
        await second.read_challenge()
        await second.send_handshake(captured)
        error = only_error(await second.until_closed())
    assert error.code == ErrorCode.BAD_SIGNATURE
    await assert_serving(pair, refused=2)


async def test_welcome_in_place_of_proof_is_refused(pair: Pair) -> None:
    async with connect(pair, pair.new_identity()) as client:
        await client.read_challenge()
        await client.send_handshake(Welcome(genesis=b""))
        error = only_error(await client.until_closed())
    assert error.code == ErrorCode.UNEXPECTED_MESSAGE
    await assert_serving(pair, refused=1)


# -- the dialler pins the listener --------------------------------------------------------------


async def test_dialling_an_impostor_fails_authentication(pair: Pair, tmp_path: Path) -> None:
    # C listened at an address and was known there by its id; then C left and an impostor (A,
    # with its own key) listens at that address. A dial pinned to C's id must not connect.
    dialler = pair.new_identity()
    (tmp_path / "dialler").mkdir()
    context = client_context(tmp_path / "dialler", dialler)
    async with _node(tmp_path / "c", "cy", seed=b"hostile-c") as c:
        c_id = c.endpoint_id
    host, port = pair.address
    with pytest.raises(AuthenticationError) as raised:
        await dial(host, port, identity=dialler, context=context, expected_peer=c_id)
    assert str(raised.value) == (
        f"peer presents key of endpoint {pair.a.endpoint_id.hex()}, expected {c_id.hex()}"
    )
    await assert_serving(pair, refused=1)
    # The same dial pinned to A's real id succeeds (the refusal above was the pin).
    conn = await dial(
        host, port, identity=dialler, context=context, expected_peer=pair.a.endpoint_id
    )
    assert conn.peer == pair.a.endpoint_id
    await conn.aclose()
    await assert_serving(pair, refused=1)


# -- a non-member learns nothing ----------------------------------------------------------------


def _revision(pair: Pair) -> Message:
    return Revision(space=pair.space, vector=())


def _fetch(pair: Pair) -> Message:
    return Fetch(space=pair.space, ranges=((pair.a.endpoint_id, 1, 1000),))


def _ack(pair: Pair) -> Message:
    return Ack(space=pair.space, vector=())


@pytest.mark.parametrize("ask", [_revision, _fetch, _ack], ids=["revision", "fetch", "ack"])
async def test_non_member_learns_nothing_about_a_space(
    pair: Pair, ask: Callable[[Pair], Message]
) -> None:
    a = pair.a
    attacker = pair.new_identity()
    async with connect(pair, attacker) as client:
        await client.authenticate()
        assert await client.hello() == ()
        # It knows the space id (say, from a leaked invitation) and offers it.
        await client.send_message(
            Hello(endpoint=attacker.endpoint_id, spaces=(pair.space,), reply=False)
        )
        assert await client.hello() == ()  # A's answer offers nothing
        await a.wait_until(lambda: attacker.endpoint_id in a.connections, timeout=TIMEOUT)
        assert a.connections[attacker.endpoint_id].session.linked_spaces() == ()
        assert (pair.space, attacker.endpoint_id) not in a.peer_sync
        await client.send_message(ask(pair))
        error = only_error(await client.until_closed())
    assert error.code == ErrorCode.UNEXPECTED_MESSAGE
    assert error.message == "message for a space this connection does not sync"
    await assert_serving(pair, refused=1)


async def test_non_member_learns_nothing_from_a_joiner_awaiting_its_grant(
    pair: Pair, tmp_path: Path
) -> None:
    # J redeemed an invitation and received the space's history from A, but the connection
    # dropped before the last delta -- the one granting J membership -- arrived (a catch-up
    # streams in log order, and the grant is the newest delta). J now holds the space without
    # being a member. A stranger who knows the space id (it is in every invitation code) and
    # offers it must not be served that history.
    a, space = pair.a, pair.space
    for i in range(5):
        a.rdb_set(space, "secrets", f"s{i}", {"text": f"private {i}"})
    history = [wire for _c, _s, _r, wire in a.replica(space).store.iter_log(space)]
    endpoint = open_endpoint(tmp_path / "j", seed=b"hostile-j")
    try:
        replica = endpoint.join_space(a.replica(space).genesis.wire())
        assert not replica.receive(history[1:]).rejected
        assert not replica.is_member(endpoint.endpoint_id)
    finally:
        endpoint.close()

    stranger = pair.new_identity()
    async with _node(tmp_path / "j", "jo") as j:
        assert j.rdb_get(space, "secrets")  # J does hold the history
        async with connect_to(j.listen_addresses[0], tmp_path, stranger) as client:
            await client.authenticate()
            assert await client.hello() == ()
            await client.send_message(
                Hello(endpoint=stranger.endpoint_id, spaces=(space,), reply=False)
            )
            await client.send_message(Revision(space=space, vector=()))
            # An honest J answers with a Hello offering nothing, then refuses the Revision. A
            # leaking J offers the space, sends its own Revision (its vector: who wrote how
            # much) and streams the history, ending it with Synced (or else acks it).
            received: list[Message] = []
            leaking = False
            while True:
                try:
                    # Once J has leaked, a short wait collects the rest for the failure report.
                    message = await client.message(STALL if leaking else TIMEOUT)
                except trio.TooSlowError:
                    break
                if message is None:
                    break
                received.append(message)
                if isinstance(message, (Synced, Error)) or (leaking and isinstance(message, Ack)):
                    break
                leaking = (
                    leaking
                    or isinstance(message, Revision)
                    or message == Hello(endpoint=j.endpoint_id, spaces=(space,), reply=True)
                )
    leaked = [m for m in received if isinstance(m, Deltas)]
    assert not leaked, f"J streamed {sum(len(m.wires) for m in leaked)} deltas to a stranger"
    assert not leaking, f"J offered the space to a stranger: {received}"
    hello, error = received
    assert isinstance(hello, Hello) and isinstance(error, Error), received
    assert hello.spaces == ()
    assert error.code == ErrorCode.UNEXPECTED_MESSAGE


async def test_join_refusals_do_not_reveal_which_spaces_a_node_is_in(pair: Pair) -> None:
    # A stranger with a made-up invitation for a space it knows the id of: A must refuse it the
    # same way whether or not A is a member of that space, or the refusal answers "is A in S?".
    rng = random.Random(11)
    answers: dict[str, str] = {}
    for label, space in (("member", pair.space), ("not a member", rng.randbytes(16))):
        async with connect(pair, pair.new_identity()) as client:
            challenge = await client.read_challenge()
            request = JoinRequest(
                space=space, invitation=rng.randbytes(16), mac=rng.randbytes(32), name="x"
            )
            await client.send_handshake(handshake.make_proof(client.identity, challenge, request))
            error = only_error(await client.until_closed())
        assert error.code == ErrorCode.INVITATION_REFUSED
        answers[label] = error.message
    await assert_serving(pair, refused=2)
    assert answers["member"] == answers["not a member"], answers


# -- invitations ----------------------------------------------------------------------------------


async def join_refused(node: Node, code: str) -> str:
    """The message of the InvitationError ``node.join(code)`` raises."""
    with pytest.raises(InvitationError) as raised:
        await node.join(code, timeout=TIMEOUT)
    return str(raised.value)


async def test_reused_invitation_is_refused(pair: Pair, tmp_path: Path) -> None:
    a, space = pair.a, pair.space
    code = a.invite(space)
    async with _node(tmp_path / "c", "cy") as c:
        assert await c.join(code, timeout=TIMEOUT) == space
    await assert_serving(pair, refused=0)
    async with _node(tmp_path / "d", "dee") as d:
        assert await join_refused(d, code) == "invitation refused: invitation was already used"
        assert d.endpoint.replicas == {}
    assert not a.replica(space).is_member(d.endpoint_id)
    await assert_serving(pair, refused=1)


async def test_expired_invitation_is_refused(pair: Pair, tmp_path: Path) -> None:
    a, space = pair.a, pair.space
    code = a.invite(space, ttl_ms=1)
    invitation = invitations.decode_code(code)
    pair.clock.advance(3_600_000)  # A's clock: an hour past expiry

    # The inviter checks expiry itself (a joiner need not be honest about its clock): redeem the
    # code by hand, skipping the joiner-side check.
    joiner = pair.new_identity()

    def request(server: bytes, nonce: bytes) -> JoinRequest:
        mac = invitations.join_mac(
            invitation.secret,
            nonce=nonce,
            space=space,
            inviter=server,
            joiner=joiner.endpoint_id,
            invitation=invitation.invitation,
        )
        return JoinRequest(space=space, invitation=invitation.invitation, mac=mac, name="late")

    host, port = pair.address
    (tmp_path / "joiner").mkdir()
    context = client_context(tmp_path / "joiner", joiner)
    with pytest.raises(InvitationError) as raised:
        await dial(
            host, port, identity=joiner, context=context, expected_peer=a.endpoint_id, join=request
        )
    assert str(raised.value) == "invitation refused: invitation has expired"
    assert not a.replica(space).is_member(joiner.endpoint_id)
    await assert_serving(pair, refused=1)

    # A joining node refuses an expired code before it dials (by its own clock).
    async with _node(tmp_path / "d", "dee", clock=pair.clock) as d:
        assert await join_refused(d, code) == "invitation has expired"
    await assert_serving(pair, refused=1)


def _altered(code: str, **changes: Any) -> str:
    return dataclasses.replace(invitations.decode_code(code), **changes).encode()


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


async def test_forged_invitation_is_refused_and_does_not_burn_the_real_one(
    pair: Pair, tmp_path: Path
) -> None:
    a, space = pair.a, pair.space
    code = a.invite(space)
    genuine = invitations.decode_code(code)
    async with _node(tmp_path / "d", "dee") as d:
        forged_secret = _altered(code, secret=_flip(genuine.secret))
        assert await join_refused(d, forged_secret) == (
            "invitation refused: invitation proof does not match (forged or altered code)"
        )
        await assert_serving(pair, refused=1)
        forged_id = _altered(code, invitation=_flip(genuine.invitation))
        assert await join_refused(d, forged_id) == (
            "invitation refused: unknown invitation (it was not issued by this endpoint)"
        )
        await assert_serving(pair, refused=2)
        assert d.endpoint.replicas == {}
        # A typo is caught by the checksum before any connection is made.
        middle = len(code) // 2
        typo = code[:middle] + ("a" if code[middle] != "a" else "b") + code[middle + 1 :]
        assert await join_refused(d, typo) == (
            "invitation code is damaged (checksum mismatch); copy it again"
        )
        await assert_serving(pair, refused=2)
        # The forgeries did not use the genuine invitation up; and a copy of it whose role was
        # raised still grants only the role A issued (A's book decides, not the code).
        assert await d.join(_altered(code, role="manager"), timeout=TIMEOUT) == space
    member = a.replica(space).members().get(d.endpoint_id)
    assert member is not None and member.role == "participant"
    await assert_serving(pair, refused=2)


async def test_joiner_refuses_a_welcome_for_another_space_and_keeps_nothing(
    pair: Pair, tmp_path: Path
) -> None:
    # The inviter named in a code is pinned by its key, but it may still lie: here it answers
    # the join with the genesis of a different space. The joiner must refuse and must not have
    # adopted the space it never asked for.
    inviter = pair.new_identity()
    (tmp_path / "inviter").mkdir()
    context = server_context(tmp_path / "inviter", inviter)
    other = pair.b.create_space("not-invited").space_id
    wanted = pair.space
    foreign_genesis = pair.b.replica(other).genesis.wire()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve_one(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with listeners[0]:
            task_status.started()
            tcp = await listeners[0].accept()
        stream = trio.SSLStream(tcp, context, server_side=True)
        peer = WireClient(stream, inviter)
        try:
            await stream.do_handshake()
            await peer.send_handshake(Challenge(server=inviter.endpoint_id, nonce=bytes(32)))
            proof = await peer.payload()
            assert proof is not None
            assert handshake.decode(proof, Proof).join is not None
            await peer.send_handshake(Welcome(genesis=foreign_genesis))
            await peer.until_closed()
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()

    code = invitations.Invitation(
        space=wanted,
        inviter=inviter.endpoint_id,
        addresses=(f"127.0.0.1:{port}",),
        invitation=bytes(16),
        secret=bytes(16),
        role="participant",
        expires=SYSTEM_CLOCK.now_ms() + 3_600_000,
    ).encode()
    async with trio.open_nursery() as nursery, _node(tmp_path / "d", "dee") as d:
        await nursery.start(serve_one)
        assert await join_refused(d, code) == ("the inviter sent a different space than invited to")
        assert other not in d.endpoint.replicas, "the joiner adopted a space it was not invited to"
        assert d.endpoint.store.spaces() == []
