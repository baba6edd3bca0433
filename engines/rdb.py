"""The record database engine: tables of records with fields.

Commands (``args`` is always a map):

* ``create {table, record, fields}`` -- a new record; a no-op if the record exists or existed, or
  if the record id is in another member's namespace (below).
  With ``owned: true`` the record belongs to the delta's creator: a ``set`` or ``delete`` by
  anyone else is a recorded no-op (the creator is the delta's signer, so every replica agrees).
  An owned record's id must be in its creator's namespace: an owned create of any other id is a
  recorded no-op.
* ``set {table, record, fields}`` -- set the given fields (others keep their values); a no-op on a
  record that does not exist or was deleted.
* ``delete {table, record}`` -- delete the record (a tombstone); a no-op if absent or deleted.

Field values are CBOR-native (see :mod:`p2pspace.core.codec`). Concurrency resolves by the shared
total order: the later ``set`` wins. A command that does not apply is a *recorded no-op*: its undo
record is ``None`` and undo does nothing, so undo stays exact.

Namespaces. A record id ``<16 lowercase hex>~<local>`` is in the namespace of the endpoint whose
id starts with those 16 hex digits (see :func:`owned_id`). Only that endpoint can create it, owned
or not. Without this, a member who saw another's new record on the wire could create the same id
in a delta that depends only on older history: that delta sorts first in the total order, so on
every replica the record would become the squatter's. Endpoint ids are a hash of the endpoint's
key, and 16 hex digits are 64 bits of it: making a key whose id lands in another's namespace is
out of reach. Ids that are not of this form are plain ids any member may create first.

State: one entry per record, key ``r/<table>\\0<record>``, value the canonical CBOR of
``[fields, deleted]`` (``[fields, deleted, owner]`` for an owned record). Records are always
written in canonical form, so decoding one and encoding the same value again gives the same
bytes; undo relies on that to restore a record byte for byte from what the command changed.

Undo records hold only what the command changed, so what a member can make every replica store
is bounded by what it sends:

* ``None`` -- a recorded no-op;
* ``[None]`` -- a create: the record did not exist;
* ``[previous, absent]`` -- a set: ``previous`` maps each field it replaced to the old value,
  ``absent`` lists (sorted) the fields it added;
* ``[False]`` -- a delete of a live record (undo clears the tombstone);
* ``[old]`` with ``old`` bytes -- the whole previous record, as earlier releases stored it for
  every set and delete; still restored.

Reading: :func:`view` gives an :class:`RdbView` of one rdb instance of a replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from p2pspace.core import codec
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext, Engine, EngineState
from p2pspace.core.engine_registry import register_engine
from p2pspace.core.identity import ENDPOINT_ID_SIZE
from p2pspace.errors import CommandError, LocalProtocolError, MalformedError, StorageError

if TYPE_CHECKING:
    from p2pspace.core.replica import Replica

RECORD_PREFIX = b"r/"
MAX_TABLE = 64
MAX_RECORD = 128
MAX_FIELD = 64
MAX_FIELDS = 64
NAMESPACE_HEX = 16  # hex digits of the creator's endpoint id that open its namespace
NAMESPACE_SEPARATOR = "~"  # unreserved in URLs: an owned id is one path segment as it is

_ARG_KEYS = {
    "create": frozenset({"table", "record", "fields"}),
    "set": frozenset({"table", "record", "fields"}),
    "delete": frozenset({"table", "record"}),
}
_OWNED_CREATE = frozenset({"owned", "table", "record", "fields"})
_HEX_DIGITS = frozenset("0123456789abcdef")


def record_key(table: str, record: str) -> bytes:
    return RECORD_PREFIX + table.encode() + b"\0" + record.encode()


def namespace(creator: bytes) -> str:
    """The namespace of endpoint ``creator``: the first 16 hex digits of its id."""
    return creator.hex()[:NAMESPACE_HEX]


def namespace_of(record: str) -> str | None:
    """The namespace record id ``record`` is in, or ``None`` for a plain id."""
    if (
        len(record) > NAMESPACE_HEX + 1
        and record[NAMESPACE_HEX] == NAMESPACE_SEPARATOR
        and _HEX_DIGITS.issuperset(record[:NAMESPACE_HEX])
    ):
        return record[:NAMESPACE_HEX]
    return None


def owned_id(creator: bytes, local: str) -> str:
    """The record id ``local`` in the namespace of endpoint ``creator``: ``<namespace>~<local>``.

    Use it for every record the endpoint will own (and for any record only it should be able to
    create): no other member can create that id. ``local`` need only be unique among the
    creator's own ids. Raises :class:`LocalProtocolError` if ``creator`` is not an endpoint id
    or the result is not a valid record id (``local`` empty, holding NUL, or too long).
    """
    if type(creator) is not bytes or len(creator) != ENDPOINT_ID_SIZE:
        raise LocalProtocolError(
            f"a namespace belongs to an endpoint id of {ENDPOINT_ID_SIZE} bytes"
        )
    limit = MAX_RECORD - NAMESPACE_HEX - 1
    if type(local) is not str or not 0 < len(local) <= limit or "\0" in local:
        raise LocalProtocolError(f"a local id is 1..{limit} characters without NUL")
    return namespace(creator) + NAMESPACE_SEPARATOR + local


def may_create(creator: bytes, record: str, *, owned: bool) -> bool:
    """Whether a create of ``record`` by ``creator`` may take effect: an id in a namespace only by
    its endpoint, a plain id only when the record will not be owned."""
    prefix = namespace_of(record)
    return not owned if prefix is None else prefix == namespace(creator)


def _name(value: object, label: str, limit: int) -> str:
    if type(value) is not str or not 0 < len(value) <= limit or "\0" in value:
        raise CommandError(f"{label} must be a non-empty string of at most {limit} characters")
    return value


@register_engine
class RdbEngine(Engine):
    kind = "rdb"

    def validate(self, command: Command) -> None:
        keys = _ARG_KEYS.get(command.name)
        if keys is None:
            raise CommandError(f"rdb has no command {command.name!r}")
        args = command.args
        if command.name == "create" and type(args) is dict and args.keys() == _OWNED_CREATE:
            if args["owned"] is not True:
                raise CommandError("rdb create: owned must be true when given")
        elif type(args) is not dict or args.keys() != keys:
            raise CommandError(f"rdb {command.name} takes a map with exactly {sorted(keys)}")
        _name(args["table"], "table", MAX_TABLE)
        _name(args["record"], "record", MAX_RECORD)
        if "fields" in keys:
            fields = args["fields"]
            if type(fields) is not dict or not 0 < len(fields) <= MAX_FIELDS:
                raise CommandError(f"fields must be a map of 1..{MAX_FIELDS} entries")
            for field in fields:
                _name(field, "field name", MAX_FIELD)

    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        args = command.args
        key = record_key(args["table"], args["record"])
        name = command.name
        if name == "create":
            owned = args.get("owned") is True
            # Decided by the command and its creator only, so every replica refuses alike.
            if not may_create(context.creator, args["record"], owned=owned):
                return None
            if state.get(key) is not None:
                return None
            state.put(
                key, _encode_record(args["fields"], False, context.creator if owned else None)
            )
            return [None]
        old = state.get(key)
        if old is None:
            return None
        fields, deleted, owner = _decode_record(old)
        if deleted or (owner is not None and owner != context.creator):
            return None
        if name == "set":
            changes: dict[str, Any] = args["fields"]
            previous = {f: fields[f] for f in changes if f in fields}
            absent = sorted(f for f in changes if f not in fields)
            fields.update(changes)
            state.put(key, _encode_record(fields, False, owner))
            return [previous, absent]
        state.put(key, _encode_record(fields, True, owner))
        return [False]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        if undo_record is None:
            return
        key = record_key(command.args["table"], command.args["record"])
        if len(undo_record) == 2:
            previous, absent = undo_record
            fields, deleted, owner = _current(state, key)
            fields.update(previous)
            for field in absent:
                del fields[field]
            state.put(key, _encode_record(fields, deleted, owner))
            return
        (old,) = undo_record
        if old is None:
            state.delete(key)
        elif old is False:
            fields, _deleted, owner = _current(state, key)
            state.put(key, _encode_record(fields, False, owner))
        else:
            state.put(key, old)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return frozenset({record_key(command.args["table"], command.args["record"])})


def _encode_record(fields: dict[str, Any], deleted: bool, owner: bytes | None) -> bytes:
    value = [fields, deleted] if owner is None else [fields, deleted, owner]
    return codec.encode_trusted(value)


def _decode_record(raw: bytes) -> tuple[dict[str, Any], bool, bytes | None]:
    try:
        value = codec.decode_stored(raw)
        fields, deleted = value[0], value[1]
        owner = value[2] if len(value) == 3 else None
    except (MalformedError, ValueError, TypeError, IndexError) as exc:
        raise StorageError(f"corrupt rdb record: {exc}") from None
    return fields, deleted, owner


def _current(state: EngineState, key: bytes) -> tuple[dict[str, Any], bool, bytes | None]:
    """The record an undo works on: the one its command changed, so it must be there."""
    raw = state.get(key)
    if raw is None:
        raise StorageError(f"rdb undo: record {key!r} is missing; the state and the log disagree")
    return _decode_record(raw)


class RdbView:
    """Read access to one rdb instance's tables."""

    def __init__(self, state: EngineState) -> None:
        self._state = state

    def get(self, table: str, record: str) -> dict[str, Any] | None:
        """The record's fields, or ``None`` if it does not exist or was deleted."""
        raw = self._state.get(record_key(table, record))
        if raw is None:
            return None
        fields, deleted, _owner = _decode_record(raw)
        return None if deleted else fields

    def deleted(self, table: str, record: str) -> bool:
        """True if the record existed and was deleted (its tombstone is kept: a set of its
        fields is a no-op, and a create of its id makes nothing)."""
        raw = self._state.get(record_key(table, record))
        return raw is not None and _decode_record(raw)[1]

    def owner(self, table: str, record: str) -> bytes | None:
        """The endpoint that created an owned record (None if not owned or absent)."""
        raw = self._state.get(record_key(table, record))
        return None if raw is None else _decode_record(raw)[2]

    def records(self, table: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Live records of ``table`` in record-id order."""
        for record, fields, _owner in self.owned_records(table):
            yield record, fields

    def owned_records(self, table: str) -> Iterator[tuple[str, dict[str, Any], bytes | None]]:
        """Live records of ``table`` with their owner (None if not owned), in record-id order."""
        prefix = RECORD_PREFIX + table.encode() + b"\0"
        for key, raw in self._state.scan(prefix):
            fields, deleted, owner = _decode_record(raw)
            if not deleted:
                yield key[len(prefix) :].decode(), fields, owner

    def tables(self) -> list[str]:
        names: set[str] = set()
        for key, _raw in self._state.scan(RECORD_PREFIX):
            names.add(key[len(RECORD_PREFIX) :].split(b"\0", 1)[0].decode())
        return sorted(names)


def view(replica: Replica, instance: str = "db") -> RdbView:
    """Read access to rdb instance ``instance`` of ``replica``'s space.

    Raises :class:`LocalProtocolError` if the space has no such instance or it is not an rdb.
    """
    if replica.engine_kinds.get(instance) != RdbEngine.kind:
        raise LocalProtocolError(f"{instance!r} is not an rdb instance of this space")
    return RdbView(replica.state(instance))


def create(
    table: str, record: str, fields: dict[str, Any], *, instance: str = "db", owned: bool = False
) -> Command:
    """A create command. ``owned``: only the creator of this delta may later set or delete the
    record; its id must then be one :func:`owned_id` made for that creator (the engine makes an
    owned create of any other id a recorded no-op).

    Raises :class:`LocalProtocolError` for an owned create of an id in no namespace: it could
    never take effect.
    """
    if owned:
        if namespace_of(record) is None:
            raise LocalProtocolError(
                f"an owned record needs an id in its creator's namespace (rdb.owned_id), "
                f"not {record!r}"
            )
        # Canonical key order (length, then bytes): owned, table, fields, record.
        args = {"owned": True, "table": table, "fields": fields, "record": record}
        return Command(engine=instance, name="create", args=args)
    return Command(
        engine=instance, name="create", args={"table": table, "fields": fields, "record": record}
    )


def set_fields(table: str, record: str, fields: dict[str, Any], *, instance: str = "db") -> Command:
    return Command(
        engine=instance, name="set", args={"table": table, "fields": fields, "record": record}
    )


def delete(table: str, record: str, *, instance: str = "db") -> Command:
    return Command(engine=instance, name="delete", args={"table": table, "record": record})
