"""The Engine interface: data models whose commands can be executed and exactly undone.

Theory of operation. An engine is a stateless object; its state lives in the replica's store as
a key/value map private to one engine *instance* of one space (:class:`EngineState`). Executing a
command returns an *undo record* (a CBOR-native value) that the replica stores with the delta;
``undo`` with that record must restore the state byte for byte, because replicas undo and redo
already-executed deltas whenever a late delta belongs before them in the total order.

``validate`` checks a command's shape and types before anything is stored; it must not depend on
state, so every replica reaches the same verdict. ``execute`` must be deterministic: the same
state and command give the same result and undo record on every replica. A command that does not
apply to the current state (for example, editing a deleted record) is a *recorded no-op*: it
returns an undo record saying so, and undo does nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple, Protocol

from p2pspace.core.delta import Command


class EngineState(Protocol):
    """The key/value state of one engine instance, inside the current store transaction."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order."""
        ...


class DeltaContext(NamedTuple):
    """What a command may know about the delta executing it (immutable; built per execution,
    so a tuple rather than a dataclass)."""

    space: bytes
    creator: bytes
    seq: int
    time: int


class Engine(abc.ABC):
    """Base class of every engine. Subclasses set ``kind`` (the name genesis deltas use)."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def validate(self, command: Command) -> None:
        """Raise :class:`~p2pspace.errors.CommandError` unless ``command`` is well-formed."""

    @abc.abstractmethod
    def execute(self, state: EngineState, command: Command, context: DeltaContext) -> Any:
        """Apply ``command`` and return its undo record (CBOR-native)."""

    @abc.abstractmethod
    def undo(self, state: EngineState, command: Command, undo_record: Any) -> None:
        """Reverse a previous ``execute`` of ``command`` that returned ``undo_record``."""

    def footprint(self, command: Command) -> frozenset[bytes] | None:
        """State keys the command reads or writes, or ``None`` if unknown (assume all)."""
        return None
