"""The built-in members engine: executes and undoes the commands that say who is in a space.

Theory of operation. The rules the core itself needs -- the commands, their validation, member
grants, the state layout and the view that reads it -- live in :mod:`p2pspace.core.membership`
(the causal buffer checks membership before anything executes, and the core may not depend on
an engine implementation). This module is the engine: it writes that layout when a command
executes, keeps the previous values as the undo record, and restores them byte for byte on
undo. The public names of :mod:`p2pspace.core.membership` are re-exported here, so tools and
tests can write ``members.add_command(...)``.
"""

from __future__ import annotations

from typing import Any

from p2pspace.core import codec
from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.engine import DeltaContext, Engine, EngineState
from p2pspace.core.engine_registry import register_engine
from p2pspace.core.membership import (
    CHECKPOINT_KEY,
    CHECKPOINTER_KEY,
    DEFAULT_QUOTA,
    ENGINE_NAME_MAX,
    INSTANCE,
    KIND,
    MAX_ENGINES,
    MAX_TEXT,
    MEMBER_PREFIX,
    QUOTA_KEY,
    ROLES,
    SPACE_KEY,
    Member,
    MembersView,
    SpaceInfo,
    add_command,
    authorize,
    checkpoint_command,
    checkpointer_command,
    display_names,
    encode_member,
    encode_member_record,
    encode_space,
    genesis_command,
    is_checkpoint,
    member_grant,
    member_key,
    next_member,
    quota_command,
    remove_command,
    rename_command,
    role_command,
    validate_command,
)

__all__ = [
    "CHECKPOINT_KEY",
    "CHECKPOINTER_KEY",
    "DEFAULT_QUOTA",
    "ENGINE_NAME_MAX",
    "INSTANCE",
    "KIND",
    "MAX_ENGINES",
    "MAX_TEXT",
    "MEMBER_PREFIX",
    "QUOTA_KEY",
    "ROLES",
    "SPACE_KEY",
    "Member",
    "MembersEngine",
    "MembersView",
    "SpaceInfo",
    "add_command",
    "authorize",
    "checkpoint_command",
    "checkpointer_command",
    "display_names",
    "genesis_command",
    "is_checkpoint",
    "member_grant",
    "member_key",
    "quota_command",
    "remove_command",
    "rename_command",
    "role_command",
    "validate_command",
]


@register_engine
class MembersEngine(Engine):
    kind = KIND

    def validate(self, command: Command) -> None:
        validate_command(command)

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        args = command.args
        added_by = DeltaId(context.creator, context.seq)
        if command.name == "genesis":
            old_space = state.get(SPACE_KEY)
            state.put(SPACE_KEY, encode_space(args["name"], args["engines"]))
            member = args["member"]
            key = member_key(member["id"])
            old_member = state.get(key)
            state.put(
                key,
                encode_member(
                    key=member["key"], name=member["name"], role="manager", added_by=added_by
                ),
            )
            return [old_space, old_member]
        if command.name == "rename":
            old = state.get(SPACE_KEY)
            space = MembersView(state).space()
            if space is not None:
                state.put(SPACE_KEY, encode_space(args["name"], space.engines))
            return [old]
        if command.name == "quota":
            old = state.get(QUOTA_KEY)
            state.put(QUOTA_KEY, codec.encode(args["bytes"]))
            return [old]
        if command.name == "checkpoint":
            # Executed only where the checkpoint closes its block (p2pspace.core.checkpoint).
            old = state.get(CHECKPOINT_KEY)
            value = [args["number"], args["digest"], context.creator, context.seq]
            state.put(CHECKPOINT_KEY, codec.encode(value))
            return [old]
        if command.name == "checkpointer":
            old = state.get(CHECKPOINTER_KEY)
            view = MembersView(state)
            # Only who is checkpointer decides, never the target's role here: that can change by
            # a concurrent delta sorting before the handover on some replicas and not others.
            if view.checkpointer() == context.creator:
                state.put(CHECKPOINTER_KEY, codec.encode(args["id"]))
            return [old]
        key = member_key(args["id"])
        old = state.get(key)
        new = next_member(MembersView(state).get(args["id"]), command, added_by)
        if new is not None:
            state.put(key, encode_member_record(new))
        return [old]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        args = command.args
        if command.name == "genesis":
            old_space, old_member = undo_record
            _restore(state, SPACE_KEY, old_space)
            _restore(state, member_key(args["member"]["id"]), old_member)
            return
        (old,) = undo_record
        _restore(state, _key_of(command), old)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        if command.name == "genesis":
            return frozenset({SPACE_KEY, member_key(command.args["member"]["id"])})
        if command.name == "checkpointer":
            return None  # reads who the founder is: every member record
        return frozenset({_key_of(command)})


def _key_of(command: Command) -> bytes:
    """The one state key an add, remove, role, rename, quota or checkpoint command writes."""
    if command.name == "rename":
        return SPACE_KEY
    if command.name == "quota":
        return QUOTA_KEY
    if command.name == "checkpoint":
        return CHECKPOINT_KEY
    if command.name == "checkpointer":
        return CHECKPOINTER_KEY
    return member_key(command.args["id"])


def _restore(state: EngineState, key: bytes, old: bytes | None) -> None:
    if old is None:
        state.delete(key)
    else:
        state.put(key, old)
