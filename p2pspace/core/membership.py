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
* ``add {id, key, name, role}`` -- adds (or re-adds, replacing name and role) a member.

``id`` is the 16-byte endpoint id and must be derived from ``key`` (32-byte Ed25519 public key);
roles are :data:`ROLES`. State: key :data:`SPACE_KEY` holds ``{name, engines}``; key
``m/<id>`` (:func:`member_key`) holds ``{key, name, role, added_by: [creator, seq]}``, both in
canonical CBOR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from p2pspace.core import codec
from p2pspace.core.delta import Command, DeltaId
from p2pspace.core.engine import EngineState
from p2pspace.core.identity import endpoint_id_of
from p2pspace.errors import CommandError, MalformedError, StorageError

INSTANCE = "members"
KIND = "members"
ROLES = ("manager", "participant", "guest")
SPACE_KEY = b"space"
MEMBER_PREFIX = b"m/"
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
    else:
        raise CommandError(f"members has no command {command.name!r}")


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


def encode_member(*, key: bytes, name: str, role: str, added_by: DeltaId) -> bytes:
    return codec.encode(
        {"key": key, "name": name, "role": role, "added_by": [added_by.creator, added_by.seq]}
    )


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
        for key, raw in self._state.scan(MEMBER_PREFIX):
            value = _decode_stored(raw)
            creator, seq = value["added_by"]
            yield Member(
                id=key[len(MEMBER_PREFIX) :],
                key=value["key"],
                name=value["name"],
                role=value["role"],
                added_by=(creator, seq),
            )

    def get(self, member_id: bytes) -> Member | None:
        for member in self.members():
            if member.id == member_id:
                return member
        return None


def _text(value: object, label: str, *, allow_empty: bool = True) -> str:
    if type(value) is not str or len(value) > MAX_TEXT or (not allow_empty and not value):
        raise CommandError(f"{label} must be a string of at most {MAX_TEXT} characters")
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
