"""The rules the core needs about members and roles, and how the members state is laid out.

Theory of operation. Every space has one engine instance named :data:`INSTANCE` (kind
:data:`KIND`). Membership is decided twice (DESIGN §8): before a delta is stored, the causal
buffer needs the members *commands* -- who a delta admits, with which key (:func:`member_grant`)
-- so that "the creator is a member in the delta's causal past" can be checked before anything
executes; and after execution, readers need the members *state* (:class:`MembersView`). Both
live here, so the core never depends on the engine implementation (``p2pspace.engines.members``
executes and undoes these commands on the layout defined below).

Commands:

* ``genesis {name, nonce, engines, member}`` -- only in a space's genesis delta: records the
  space's name and engine instances (``{instance: kind}``) and makes ``member``
  (``{id, key, name}``) the space's first manager.
* ``add {id, key, name, role}`` -- admits an endpoint that is not a current member (a new one,
  or one removed earlier: re-admission); no effect on a current member.
* ``remove {id}`` -- removes a current member (its record stays, marked removed, so its old
  deltas keep their author's name); a member removing itself is leaving.
* ``role {id, role}`` -- changes a current member's role.
* ``rename {name}`` -- gives the space a new name (what every member's list shows).
* ``quota {bytes}`` -- the space's per-member quota: the most delta body bytes one member may
  create in the space (default :data:`DEFAULT_QUOTA`).
* ``checkpoint {number, digest}`` -- closes block ``number`` (DESIGN §12, see
  :mod:`p2pspace.core.checkpoint`): ``digest`` is the state digest at its position. Only the
  space's *checkpointer* makes one that closes anything; the engine records the last one.
* ``checkpointer {id}`` -- the checkpointer hands its duty to ``id`` (a manager: a checkpoint
  closes only if its creator is a manager where it closes). Only the checkpointer itself can
  (a handover is in its own chain, so no two endpoints are ever checkpointer for the same
  block); anyone else's is a no-op. Its effect depends on nothing else, so a concurrent role
  change cannot make replicas disagree on who the checkpointer is. Until the first handover
  the checkpointer is the space's founder.

``id`` is the 16-byte endpoint id and must be derived from ``key`` (32-byte Ed25519 public key);
roles are :data:`ROLES`. State: key :data:`SPACE_KEY` holds ``{name, engines}``; key
``m/<id>`` (:func:`member_key`) holds ``{key, name, role, added_by: [creator, seq]}`` plus
``removed_by: [creator, seq]`` once removed; key :data:`QUOTA_KEY` holds the quota; key
:data:`CHECKPOINTER_KEY` the checkpointer's id once handed over; key :data:`CHECKPOINT_KEY` the
last checkpoint ``[number, digest, creator, seq]``; all in canonical CBOR.

Who may do what (DESIGN §8) is :func:`authorize`, one pure function over a :class:`RoleSource`.
It is asked twice with the same rules: before storage, over the membership that the delta's
causal past builds (:class:`MemberTable`, replayed by :mod:`p2pspace.core.authority`), and at
execution, over the members state at the delta's place in the total order (:class:`MembersView`).
A delta is allowed or refused whole:

* the creator must be a current member;
* a **guest** may only leave; a **participant** may also run every command of the space's other
  engines; a **manager** may also add and remove members, change roles, rename the space and
  set the quota;
* no delta may leave the space without a manager (the last manager cannot leave, be removed or
  be demoted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from p2pspace.core import codec
from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.engine import EngineState
from p2pspace.core.identity import endpoint_id_of, short_id
from p2pspace.errors import CommandError, MalformedError, StorageError

INSTANCE = "members"
KIND = "members"
ROLES = ("manager", "participant", "guest")
SPACE_KEY = b"space"
QUOTA_KEY = b"quota"
CHECKPOINTER_KEY = b"checkpointer"
CHECKPOINT_KEY = b"checkpoint"
DIGEST_SIZE = 32
MEMBER_PREFIX = b"m/"
DEFAULT_QUOTA = 256 * 1024 * 1024
MAX_QUOTA = 2**40
MANAGING = frozenset({"add", "remove", "role", "rename", "quota", "checkpoint", "checkpointer"})
# Commands that change no member.
_NO_TARGET = frozenset({"genesis", "rename", "quota", "checkpoint", "checkpointer"})

# Why a delta is refused (before storage) or a no-op (at execution).
NOT_A_MEMBER = "not a member"
NOT_ALLOWED = "not allowed for this role"
LAST_MANAGER = "would leave the space without a manager"
MAX_TEXT = 200
ENGINE_NAME_MAX = 64
MAX_ENGINES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    id: bytes
    key: bytes
    name: str
    role: str
    added_by: tuple[bytes, int]
    removed_by: tuple[bytes, int] | None = None

    @property
    def current(self) -> bool:
        return self.removed_by is None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceInfo:
    name: str
    engines: dict[str, str]


@dataclass(slots=True, kw_only=True)
class Membership:
    """Member keys and the ids of the deltas that granted membership, as accepted so far.

    Grants are never revoked here: a removal is decided in the total order, at execution.
    """

    keys: dict[bytes, bytes] = field(default_factory=dict)
    grants: dict[bytes, list[DeltaId]] = field(default_factory=dict)

    def add(self, member: bytes, key: bytes, granted_by: DeltaId) -> None:
        self.keys.setdefault(member, key)
        self.grants.setdefault(member, []).append(granted_by)


def member_key(member_id: bytes) -> bytes:
    return MEMBER_PREFIX + member_id


def genesis_command(
    *,
    name: str,
    nonce: bytes,
    engines: dict[str, str],
    member_id: bytes,
    key: bytes,
    member_name: str,
) -> Command:
    return Command(
        engine=INSTANCE,
        name="genesis",
        args={
            "name": name,
            "nonce": nonce,
            "engines": engines,
            "member": {"id": member_id, "key": key, "name": member_name},
        },
    )


def add_command(*, member_id: bytes, key: bytes, name: str, role: str = "participant") -> Command:
    return Command(
        engine=INSTANCE,
        name="add",
        args={"id": member_id, "key": key, "name": name, "role": role},
    )


def remove_command(member_id: bytes) -> Command:
    return Command(engine=INSTANCE, name="remove", args={"id": member_id})


def role_command(member_id: bytes, role: str) -> Command:
    return Command(engine=INSTANCE, name="role", args={"id": member_id, "role": role})


def rename_command(name: str) -> Command:
    return Command(engine=INSTANCE, name="rename", args={"name": name})


def quota_command(limit: int) -> Command:
    return Command(engine=INSTANCE, name="quota", args={"bytes": limit})


def checkpoint_command(number: int, digest: bytes) -> Command:
    return Command(engine=INSTANCE, name="checkpoint", args={"number": number, "digest": digest})


def checkpointer_command(member_id: bytes) -> Command:
    return Command(engine=INSTANCE, name="checkpointer", args={"id": member_id})


def is_checkpoint(commands: Sequence[Command]) -> bool:
    """True if a delta of ``commands`` is a checkpoint (its only command is one)."""
    return (
        len(commands) == 1 and commands[0].engine == INSTANCE and commands[0].name == "checkpoint"
    )


def validate_command(command: Command) -> None:
    """Check the shape and types of a members command (state-independent).

    Raises :class:`~p2pspace.errors.CommandError` (the delta is refused) unless well-formed.
    """
    if command.name == "genesis":
        args = _check_map(command.args, {"name", "nonce", "engines", "member"})
        _text(args["name"], "space name", allow_empty=False)
        if type(args["nonce"]) is not bytes or len(args["nonce"]) != 16:
            raise CommandError("genesis nonce must be 16 bytes")
        engines = args["engines"]
        if type(engines) is not dict or len(engines) > MAX_ENGINES:
            raise CommandError("genesis engines must be a map of instance name to kind")
        for instance, kind in engines.items():
            if (
                type(instance) is not str
                or type(kind) is not str
                or not 0 < len(instance) <= ENGINE_NAME_MAX
                or instance == INSTANCE
            ):
                raise CommandError(f"bad engine instance {instance!r}")
        _member_fields(_check_map(args["member"], {"id", "key", "name"}))
    elif command.name == "add":
        args = _check_map(command.args, {"id", "key", "name", "role"})
        _member_fields(args)
        if args["role"] not in ROLES:
            raise CommandError(f"role must be one of {ROLES}")
    elif command.name == "remove":
        _member_id(_check_map(command.args, {"id"})["id"])
    elif command.name == "role":
        args = _check_map(command.args, {"id", "role"})
        _member_id(args["id"])
        if args["role"] not in ROLES:
            raise CommandError(f"role must be one of {ROLES}")
    elif command.name == "rename":
        _text(_check_map(command.args, {"name"})["name"], "space name", allow_empty=False)
    elif command.name == "quota":
        limit = _check_map(command.args, {"bytes"})["bytes"]
        if type(limit) is not int or not 0 < limit <= MAX_QUOTA:
            raise CommandError(f"quota must be an integer of bytes in 1..{MAX_QUOTA}")
    elif command.name == "checkpoint":
        args = _check_map(command.args, {"number", "digest"})
        if type(args["number"]) is not int or not 0 < args["number"] <= 2**53:
            raise CommandError("checkpoint number must be an integer in 1..2**53")
        if type(args["digest"]) is not bytes or len(args["digest"]) != DIGEST_SIZE:
            raise CommandError(f"checkpoint digest must be {DIGEST_SIZE} bytes")
    elif command.name == "checkpointer":
        _member_id(_check_map(command.args, {"id"})["id"])
    else:
        raise CommandError(f"members has no command {command.name!r}")


def member_name_problem(name: object) -> str | None:
    """Why the members engine would refuse ``name`` as a member's name, in words; None if it
    takes it. Checked before a name is kept (``p2pspace init --name``), so that it is not
    refused later, far from where it was typed, when a join sends it."""
    if type(name) is not str:
        return "a name is text"
    if len(name) > MAX_TEXT:
        return (
            f"a name is at most {MAX_TEXT} characters (this one has {len(name)}); it is what "
            "the other members see"
        )
    return None


def member_grant(command: Command) -> tuple[bytes, bytes] | None:
    """``(member id, public key)`` if ``command`` (already validated) admits a member."""
    if command.engine != INSTANCE:
        return None
    if command.name == "add":
        return command.args["id"], command.args["key"]
    if command.name == "genesis":
        member = command.args["member"]
        return member["id"], member["key"]
    return None


def encode_space(name: str, engines: dict[str, str]) -> bytes:
    return codec.encode({"name": name, "engines": engines})


def encode_member(
    *,
    key: bytes,
    name: str,
    role: str,
    added_by: tuple[bytes, int],
    removed_by: tuple[bytes, int] | None = None,
) -> bytes:
    value: dict[str, Any] = {
        "key": key,
        "name": name,
        "role": role,
        "added_by": [added_by[0], added_by[1]],
    }
    if removed_by is not None:
        value["removed_by"] = [removed_by[0], removed_by[1]]
    return codec.encode(value)


def encode_member_record(member: Member) -> bytes:
    return encode_member(
        key=member.key,
        name=member.name,
        role=member.role,
        added_by=member.added_by,
        removed_by=member.removed_by,
    )


def next_member(old: Member | None, command: Command, by: tuple[bytes, int]) -> Member | None:
    """The member record ``command`` (an authorised add, remove or role) leaves, or None when
    it changes nothing. The one statement of what these commands do to a member; the engine
    and :class:`MemberTable` both apply it."""
    args = command.args
    if command.name == "add":
        if old is not None and old.current:
            return None
        return Member(
            id=args["id"], key=args["key"], name=args["name"], role=args["role"], added_by=by
        )
    if old is None or not old.current:
        return None
    if command.name == "remove":
        return replace(old, removed_by=by)
    if command.name == "role":
        return None if old.role == args["role"] else replace(old, role=args["role"])
    return None


class RoleSource(Protocol):
    """Membership at one point: the current role of an endpoint, None if not a member."""

    def role_of(self, member_id: bytes) -> str | None: ...

    def managers(self) -> set[bytes]: ...


def authorize(creator: bytes, commands: Sequence[Command], roles: RoleSource) -> str | None:
    """Why ``creator`` may not create a delta of ``commands`` given ``roles``, or None if it
    may. Pure and deterministic: every replica decides the same on the same membership."""
    role = roles.role_of(creator)
    if role is None:
        return NOT_A_MEMBER
    managing = False
    for command in commands:
        if command.engine != INSTANCE:
            if role == "guest":
                return NOT_ALLOWED
            continue
        managing = True
        leaving = command.name == "remove" and command.args["id"] == creator
        if role != "manager" and not leaving:
            return NOT_ALLOWED
    if managing and not _managers_after(commands, roles):
        return LAST_MANAGER
    return None


def _managers_after(commands: Sequence[Command], roles: RoleSource) -> set[bytes]:
    """The managers left once ``commands`` (members commands among them) have run."""
    managers = roles.managers()
    for command in commands:
        if command.engine != INSTANCE or command.name in _NO_TARGET:
            continue
        target: bytes = command.args["id"]
        if command.name == "remove":
            managers.discard(target)
        elif command.name == "role":
            if command.args["role"] != "manager":
                managers.discard(target)
            elif roles.role_of(target) is not None:
                managers.add(target)
        elif command.args["role"] == "manager" and roles.role_of(target) is None:
            managers.add(target)  # an add of an endpoint that is not a current member
    return managers


@dataclass(slots=True)
class MemberTable:
    """Membership as an in-memory table, built by applying members deltas one by one: the
    membership a delta's causal past covers (see :mod:`p2pspace.core.authority`)."""

    members: dict[bytes, Member] = field(default_factory=dict)
    quota: int = DEFAULT_QUOTA

    def role_of(self, member_id: bytes) -> str | None:
        member = self.members.get(member_id)
        return member.role if member is not None and member.current else None

    def managers(self) -> set[bytes]:
        return {m.id for m in self.members.values() if m.current and m.role == "manager"}

    def copy(self) -> MemberTable:
        return MemberTable(members=dict(self.members), quota=self.quota)

    def apply(self, creator: bytes, seq: int, commands: Sequence[Command]) -> bool:
        """Apply one delta's members commands if :func:`authorize` allows them; False (and
        nothing changed) if not."""
        if not any(c.engine == INSTANCE for c in commands):
            return True
        genesis = [c for c in commands if c.engine == INSTANCE and c.name == "genesis"]
        if genesis:
            member = genesis[0].args["member"]
            self.members[member["id"]] = Member(
                id=member["id"],
                key=member["key"],
                name=member["name"],
                role="manager",
                added_by=(creator, seq),
            )
            return True
        if authorize(creator, commands, self) is not None:
            return False
        for command in commands:
            if command.engine != INSTANCE:
                continue
            if command.name == "quota":
                self.quota = command.args["bytes"]
                continue
            if command.name in _NO_TARGET:
                continue
            target = command.args["id"]
            new = next_member(self.members.get(target), command, (creator, seq))
            if new is not None:
                self.members[target] = new
        return True


class MembersView:
    """Read access to a space's members state (inside or outside a transaction).

    Raises :class:`~p2pspace.errors.StorageError` if the stored state does not decode.
    """

    def __init__(self, state: EngineState) -> None:
        self._state = state

    def space(self) -> SpaceInfo | None:
        raw = self._state.get(SPACE_KEY)
        if raw is None:
            return None
        value = _decode_stored(raw)
        return SpaceInfo(name=value["name"], engines=dict(value["engines"]))

    def members(self) -> Iterator[Member]:
        """Current members (not removed), in id order."""
        for member in self.everyone():
            if member.current:
                yield member

    def everyone(self) -> Iterator[Member]:
        """Every endpoint ever admitted, removed ones included, in id order."""
        for key, raw in self._state.scan(MEMBER_PREFIX):
            yield _member_of(key[len(MEMBER_PREFIX) :], raw)

    def get(self, member_id: bytes) -> Member | None:
        """The record of ``member_id`` (current or removed), or None."""
        raw = self._state.get(member_key(member_id))
        return None if raw is None else _member_of(member_id, raw)

    def role_of(self, member_id: bytes) -> str | None:
        member = self.get(member_id)
        return member.role if member is not None and member.current else None

    def managers(self) -> set[bytes]:
        return {m.id for m in self.members() if m.role == "manager"}

    def quota(self) -> int:
        raw = self._state.get(QUOTA_KEY)
        return DEFAULT_QUOTA if raw is None else int(_decode_stored(raw))

    def founder(self) -> bytes | None:
        """The member the genesis made (its record says it added itself, first)."""
        for member in self.everyone():
            if member.added_by == (member.id, 1):
                return member.id
        return None

    def checkpointer(self) -> bytes | None:
        """Who makes the space's checkpoints: the last handover's target, else the founder."""
        raw = self._state.get(CHECKPOINTER_KEY)
        return self.founder() if raw is None else bytes(_decode_stored(raw))

    def last_checkpoint(self) -> tuple[int, bytes, DeltaId] | None:
        """``(number, digest, id)`` of the last checkpoint that closed a block, or None."""
        raw = self._state.get(CHECKPOINT_KEY)
        if raw is None:
            return None
        number, digest, creator, seq = _decode_stored(raw)
        return int(number), bytes(digest), DeltaId(bytes(creator), int(seq))


def display_names(everyone: Iterable[Member]) -> dict[bytes, str]:
    """Each member's display name, by id: its name, or ``name (SHORT-ID)`` where the name is
    not unique (case-insensitively) -- among current members for a current one, among everyone
    for a removed one -- and the short id alone for a member without a name."""
    people = list(everyone)
    current = Counter(m.name.casefold() for m in people if m.current)
    anyone = Counter(m.name.casefold() for m in people)
    out: dict[bytes, str] = {}
    for m in people:
        key = m.name.casefold()
        shared = current[key] > 1 if m.current else anyone[key] > 1
        if not m.name:
            out[m.id] = short_id(m.id)
        elif shared:
            out[m.id] = f"{m.name} ({short_id(m.id)})"
        else:
            out[m.id] = m.name
    return out


def _member_of(member_id: bytes, raw: bytes) -> Member:
    value = _decode_stored(raw)
    creator, seq = value["added_by"]
    removed = value.get("removed_by")
    return Member(
        id=member_id,
        key=value["key"],
        name=value["name"],
        role=value["role"],
        added_by=(creator, seq),
        removed_by=None if removed is None else (removed[0], removed[1]),
    )


def _text(value: object, label: str, *, allow_empty: bool = True) -> str:
    if type(value) is not str or len(value) > MAX_TEXT or (not allow_empty and not value):
        raise CommandError(f"{label} must be a string of at most {MAX_TEXT} characters")
    return value


def _member_id(value: object) -> bytes:
    if type(value) is not bytes or len(value) != 16:
        raise CommandError("member id must be a 16-byte endpoint id")
    return value


def _member_fields(args: dict[str, Any]) -> tuple[bytes, bytes, str]:
    member_id, key = args.get("id"), args.get("key")
    if type(key) is not bytes or len(key) != 32:
        raise CommandError("member key must be a 32-byte Ed25519 public key")
    if type(member_id) is not bytes or member_id != endpoint_id_of(key):
        raise CommandError("member id must be the endpoint id of its key")
    return member_id, key, _text(args.get("name"), "member name")


def _check_map(args: object, keys: set[str]) -> dict[str, Any]:
    if type(args) is not dict or set(args) != keys:
        raise CommandError(f"arguments must be a map with exactly {sorted(keys)}")
    return args


def _decode_stored(raw: bytes) -> Any:
    try:
        return codec.decode(raw)
    except MalformedError as exc:
        raise StorageError(f"corrupt members state: {exc}") from None
