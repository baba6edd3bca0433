"""The spaces a node holds: their processors, their tools, and whom they make us talk to.

Theory of operation. Every replica the endpoint holds is *watched* once: its processor machine
(:class:`~p2pspace.sync.syncstate.ProcessorMachine`) moves to ``ready``, and a listener turns
what it executes into :class:`~p2pspace.node.events.DeltasExecuted` events (plus the discussion
tool's post events, for spaces that hold it). A store failure while writing a space moves its
processor to ``error`` (:meth:`SpaceBook.failed`).

Membership decides the network: a peer is *wanted* -- dialled, kept, told about -- only while it
shares a space with this endpoint or sponsors a join of ours still under way
(:meth:`SpaceBook.wants`); anyone else is a stranger. "Shares" means the executed members state
lists it as a current member, and does not show this endpoint removed: once removed, this
endpoint stops dialling for that space, and a peer removed from our spaces stops being dialled.
The discussion's "delivered to k of n" counts current members only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from p2pspace.core.delta import Delta
from p2pspace.core.replica import Replica
from p2pspace.errors import ConflictError, LocalProtocolError, NotFoundError, P2PSpaceError
from p2pspace.node.acks import AckBook
from p2pspace.node.changes import ChangeFeed
from p2pspace.node.clock import Clock
from p2pspace.node.events import DeltasExecuted, ProcessorChanged, SpaceAdded, ToolChanged
from p2pspace.sync.endpoint import Endpoint, was_removed
from p2pspace.sync.syncstate import ProcessorInput, ProcessorMachine, ProcessorState
from p2pspace.tools.discussion import Discussion
from p2pspace.tools.plugin import ToolContext, ToolPlugin

Commit = Callable[[bytes, Sequence[Any]], Delta]
DISCUSSION = "discussion"  # the tool the node's own views (post statuses) know about
NO_TOOL = "none"  # ``space create --tool none``: the record database alone

log = logging.getLogger("p2pspace.node")


def space_name(replica: Replica) -> str:
    """The space's display name ("" before its genesis names one)."""
    info = replica.members().space()
    return info.name if info is not None else ""


class SpaceBook:
    """The endpoint's spaces as the node sees them. Every method runs on the trio thread."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        changes: ChangeFeed,
        clock: Clock,
        acks: AckBook,
        commit: Commit,
        engines: Mapping[str, str],
        tools: Mapping[str, ToolPlugin],
    ) -> None:
        self.endpoint = endpoint
        self.processors: dict[bytes, ProcessorMachine] = {}
        self._changes = changes
        self._clock = clock
        self._acks = acks
        self._commit = commit
        self._engines = engines
        self.tools = dict(tools)
        self._opened: dict[tuple[bytes, str], Any] = {}
        self._failed: set[tuple[bytes, str]] = set()  # tools that failed here (logged once)
        for replica in list(endpoint.replicas.values()):
            self.watch(replica)

    # -- watching -----------------------------------------------------------------------------

    def watch(self, replica: Replica) -> None:
        """Start reporting what ``replica`` executes (once per replica)."""
        machine = self.processors.setdefault(replica.space_id, ProcessorMachine())
        if machine.state is ProcessorState.LOADING:
            machine.feed(ProcessorInput.LOADED)
        space = replica.space_id

        def on_executed(_replica: Replica, executed: Sequence[tuple[Delta, bytes]]) -> None:
            creators = frozenset(d.creator for d, _w in executed)
            self._changes.announce(
                DeltasExecuted(space=space, count=len(executed), creators=creators)
            )
            deltas = [d for d, _w in executed]
            for name, tool in self.tools_of(space).items():
                executed_by = getattr(tool, "executed", None)
                if executed_by is None:
                    continue
                try:
                    changes = list(executed_by(deltas))
                except Exception:
                    # A tool's bug: its events are lost, the other tools' and the node's not.
                    if (space, name) not in self._failed:
                        log.exception("the tool %r failed on executed deltas", name)
                    self._failed.add((space, name))
                    continue
                for change in changes:
                    self._changes.announce(ToolChanged(space=space, tool=name, change=change))

        replica.listeners.append(on_executed)

    def added(self, replica: Replica) -> None:
        """A space created or joined here: watch it and announce it."""
        self.watch(replica)
        self._changes.announce(SpaceAdded(space=replica.space_id, name=space_name(replica)))

    def failed(self, space: bytes, error: str) -> None:
        """The store failed while writing ``space``: its processor moves to ``error``."""
        machine = self.processors.setdefault(space, ProcessorMachine())
        machine.feed(ProcessorInput.FAILED, error)
        self._changes.announce(ProcessorChanged(space=space, state=machine.state))

    def processor_state(self, space: bytes) -> str:
        machine = self.processors.get(space)
        return machine.state.value if machine is not None else ProcessorState.LOADING.value

    # -- finding and making -------------------------------------------------------------------

    def resolve(self, text: str) -> bytes:
        """A space named by hex id, unique id prefix (at least 4 characters) or unique name.

        Raises :class:`NotFoundError` if none matches, :class:`LocalProtocolError` if several do.
        """
        text = text.strip()
        lowered = text.lower()
        replicas = self.endpoint.replicas
        by_id = [s for s in replicas if s.hex() == lowered]
        if by_id:
            return by_id[0]
        matches = [s for s, r in replicas.items() if space_name(r) == text]
        if len(lowered) >= 4:
            matches += [s for s in replicas if s.hex().startswith(lowered)]
        matches = sorted(set(matches))
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(f"no space named {text!r} here (see: p2pspace space list)")
        which = ", ".join(f"{space_name(replicas[s])!r} ({s.hex()[:8]})" for s in matches)
        raise LocalProtocolError(
            f"{text!r} names {len(matches)} spaces here: {which}; name one by its id or an id "
            "prefix"
        )

    def named(self, name: str) -> list[bytes]:
        """The spaces here named ``name``, in id order."""
        return sorted(s for s, r in self.endpoint.replicas.items() if space_name(r) == name)

    def create(
        self,
        name: str,
        *,
        engines: Mapping[str, str] | None = None,
        allow_duplicate: bool = False,
    ) -> Replica:
        """A new space made here, holding ``engines`` (default: the node's ``space_engines``).

        Raises :class:`ConflictError` if a space here already has ``name`` (every command that
        names a space by name would then have to ask which), unless ``allow_duplicate``.
        """
        taken = self.named(name)
        if taken and not allow_duplicate:
            raise ConflictError(
                f"a space named {name!r} is here already ({', '.join(s.hex()[:8] for s in taken)});"
                " choose another name, or allow the duplicate (--allow-duplicate) and name "
                "them by id"
            )
        chosen = dict(self._engines if engines is None else engines)
        replica = self.endpoint.create_space(name, time=self._clock.now_ms(), engines=chosen)
        self.added(replica)
        return replica

    def writable(self, space: bytes) -> Replica:
        """The replica of ``space`` if this endpoint may write to it.

        Raises :class:`NotFoundError` for an unknown space and :class:`LocalProtocolError` while
        this endpoint is not (yet) a member.
        """
        replica = self.endpoint.replica(space)
        if not replica.can_create():
            raise LocalProtocolError(
                "this endpoint is not (yet) a member of the space; wait for the join to finish"
            )
        return replica

    # -- tools --------------------------------------------------------------------------------

    def tool_names(self, space: bytes) -> list[str]:
        """The installed tools ``space`` holds (its engine instances fit them), by name."""
        kinds = self.endpoint.replica(space).engine_kinds
        return sorted(name for name, plugin in self.tools.items() if plugin.fits(kinds))

    def tools_of(self, space: bytes) -> dict[str, Any]:
        """Every installed tool the space holds, opened on it (once; a tool that fails to open
        is logged and left out)."""
        opened = {}
        for name in self.tool_names(space):
            if (space, name) in self._failed and (space, name) not in self._opened:
                continue  # it failed to open here: logged once, not on every batch
            try:
                opened[name] = self.tool(space, name)
            except P2PSpaceError as exc:
                self._failed.add((space, name))
                log.error("the tool %r cannot open space %s: %s", name, space.hex()[:8], exc)
        return opened

    def tool(self, space: bytes, name: str) -> Any:
        """The installed tool ``name`` opened on ``space`` (opened once, then kept).

        Raises :class:`NotFoundError` if no tool of that name is installed,
        :class:`LocalProtocolError` if the space does not hold it.
        """
        key = (space, name)
        found = self._opened.get(key)
        if found is not None:
            return found
        plugin = self.tools.get(name)
        if plugin is None:
            raise NotFoundError(self._not_installed(name))
        replica = self.endpoint.replica(space)
        if not plugin.fits(replica.engine_kinds):
            raise LocalProtocolError(f"this space has no {plugin.title.lower()} tool")
        context = ToolContext(
            replica=replica,
            commit=lambda commands: self._commit(space, commands),
            now=self._clock.now_ms,
            acks=lambda: self.current_acks(space),
        )
        try:
            found = plugin.open(context)
        except P2PSpaceError:
            raise
        except Exception as exc:
            raise LocalProtocolError(f"the tool {name!r} failed to open: {exc!r}") from exc
        self._opened[key] = found
        return found

    def engines_for(self, tool: str | None) -> dict[str, str]:
        """The engine instances of a new space holding ``tool`` (None: the node's default,
        ``"none"``: the record database alone). Raises LocalProtocolError for a tool not
        installed."""
        if tool is None:
            return dict(self._engines)
        if tool == NO_TOOL:
            return {"db": "rdb"}
        plugin = self.tools.get(tool)
        if plugin is None:
            raise LocalProtocolError(self._not_installed(tool))
        return {"db": "rdb", **plugin.engines}

    def _not_installed(self, name: str) -> str:
        installed = ", ".join(sorted(self.tools)) or "none"
        return f"no tool named {name!r} is installed (installed: {installed})"

    def discussion(self, space: bytes, *, required: bool = True) -> Discussion | None:
        """The space's discussion tool; None (or, if ``required``, LocalProtocolError) when the
        space has none or the discussion plugin is not installed."""
        name = DISCUSSION
        if name not in self.tools or name not in self.tool_names(space):
            if required:
                raise LocalProtocolError("this space has no discussion tool")
            return None
        tool = self.tool(space, name)
        return tool if isinstance(tool, Discussion) else None

    # -- whom the spaces make us talk to ------------------------------------------------------

    def current_acks(self, space: bytes) -> dict[bytes, dict[bytes, int]]:
        """What each *current* member acknowledged of ``space`` (a removed one no longer
        counts towards "delivered")."""
        replica = self.endpoint.replicas.get(space)
        if replica is None:
            return {}
        return {p: v for p, v in self._acks.acked(space).items() if replica.is_member(p)}

    def shared_with(self, peer: bytes) -> list[bytes]:
        """The spaces ``peer`` is a current member of here (none this endpoint was removed
        from)."""
        me = self.endpoint.endpoint_id
        return [
            s
            for s, r in self.endpoint.replicas.items()
            if r.is_member(peer) and not was_removed(r, me)
        ]

    def wants(self, peer: bytes) -> bool:
        """True if ``peer`` shares a space with us or sponsors a join of ours that has not
        admitted us yet."""
        me = self.endpoint.endpoint_id
        if peer == me:
            return False
        if self.shared_with(peer):
            return True
        replicas = self.endpoint.replicas
        return any(
            peer in sponsors and (space not in replicas or not replicas[space].knows_creator(me))
            for space, sponsors in self.endpoint.sponsors.items()
        )


__all__ = ["Commit", "SpaceBook", "space_name"]
