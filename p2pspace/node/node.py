"""The node facade: what programs do with a running endpoint.

Theory of operation. A :class:`Node` is made and run by :func:`~p2pspace.node.runtime.open_node`
and lives on trio's one thread; the sans-IO :class:`~p2pspace.sync.endpoint.Endpoint` and its
sessions are driven synchronously from it. Programs use the facade -- spaces, records,
invitations, views (:mod:`.views`) and change events (:mod:`.events`) -- while the decisions
live in its collaborators, each given what it needs when the node is made:

=====================  ============================================================
:mod:`.spaces`         the spaces held: processors, tools, which peers are wanted
:mod:`.peer_states`    the (space, peer) sync states, fed from sessions
:mod:`.acks`           what peers acknowledged, kept across restarts
:mod:`.connections`    one connection per peer pair; the reader and writer tasks
:mod:`.admission`      where an incoming connection is admitted: inbound cap, strangers
:mod:`.dialer`         dial targets, backoff, the address book, discovery sightings
:mod:`.joining`        invitations: both sides of a join
:mod:`.changes`        subscriptions and ``wait_until``
=====================  ============================================================

Members. A change of who is in a space (remove, role, leave) is one members delta made here;
whether this endpoint may make it is asked up front, with the rule every replica applies
(:func:`~p2pspace.core.membership.authorize` over the executed members state), so a refusal is a
:class:`~p2pspace.errors.PermissionDeniedError` that says why in words; the core asks again when
the delta is created. A space this endpoint was removed from (or left) stays readable here and
refuses every write the same way. What executed deltas change in a members state is announced
as members events (:func:`~.events.member_events`).

Wall time (deltas, invitations) comes from the injected :class:`~.clock.Clock`; every timer is
trio's clock, so trio's ``MockClock`` drives the node in tests. Streams come from the injected
:class:`~.network.Network` (TCP by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from p2pspace.core import membership
from p2pspace.core.delta import Command, Delta
from p2pspace.core.identity import short_id
from p2pspace.core.membership import Member, MembersView
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.errors import (
    CommandError,
    ConflictError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from p2pspace.node.acks import AckBook
from p2pspace.node.admission import Admission
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.clock import Clock
from p2pspace.node.config import NodeConfig
from p2pspace.node.connections import Connections, PeerConnection
from p2pspace.node.dialer import Dialer, DialTarget
from p2pspace.node.discovery import PeerDiscovery
from p2pspace.node.events import MembersWatch, NodeEvent
from p2pspace.node.home import at_rest_state
from p2pspace.node.joining import Joining
from p2pspace.node.last_seen import LastSeen
from p2pspace.node.network import Address, Network
from p2pspace.node.peer_states import PeerStates
from p2pspace.node.spaces import SpaceBook, space_name
from p2pspace.node.tls import client_context, server_context
from p2pspace.node.views import (
    NodeStatistics,
    NodeStatus,
    PeerView,
    PresenceView,
    SpaceMemberView,
    SpaceView,
    display_names,
    find_member,
    member_views,
    peer_views,
    presence_views,
    removal_of,
    space_view,
    target_view,
)
from p2pspace.sync import invitations
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.syncstate import PeerMachine
from p2pspace.tools.discussion import Discussion
from p2pspace.tools.plugin import ToolPlugin

log = logging.getLogger("p2pspace.node")
MAX_TOOL_COMMANDS = 256  # commands in one delta a tool commits through the API


class Node:
    """A running endpoint. Made by :func:`open_node`; every method runs on the trio thread."""

    def __init__(
        self,
        home: Path,
        endpoint: Endpoint,
        config: NodeConfig,
        *,
        clock: Clock,
        network: Network,
        nursery: trio.Nursery,
        tools: Mapping[str, ToolPlugin],
    ) -> None:
        self.home = home
        self.endpoint = endpoint
        self.config = config
        self.clock = clock
        self.api_url: str | None = None  # set by the local API while it serves
        self.api_token: str | None = None
        self.started = trio.current_time()
        self.changes = ChangeFeed(max_events=config.event_queue)
        self.acks = AckBook(endpoint.store)
        self.last_seen = LastSeen(endpoint.store)
        self.space_book = SpaceBook(
            endpoint,
            changes=self.changes,
            clock=clock,
            acks=self.acks,
            commit=self.commit,
            engines=config.space_engines,
            tools=tools,
        )
        self.peer_states = PeerStates(
            changes=self.changes,
            acks=self.acks,
            has_discussion=lambda s: self.space_book.discussion(s, required=False) is not None,
        )
        self.conns = Connections(
            endpoint,
            config=config,
            changes=self.changes,
            peer_states=self.peer_states,
            spaces=self.space_book,
        )
        client_ctx = client_context(home, endpoint.identity)
        self.dialer = Dialer(
            endpoint,
            home=home,
            config=config,
            network=network,
            context=client_ctx,
            connections=self.conns,
            peer_states=self.peer_states,
            spaces=self.space_book,
            changes=self.changes,
            nursery=nursery,
        )
        self.joining = Joining(
            endpoint,
            config=config,
            clock=clock,
            network=network,
            context=client_ctx,
            connections=self.conns,
            dialer=self.dialer,
            spaces=self.space_book,
            peer_states=self.peer_states,
            changes=self.changes,
            commit=self.commit,
            watch=self._watch_members,
            listening=lambda: self.admission.addresses,
            nursery=nursery,
        )
        self.admission = Admission(
            endpoint,
            config=config,
            network=network,
            context=server_context(home, endpoint.identity),
            connections=self.conns,
            spaces=self.space_book,
            changes=self.changes,
            on_join=self.joining.on_join,
        )
        self._members_watch = MembersWatch(self.endpoint_id)
        for replica in list(endpoint.replicas.values()):
            self._watch_members(replica)

    # -- identity and what the collaborators hold ---------------------------------------------

    @property
    def endpoint_id(self) -> bytes:
        return self.endpoint.endpoint_id

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def interfaces(self) -> list[str]:
        return list(self.config.interfaces)

    @property
    def listen_addresses(self) -> list[Address]:
        return self.admission.addresses

    @property
    def discovery(self) -> PeerDiscovery | None:
        return self.dialer.discovery

    @property
    def connections(self) -> Mapping[bytes, PeerConnection]:
        return self.conns.by_peer

    @property
    def targets(self) -> Mapping[str, DialTarget]:
        return self.dialer.targets

    @property
    def peer_sync(self) -> Mapping[tuple[bytes, bytes], PeerMachine]:
        return self.peer_states.machines

    @property
    def refused(self) -> int:
        """Connections refused or dropped: bad handshakes, hostile or stalled peers, the cap."""
        return self.conns.refused

    # -- change events ------------------------------------------------------------------------

    def subscribe(
        self, max_events: int | None = None
    ) -> contextlib.AbstractContextManager[trio.MemoryReceiveChannel[NodeEvent]]:
        """A bounded stream of change events (:mod:`p2pspace.node.events`); a subscriber that
        falls ``max_events`` (default: ``config.event_queue``) behind is closed -- its channel
        ends -- rather than buffered for."""
        return self.changes.subscribe(max_events)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` is true (checked after every change).

        Raises :class:`trio.TooSlowError` after ``timeout`` seconds.
        """
        await self.changes.wait_until(predicate, timeout)

    # -- spaces and tools ---------------------------------------------------------------------

    def replica(self, space: bytes) -> Replica:
        """The replica of ``space``. Raises NotFoundError for a space not held here."""
        return self.endpoint.replica(space)

    def resolve_space(self, text: str) -> bytes:
        """A space named by hex id, unique id prefix (≥ 4 characters) or unique name.

        Raises :class:`NotFoundError` if none matches, :class:`LocalProtocolError` if several do.
        """
        return self.space_book.resolve(text)

    def create_space(
        self,
        name: str,
        *,
        engines: Mapping[str, str] | None = None,
        allow_duplicate: bool = False,
    ) -> Replica:
        """A new space made here (``engines``: default ``config.space_engines``). Raises
        :class:`ConflictError` if a space here has ``name`` already, unless
        ``allow_duplicate``."""
        replica = self.space_book.create(name, engines=engines, allow_duplicate=allow_duplicate)
        self._watch_members(replica)
        self.conns.kick()
        return replica

    def spaces(self) -> list[SpaceView]:
        return [self.space_info(space) for space in sorted(self.endpoint.replicas)]

    def space_info(self, space: bytes) -> SpaceView:
        """One space's view. Raises NotFoundError for a space not held here."""
        view = space_view(
            self.replica(space),
            me=self.endpoint_id,
            processor=self.space_book.processor_state(space),
            peer_states=self.peer_states,
            connected=self.conns.by_peer,
        )
        return dataclasses.replace(view, tools=tuple(self.space_book.tool_names(space)))

    def presence(self, space: bytes) -> list[PresenceView]:
        """Members of ``space`` and whether each is online now (connected, or discovered)."""
        discovery = self.dialer.discovery
        return presence_views(
            self.replica(space),
            me=self.endpoint_id,
            peer_states=self.peer_states,
            connected=self.conns.by_peer,
            seen=discovery.peers if discovery is not None else {},
        )

    @property
    def tools(self) -> Mapping[str, ToolPlugin]:
        """The tools this node loaded, by name."""
        return self.space_book.tools

    def engines_for(self, tool: str | None) -> dict[str, str]:
        """The engine instances of a new space holding the installed tool ``tool`` (None: the
        node's default; ``"none"``: the record database alone). LocalProtocolError for a tool
        that is not installed."""
        return self.space_book.engines_for(tool)

    def commit_for_tool(self, space: bytes, tool: str, commands: Sequence[Command]) -> Delta:
        """One delta of ``commands`` written for the tool ``tool`` (a tool running outside this
        process, through the API): every command must go to an engine instance the tool
        declared, so a tool cannot write another tool's records, nor the members.

        Raises :class:`NotFoundError` for a tool not installed, :class:`LocalProtocolError`
        for a space without the tool, no commands, too many, or one addressed to an instance
        the tool did not declare, and what :meth:`commit` raises (a command its engine refuses:
        :class:`LocalProtocolError`).
        """
        plugin = self.tools.get(tool)
        if plugin is None:
            raise NotFoundError(f"no tool named {tool!r} is installed")
        if tool not in self.space_book.tool_names(space):
            raise LocalProtocolError(f"this space has no {plugin.title.lower()} tool")
        if not 0 < len(commands) <= MAX_TOOL_COMMANDS:
            raise LocalProtocolError(f"a change is 1 to {MAX_TOOL_COMMANDS} commands")
        for command in commands:
            if command.engine not in plugin.engines:
                raise LocalProtocolError(
                    f"the tool {tool!r} writes only to {', '.join(sorted(plugin.engines))}, "
                    f"not to {command.engine!r}"
                )
        return self.commit(space, commands)

    def tool(self, space: bytes, name: str) -> Any:
        """The tool ``name`` opened on ``space``. Raises NotFoundError for a tool not
        installed, LocalProtocolError for a space that does not hold it."""
        return self.space_book.tool(space, name)

    def discussion(self, space: bytes, *, required: bool = True) -> Discussion | None:
        """The space's discussion tool (None, or LocalProtocolError if ``required``, when the
        space has none)."""
        return self.space_book.discussion(space, required=required)

    def acked(self, space: bytes) -> dict[bytes, dict[bytes, int]]:
        """The latest vector each current member acknowledged for ``space`` (kept across
        restarts); a removed member's acks no longer count."""
        acked = self.acks.acked(space)
        replica = self.endpoint.replicas.get(space)
        if replica is None:
            return acked
        return {peer: vector for peer, vector in acked.items() if replica.is_member(peer)}

    # -- records ------------------------------------------------------------------------------

    def make_due_checkpoints(self) -> list[Delta]:
        """Close the open window of every space where this endpoint is the checkpointer and
        ``config.checkpoints`` says it is due (run by the ticker). A failure is logged and
        tried again on the next round."""
        made = []
        now = self.clock.now_ms()
        policy = self.config.checkpoints
        for space, replica in list(self.endpoint.replicas.items()):
            try:
                if replica.checkpoint_due(policy, now=now, acked=self.acked(space)):
                    made.append(replica.create_checkpoint(time=now))
            except (LocalProtocolError, PermissionDeniedError, StorageError) as exc:
                # Tried again every round: kept out of INFO (a failing store shows elsewhere).
                log.debug("space %r: no checkpoint this round: %s", replica.name, exc)
        if made:
            self.conns.kick()
        return made

    def compact_due_spaces(self) -> dict[bytes, int]:
        """Purge every space whose last checkpoint closed deltas no other member is known to
        lack (:meth:`Replica.compaction_due`; run by the ticker unless ``config.auto_compact``
        is off); returns how many deltas each compacted space deleted. The freed pages are
        reused by the deltas that follow (no VACUUM here: it would rewrite the whole file while
        the node waits). A failure is logged and tried again on the next round."""
        done: dict[bytes, int] = {}
        if not self.config.auto_compact:
            return done
        for space, replica in list(self.endpoint.replicas.items()):
            try:
                if not replica.compaction_due(self.acked(space)):
                    continue
                done[space] = replica.compact()
            except (LocalProtocolError, StorageError) as exc:
                log.debug("space %r: no compaction this round: %s", replica.name, exc)
                continue
            log.info("space %r: purged %d delta(s) of history", replica.name, done[space])
        return done

    def commit(self, space: bytes, commands: Sequence[Any]) -> Delta:
        """Create one delta of ``commands`` here and push it to peers.

        Raises :class:`LocalProtocolError` if this endpoint may not write to the space yet,
        :class:`PermissionDeniedError` (saying why) if its role does not allow ``commands`` --
        a guest, a participant managing members, the last manager leaving, an endpoint that
        was removed -- what the engines raise for a command they refuse, and
        :class:`StorageError` (the space's processor then shows ``error``).
        """
        replica = self.space_book.writable(space)
        check_allowed(replica, self.endpoint_id, commands)
        try:
            delta = self.endpoint.create(space, commands, time=self.clock.now_ms())
        except StorageError as exc:
            self.space_book.failed(space, str(exc))
            raise
        self.conns.kick()
        return delta

    def rdb_set(
        self, space: bytes, table: str, record: str, fields: dict[str, Any], *, instance: str = "db"
    ) -> Delta:
        """Create the record or update its fields (one delta: create-if-absent, then set).

        Raises :class:`ConflictError` for a record that was deleted: the engine keeps its
        tombstone, and the set would store nothing.
        """
        if not fields:
            raise LocalProtocolError("give at least one FIELD=VALUE")
        if rdb.view(self.replica(space), instance).deleted(table, record):
            raise ConflictError(
                f"record {table}/{record} was deleted; a deleted record cannot be set again "
                "(use another record id)"
            )
        return self.commit(
            space,
            [
                rdb.create(table, record, fields, instance=instance),
                rdb.set_fields(table, record, fields, instance=instance),
            ],
        )

    def rdb_delete(self, space: bytes, table: str, record: str, *, instance: str = "db") -> Delta:
        """Delete a record. Raises :class:`NotFoundError` if there is none and
        :class:`ConflictError` if it was deleted already (the delete would change nothing)."""
        view = rdb.view(self.replica(space), instance)
        if view.deleted(table, record):
            raise ConflictError(f"record {table}/{record} is already deleted")
        if view.get(table, record) is None:
            raise NotFoundError(f"no record {table}/{record} in this space")
        return self.commit(space, [rdb.delete(table, record, instance=instance)])

    def rdb_get(
        self, space: bytes, table: str, record: str | None = None, *, instance: str = "db"
    ) -> dict[str, dict[str, Any]]:
        view = rdb.view(self.replica(space), instance)
        if record is not None:
            fields = view.get(table, record)
            return {} if fields is None else {record: fields}
        return dict(view.records(table))

    # -- members ------------------------------------------------------------------------------

    def members(self, space: bytes) -> list[SpaceMemberView]:
        """Everyone ever admitted to ``space`` -- current members first, then removed ones --
        with display names and what this node knows of their presence. Raises NotFoundError
        for a space not held here."""
        discovery = self.dialer.discovery
        return member_views(
            self.replica(space),
            me=self.endpoint_id,
            peer_states=self.peer_states,
            connected=self.conns.by_peer,
            seen=discovery.peers if discovery is not None else {},
            last_seen=self.last_seen.get,
        )

    def resolve_member(self, space: bytes, member: str | bytes) -> Member:
        """The member record (current or removed) that ``member`` names: an endpoint id as
        bytes, or a text :func:`~p2pspace.node.views.find_member` understands (an id in any
        printed form or a prefix of one, or a unique display name).

        Raises :class:`NotFoundError` for no such member, :class:`ConflictError` if the text
        names several.
        """
        replica = self.replica(space)
        return find_member(list(replica.members().everyone()), member, space=space_name(replica))

    def remove_member(self, space: bytes, member: str | bytes) -> Delta:
        """Remove a current member (a manager's right; removing oneself is leaving).

        Raises what :meth:`resolve_member` raises, :class:`ConflictError` if the member was
        already removed, and what :meth:`commit` raises -- :class:`PermissionDeniedError` if
        this endpoint is not a manager or the member is the last manager.
        """
        replica = self.space_book.writable(space)
        target = self.resolve_member(space, member)
        if not target.current:
            raise ConflictError(f"{self._who_is(replica, target.id)} no longer a member")
        return self.commit(space, [membership.remove_command(target.id)])

    def set_role(self, space: bytes, member: str | bytes, role: str) -> Delta:
        """Give a current member ``role`` (one of :data:`~p2pspace.core.membership.ROLES`;
        a manager's right).

        Raises :class:`LocalProtocolError` for an unknown role, :class:`ConflictError` if the
        member is removed or has that role already, and what :meth:`remove_member` raises.
        """
        if role not in membership.ROLES:
            raise LocalProtocolError(
                f"a role is one of {', '.join(membership.ROLES)}, not {role!r}"
            )
        replica = self.space_book.writable(space)
        target = self.resolve_member(space, member)
        who = self._who_is(replica, target.id)
        if not target.current:
            raise ConflictError(f"{who} no longer a member")
        if target.role == role:
            raise ConflictError(f"{who} a {role} already")
        return self.commit(space, [membership.role_command(target.id, role)])

    def leave_space(self, space: bytes) -> Delta:
        """Leave ``space``: this endpoint removes itself; the space stays here, read-only.

        Raises :class:`ConflictError` if this endpoint is no longer a member,
        :class:`PermissionDeniedError` if it is the last manager.
        """
        replica = self.space_book.writable(space)
        if replica.members().role_of(self.endpoint_id) is None:
            raise ConflictError(
                read_only_reason(replica.members(), self.endpoint_id, space_name(replica))
            )
        return self.commit(space, [membership.remove_command(self.endpoint_id)])

    def rename_space(self, space: bytes, name: str) -> Delta:
        """Give ``space`` a new name, for every member (a manager's right).

        Raises :class:`LocalProtocolError` for a name the members engine refuses (empty, or
        longer than its limit), :class:`ConflictError` if it is the space's name already or
        another space on this node has it, and what :meth:`commit` raises.
        """
        replica = self.space_book.writable(space)
        name = name.strip()
        if not name or len(name) > membership.MAX_TEXT:
            raise LocalProtocolError(
                f"a space's name is 1 to {membership.MAX_TEXT} characters, not {len(name)}"
            )
        if name == space_name(replica):
            raise ConflictError(f"space {name!r} has that name already")
        if [s for s in self.space_book.named(name) if s != space]:
            raise ConflictError(f"another space on this node is named {name!r}")
        return self.commit(space, [membership.rename_command(name)])

    def compact_space(self, space: bytes, *, keep_history: bool | None = None) -> dict[str, Any]:
        """Purge ``space`` here (DESIGN §12): delete the closed deltas this replica no longer
        needs and give the room back to the file system. ``keep_history`` True keeps the whole
        history from now on (an audit trail) and compacts nothing; False lets it compact again.

        Raises :class:`ConflictError` if the space keeps its history or has no closed block.
        """
        replica = self.replica(space)
        if keep_history is not None:
            replica.set_keep_history(keep_history)
        deleted = 0
        if not replica.keeps_history:
            try:
                deleted = replica.compact(vacuum=True)
            except ConflictError:
                raise
            except LocalProtocolError as exc:
                raise ConflictError(f"{space_name(replica)}: {exc}") from None
        horizon = replica.horizon()
        return {
            "id": space.hex(),
            "name": space_name(replica),
            "deleted": deleted,
            "keep_history": replica.keeps_history,
            "checkpoint": horizon.number,
        }

    def _who_is(self, replica: Replica, member: bytes) -> str:
        if member == self.endpoint_id:
            return "you are"
        return f"{_display(replica.members(), member)} is"

    def _watch_members(self, replica: Replica) -> None:
        """Announce what deltas executed in ``replica`` change in its members (once a
        replica)."""
        space = replica.space_id
        if not self._members_watch.start(space, replica.members()):
            return

        def on_executed(_replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
            deltas = [d for d, _w in executed]
            for event in self._members_watch.executed(space, deltas, replica.members()):
                self.changes.announce(event)

        replica.listeners.append(on_executed)

    # -- invitations --------------------------------------------------------------------------

    def advertised_addresses(self) -> list[str]:
        """``host:port`` texts peers can dial this node at."""
        return self.joining.advertised_addresses()

    def invite(
        self, space: bytes, *, role: str = "participant", ttl_ms: int = invitations.DEFAULT_TTL_MS
    ) -> str:
        """A one-time invitation code for ``space``, admitting its redeemer with ``role``.
        Only a current manager may invite (else :class:`PermissionDeniedError`). Needs a
        listening node (else LocalProtocolError, as for a space this endpoint may not write
        to)."""
        return self.joining.invite(space, role=role, ttl_ms=ttl_ms)

    async def join(
        self,
        code: str,
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """Redeem an invitation code; the space id once a member and caught up. ``timeout``
        defaults to ``config.join_timeout``. Raises :class:`InvitationError` (refused, expired,
        malformed), :class:`TransportError` (inviter unreachable) or :class:`trio.TooSlowError`.
        """
        wait = self.config.join_timeout if timeout is None else timeout
        return await self.joining.join(code, timeout=wait, progress=progress)

    def catch_up_progress(self, space: bytes, peer: bytes) -> tuple[int, int]:
        """``(deltas we have, deltas the peer said it has)`` for a space."""
        return self.joining.catch_up_progress(space, peer)

    # -- peers and status ---------------------------------------------------------------------

    def add_peer(self, host: str, port: int) -> None:
        """Dial ``host:port`` now and whenever the connection is lost."""
        self.dialer.add_peer(host, port)

    def peers(self) -> list[PeerView]:
        discovery = self.dialer.discovery
        return peer_views(
            me=self.endpoint_id,
            replicas=self.endpoint.replicas.values(),
            connections=self.conns.by_peer,
            seen=discovery.peers if discovery is not None else {},
            peer_states=self.peer_states,
        )

    def status(self) -> NodeStatus:
        """Everything the ``status`` command and the API show."""
        return NodeStatus(
            endpoint=self.endpoint_id,
            name=self.name,
            listen=tuple(self.listen_addresses),
            interfaces=self.config.interfaces,
            api=self.api_url,
            uptime_s=round(trio.current_time() - self.started, 1),
            spaces=tuple(self.spaces()),
            peers=tuple(self.peers()),
            targets=tuple(target_view(t) for t in self.dialer.targets.values()),
            refused=self.refused,
            at_rest=at_rest_state(self.home),
            tools={
                name: {"title": plugin.title, "page": bool(plugin.page)}
                for name, plugin in self.tools.items()
            },
        )

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            connections=len(self.conns.by_peer),
            targets=len(self.dialer.targets),
            subscribers=self.changes.subscriber_count,
            refused=self.refused,
        )


# -- refusals in words -------------------------------------------------------------------------


def check_allowed(replica: Replica, me: bytes, commands: Sequence[Any]) -> None:
    """Raise :class:`PermissionDeniedError`, saying why in words, unless ``me`` may create a
    delta of ``commands`` in the executed members state of ``replica`` -- the rule of
    :func:`~p2pspace.core.membership.authorize`, asked before the core asks it again.

    Raises :class:`LocalProtocolError` for a malformed members command.
    """
    checked: list[Command] = []
    for command in commands:
        if isinstance(command, Command) and command.engine == membership.INSTANCE:
            try:
                membership.validate_command(command)
            except CommandError as exc:
                raise LocalProtocolError(f"invalid command: {exc}") from None
        checked.append(command)
    view = replica.members()
    reason = membership.authorize(me, checked, view)
    if reason is None:
        return
    name = space_name(replica)
    if reason == membership.NOT_A_MEMBER:
        raise PermissionDeniedError(read_only_reason(view, me, name))
    if reason == membership.LAST_MANAGER:
        raise PermissionDeniedError(_last_manager(view, me, checked, name))
    role = view.role_of(me)
    managing = [c for c in checked if c.engine == membership.INSTANCE]
    if not managing:
        raise PermissionDeniedError(
            f"a {role} cannot make changes in space {name!r}; a manager can give you the "
            "participant role"
        )
    if all(c.name == "rename" for c in managing):
        raise PermissionDeniedError(f"only a manager can rename space {name!r} (you are a {role})")
    raise PermissionDeniedError(
        f"only a manager can add or remove members or change roles in space {name!r} "
        f"(you are a {role})"
    )


def read_only_reason(view: MembersView, me: bytes, space: str) -> str:
    """Why a space this endpoint is no longer a member of refuses writes."""
    removal = removal_of(view, me)
    if removal is None:
        return f"this endpoint is not a member of space {space!r}"
    remover, remover_name = removal
    how = "you left it" if remover == me else f"you were removed by {remover_name}"
    return f"space {space!r} is read-only here: {how}"


def _last_manager(view: MembersView, me: bytes, commands: Sequence[Command], space: str) -> str:
    managers = view.managers()
    targets = [
        c.args["id"]
        for c in commands
        if c.engine == membership.INSTANCE
        and c.name in ("remove", "role")
        and c.args["id"] in managers
    ]
    who = "you are" if not targets or me in targets else f"{_display(view, targets[0])} is"
    return f"{who} the last manager of space {space!r}: make another member a manager first"


def _display(view: MembersView, member: bytes) -> str:
    return display_names(view.everyone()).get(member) or short_id(member)


__all__ = ["Node", "check_allowed", "read_only_reason"]
