"""The record database engine: tables of records with fields.

Commands (``args`` is always a map):

* ``create {table, record, fields}`` -- a new record; a no-op if the record exists or existed.
  With ``owned: true`` the record belongs to the delta's creator: a ``set`` or ``delete`` by
  anyone else is a recorded no-op (the creator is the delta's signer, so every replica agrees).
* ``set {table, record, fields}`` -- set the given fields (others keep their values); a no-op on a
  record that does not exist or was deleted.
* ``delete {table, record}`` -- delete the record (a tombstone); a no-op if absent or deleted.

Field values are CBOR-native (see :mod:`p2pspace.core.codec`). Concurrency resolves by the shared
total order: the later ``set`` wins. A command that does not apply is a *recorded no-op*: its undo
record is ``None`` and undo does nothing, so undo stays exact.

State: one entry per record, key ``r/<table>\\0<record>``, value the canonical CBOR of
``[fields, deleted]`` (``[fields, deleted, owner]`` for an owned record). Undo records are
``[previous value or None]``, restored byte for byte.

Reading: :func:`view` gives an :class:`RdbView` of one rdb instance of a replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from p2pspace.core import codec
from p2pspace.core.delta import Command
from p2pspace.core.engine import DeltaContext, Engine, EngineState
from p2pspace.core.engine_registry import register_engine
from p2pspace.errors import CommandError, LocalProtocolError, MalformedError, StorageError

if TYPE_CHECKING:
    from p2pspace.core.replica import Replica

RECORD_PREFIX = b"r/"
MAX_TABLE = 64
MAX_RECORD = 128
MAX_FIELD = 64
MAX_FIELDS = 64

_ARG_KEYS = {
    "create": frozenset({"table", "record", "fields"}),
    "set": frozenset({"table", "record", "fields"}),
    "delete": frozenset({"table", "record"}),
}
_OWNED_CREATE = frozenset({"owned", "table", "record", "fields"})


def record_key(table: str, record: str) -> bytes:
    return RECORD_PREFIX + table.encode() + b"\0" + record.encode()


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
        old = state.get(key)
        name = command.name
        if name == "create":
            if old is not None:
                return None
            value = [args["fields"], False]
            if args.get("owned") is True:
                value.append(context.creator)
            state.put(key, codec.encode_trusted(value))
            return [None]
        if old is None:
            return None
        fields, deleted, owner = _decode_record(old)
        if deleted or (owner is not None and owner != context.creator):
            return None
        tail = [] if owner is None else [owner]
        if name == "set":
            fields.update(args["fields"])
            state.put(key, codec.encode_trusted([fields, False, *tail]))
        else:
            state.put(key, codec.encode_trusted([fields, True, *tail]))
        return [old]

    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        if undo_record is None:
            return
        (old,) = undo_record
        key = record_key(command.args["table"], command.args["record"])
        if old is None:
            state.delete(key)
        else:
            state.put(key, old)

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        return frozenset({record_key(command.args["table"], command.args["record"])})


def _decode_record(raw: bytes) -> tuple[dict[str, Any], bool, bytes | None]:
    try:
        value = codec.decode_stored(raw)
        fields, deleted = value[0], value[1]
        owner = value[2] if len(value) == 3 else None
    except (MalformedError, ValueError, TypeError, IndexError) as exc:
        raise StorageError(f"corrupt rdb record: {exc}") from None
    return fields, deleted, owner


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
    """``owned``: only the creator of this delta may later set or delete the record."""
    if owned:
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
