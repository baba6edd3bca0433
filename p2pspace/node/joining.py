"""Invitations: issuing and redeeming them on the inviter's side, joining on the joiner's.

Theory of operation. An inviter issues a one-time code (:meth:`Joining.invite`): the space, the
inviter's id and listening addresses, a secret and an expiry; the store keeps what is needed to
check it. A joiner redeems it (:meth:`Joining.join`): it dials the inviter pinned to the id in
the code and proves the secret inside the handshake (a MAC over the connection's nonce, so a
captured proof cannot be replayed). The inviter checks it (:meth:`Joining.on_join`, called by
the handshake of an accepted connection): known, unused, unexpired -- by the inviter's own
clock, a joiner need not be honest about its clock -- and then adds the joiner as a member with
the role the inviter's book says (not the code) and answers with the space's genesis. A retry
after a crash finds the invitation redeemed by the same joiner and is answered again without
re-adding it.

Only a manager admits members, so only a current manager issues invitations, and the inviter
checks it is still one when a code is redeemed: an inviter demoted or removed since refuses
the join ("ask a manager for a new invitation") and the code stays unused. A removed member
comes back only with a new invitation: redeeming again the code that admitted it the first
time is refused.

The joiner checks the genesis names the invited space before it stores anything, adopts the
space with the inviter as its *sponsor* (the inviter is trusted to be a member until the
joiner's replica knows better), keeps the join's connection as the inviter's connection and
waits until it is a member and the inviter's link is live, announcing
:class:`~p2pspace.node.events.JoinProgress` as the catch-up goes.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Sequence

import trio

from p2pspace.core.delta import decode_delta
from p2pspace.core.genesis import validate_genesis
from p2pspace.core.identity import short_id
from p2pspace.core.replica import Replica
from p2pspace.engines import members as members_engine
from p2pspace.errors import (
    InvitationError,
    LocalProtocolError,
    P2PSpaceError,
    PermissionDeniedError,
    TransportError,
)
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.clock import Clock
from p2pspace.node.config import NodeConfig
from p2pspace.node.connections import Connections
from p2pspace.node.dialer import Dialer, peer_key
from p2pspace.node.discovery import local_addresses
from p2pspace.node.events import JoinProgress
from p2pspace.node.network import Address, Network
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import Commit, SpaceBook, space_name
from p2pspace.node.transport import Connection, dial
from p2pspace.sync import invitations
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.handshake import JoinRequest
from p2pspace.sync.syncstate import PeerState

log = logging.getLogger("p2pspace.node")
ANY_HOST = ("0.0.0.0", "::", "")


class Joining:
    """Both sides of an invitation."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        config: NodeConfig,
        clock: Clock,
        network: Network,
        context: ssl.SSLContext,
        connections: Connections,
        dialer: Dialer,
        spaces: SpaceBook,
        peer_states: PeerStates,
        changes: ChangeFeed,
        commit: Commit,
        watch: Callable[[Replica], None],
        listening: Callable[[], Sequence[Address]],
        nursery: trio.Nursery,
    ) -> None:
        self._endpoint = endpoint
        self._config = config
        self._clock = clock
        self._network = network
        self._context = context
        self._connections = connections
        self._dialer = dialer
        self._spaces = spaces
        self._peer_states = peer_states
        self._changes = changes
        self._commit = commit
        self._watch = watch
        self._listening = listening
        self._nursery = nursery

    # -- the inviter's side ---------------------------------------------------------------------

    def advertised_addresses(self) -> list[str]:
        """``host:port`` texts peers can dial this node at (for invitation codes)."""
        out: list[str] = []
        for host, port in self._listening():
            if host in ANY_HOST:
                hosts = list(self._config.interfaces) or local_addresses()
            else:
                hosts = [host]
            out += [invitations.join_address(h, port) for h in hosts]
        return list(dict.fromkeys(out))[: invitations.MAX_ADDRESSES]

    def invite(self, space: bytes, *, role: str, ttl_ms: int) -> str:
        """A one-time invitation code for ``space``.

        Raises :class:`PermissionDeniedError` unless this endpoint is a current manager of the
        space, :class:`LocalProtocolError` if it is not (yet) a member or the node does not
        listen (a code must say where to reach it), or for a role that is not one of
        :data:`~p2pspace.core.membership.ROLES`.
        """
        replica = self._spaces.writable(space)
        refusal = self._not_a_manager(replica)
        if refusal is not None:
            raise PermissionDeniedError(refusal)
        addresses = tuple(self.advertised_addresses())
        if not addresses:
            raise LocalProtocolError("this node does not listen; it cannot take invitations")
        invitation = invitations.issue(
            self._endpoint.store,
            space=space,
            inviter=self._endpoint.endpoint_id,
            addresses=addresses,
            role=role,
            now=self._clock.now_ms(),
            ttl_ms=ttl_ms,
            random=os.urandom(32),
            space_name=space_name(replica),
        )
        return invitation.encode()

    def on_join(self, peer: bytes, key: bytes, request: JoinRequest, nonce: bytes) -> bytes:
        """Admit a joiner that proved an invitation's secret; the genesis to send it.

        Raises :class:`InvitationError` (the joiner's code is unknown, used, expired or forged:
        the handshake refuses it).
        """
        replica = self._endpoint.replicas.get(request.space)
        if replica is None or not replica.can_create():
            # The same answer as for any unknown invitation: a stranger must not learn from the
            # refusal whether this endpoint belongs to the space.
            raise InvitationError("unknown invitation (it was not issued by this endpoint)")
        store = self._endpoint.store
        joiner = replica.members().get(peer)
        # Raising inside the transaction rolls the redemption back: a refused code stays unused.
        with store.transaction():
            row = store.invitation(request.invitation)
            retry = row is not None and row[4] == peer
            role = invitations.redeem(
                store,
                space=request.space,
                invitation=request.invitation,
                mac=request.mac,
                nonce=nonce,
                inviter=self._endpoint.endpoint_id,
                joiner=peer,
                now=self._clock.now_ms(),
            )
            refusal = self._not_a_manager(replica)
            if refusal is not None:
                raise InvitationError(f"{refusal}; ask a manager for a new invitation")
            if retry and joiner is not None and not joiner.current:
                raise InvitationError(
                    "this invitation was used already, and its member was removed since; "
                    "ask a manager for a new invitation"
                )
        if joiner is None or not joiner.current:  # a retry after a crash does not re-add it
            command = members_engine.add_command(
                member_id=peer, key=key, name=request.name, role=role
            )
            try:
                self._commit(request.space, [command])
            except PermissionDeniedError as exc:
                # The core refused what the check above allowed: the space's members state
                # moved in between. The joiner is told, not left waiting for a grant.
                raise InvitationError(f"the inviter cannot admit members now: {exc}") from None
            who = f"{request.name} ({short_id(peer)})" if request.name else short_id(peer)
            log.info("admitted %s to %r as %s", who, space_name(replica), role)
        return replica.genesis.wire()

    def _not_a_manager(self, replica: Replica) -> str | None:
        """Why this endpoint may not admit members to ``replica``'s space, or None."""
        role = replica.members().role_of(self._endpoint.endpoint_id)
        if role == "manager":
            return None
        name = space_name(replica)
        if role is None:
            return f"this endpoint is no longer a member of space {name!r}"
        return f"only a manager can invite to space {name!r} (this endpoint is a {role})"

    # -- the joiner's side ----------------------------------------------------------------------

    async def join(
        self, code: str, *, timeout: float, progress: Callable[[int, int], None] | None = None
    ) -> bytes:
        """Redeem an invitation code: connect to the inviter, prove the secret, catch up.

        Returns the space id once this endpoint is a member and has caught up with the inviter.
        Raises :class:`InvitationError` (refused, expired, malformed: the code or the inviter),
        :class:`TransportError` (inviter unreachable) or :class:`trio.TooSlowError` after
        ``timeout`` seconds.
        """
        invitation = invitations.decode_code(code)
        if self._clock.now_ms() > invitation.expires:
            raise InvitationError("invitation has expired")
        me = self._endpoint.endpoint_id
        if invitation.inviter == me:
            raise InvitationError("this invitation was issued by this endpoint")
        space, inviter = invitation.space, invitation.inviter
        existing = self._endpoint.replicas.get(space)
        if existing is not None and _admitted(existing, me):
            return space  # a member already; a removed one comes back through the inviter
        addresses = [invitations.split_address(a) for a in invitation.addresses]
        seen = self._dialer.sighting(inviter)
        if seen is not None:
            addresses = list(seen.addresses) + addresses
        if not addresses:
            raise InvitationError("the invitation names no address for the inviter")

        def make_request(server: bytes, nonce: bytes) -> JoinRequest:
            mac = invitations.join_mac(
                invitation.secret,
                nonce=nonce,
                space=space,
                inviter=server,
                joiner=me,
                invitation=invitation.invitation,
            )
            return JoinRequest(
                space=space, invitation=invitation.invitation, mac=mac, name=self._endpoint.name
            )

        with trio.fail_after(timeout):
            conn = await self._reach_inviter(addresses, inviter, make_request)
            self._dialer.remember(conn.peer, conn.address)
            try:
                # Check the genesis names the invited space before storing anything.
                sent_space, _engines = validate_genesis(decode_delta(conn.genesis))
                if sent_space != space:
                    raise InvitationError("the inviter sent a different space than invited to")
                replica = self._endpoint.join_space(conn.genesis, sponsors=[inviter])
            except P2PSpaceError:
                await conn.aclose()
                raise
            self._spaces.added(replica)
            self._watch(replica)
            registered = self._connections.register(conn)
            if registered is None:
                await conn.aclose()
            else:
                self._nursery.start_soon(self._connections.serve, registered)
            self._dialer.ensure_target(peer_key(inviter), list(addresses), inviter)
            await self._changes.wait_until(self._caught_up(space, inviter, progress))
        return space

    async def _reach_inviter(
        self,
        addresses: list[Address],
        inviter: bytes,
        make_request: Callable[[bytes, bytes], JoinRequest],
    ) -> Connection:
        errors: list[str] = []
        for host, port in addresses:
            try:
                return await dial(
                    host,
                    port,
                    identity=self._endpoint.identity,
                    context=self._context,
                    expected_peer=inviter,
                    join=make_request,
                    network=self._network,
                )
            except InvitationError:
                raise
            except P2PSpaceError as exc:
                errors.append(str(exc))
        raise TransportError("cannot reach the inviter: " + "; ".join(errors or ["no address"]))

    def _caught_up(
        self, space: bytes, inviter: bytes, progress: Callable[[int, int], None] | None
    ) -> Callable[[], bool]:
        replica = self._endpoint.replica(space)
        last_shown = -float("inf")
        gone_since: float | None = None  # when the inviter's connection was last seen missing

        def done() -> bool:
            nonlocal last_shown, gone_since
            have, total = self.catch_up_progress(space, inviter)
            if progress is not None:
                progress(have, total)
            now = trio.current_time()
            if total > have and now - last_shown >= self._config.progress_every:
                # For API clients (the command line talking to a running node) to show.
                last_shown = now
                self._changes.announce(JoinProgress(space=space, have=have, total=total))
            live = self._peer_states.state(space, inviter) is PeerState.LIVE
            admitted = _admitted(replica, self._endpoint.endpoint_id)
            if admitted and live:
                return True
            if inviter in self._connections.by_peer:
                gone_since = None
                return False
            # The sponsor went away mid-join: a moment's break (a duplicate connection swapped,
            # a network blip; the dialler redials) is waited out, a longer one is said at once
            # rather than after the whole timeout.
            gone_since = now if gone_since is None else gone_since
            if now - gone_since >= self._config.sponsor_grace:
                raise TransportError(self._sponsor_gone(replica, inviter, have, total, admitted))
            return False

        return done

    def _sponsor_gone(
        self, replica: Replica, inviter: bytes, have: int, total: int, admitted: bool
    ) -> str:
        record = replica.members().get(inviter)
        who = record.name if record is not None and record.name else short_id(inviter)
        name = space_name(replica)
        if not admitted:
            return (
                f"the connection to {who} broke before your membership of {name!r} reached "
                f"you; run the same join again once {who}'s node is back (the code stays yours "
                "until it expires)"
            )
        return (
            f"the connection to {who} broke after {have:,} of {total:,} changes of {name!r}; "
            "you are a member now, and the rest arrives from any member while your node runs "
            "(p2pspace run)"
        )

    def catch_up_progress(self, space: bytes, peer: bytes) -> tuple[int, int]:
        """``(deltas we have, deltas the peer said it has)`` for a space, from its acks."""
        have = sum(self._endpoint.replica(space).vector.values())
        connection = self._connections.by_peer.get(peer)
        link = connection.session.link(space) if connection is not None else None
        total = link.peer_total if link is not None else have
        return have, max(have, total)


def _admitted(replica: Replica, me: bytes) -> bool:
    """Whether ``me`` is a current member of ``replica``'s space whose admission executed here."""
    return replica.can_create() and replica.members().role_of(me) is not None


__all__ = ["Joining"]
