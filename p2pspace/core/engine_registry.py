"""Which engine kinds this process can run: the registry the layers above fill.

Theory of operation. A genesis delta names its engine instances by *kind* (``{"db": "rdb"}``).
A kind that came off the wire is only ever looked up in this table; it never names a module or
class. The core registers nothing itself, so it never depends on an engine implementation:

* engine packages call :func:`register_engine` on their classes when imported (importing
  ``p2pspace.engines`` registers the built-in ``members`` and ``rdb``);
* engines installed as separate distributions declare an entry point in the
  :data:`ENTRY_POINT_GROUP` group (``kind = "package.module:EngineClass"``, as the built-ins
  do). :func:`lookup_engine` loads that group once per process, the first time it is asked for a
  kind nobody registered, so a replica of a space using a third-party engine opens without its
  package having been imported first -- and a process that only uses registered kinds never
  pays for scanning installed distributions.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from p2pspace.core.engine import Engine
from p2pspace.errors import LocalProtocolError

ENTRY_POINT_GROUP = "p2pspace.engines"

_log = logging.getLogger("p2pspace.core.engine_registry")

_E = TypeVar("_E", bound=type[Engine])

_KINDS: dict[str, type[Engine]] = {}
_installed_loaded = False


def register_engine(cls: _E) -> _E:
    """Make engine class ``cls`` available under its ``kind``; returns ``cls`` (a decorator).

    Registering the same class again does nothing. Raises :class:`LocalProtocolError` if ``cls``
    is not an :class:`Engine` subclass with a non-empty ``kind``, or if another class already
    holds that kind (two engines must never run one space's state).
    """
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise LocalProtocolError(f"{cls!r} is not an Engine subclass")
    kind = getattr(cls, "kind", None)
    if type(kind) is not str or not kind:
        raise LocalProtocolError(f"engine class {cls.__qualname__} has no kind name")
    held = _KINDS.get(kind)
    if held is not None and held is not cls:
        raise LocalProtocolError(
            f"engine kind {kind!r} is already registered to {held.__module__}.{held.__qualname__}"
        )
    _KINDS[kind] = cls
    return cls


def lookup_engine(kind: str) -> type[Engine] | None:
    """The engine class registered for ``kind``, or None if no registered or installed engine
    provides it (installed entry points are loaded on the first miss)."""
    cls = _KINDS.get(kind)
    if cls is None and not _installed_loaded:
        load_installed_engines()
        cls = _KINDS.get(kind)
    return cls


def registered_kinds() -> frozenset[str]:
    return frozenset(_KINDS)


def load_installed_engines() -> list[str]:
    """Load and register every engine declared in the :data:`ENTRY_POINT_GROUP` entry points.

    Returns the kinds registered by this call. An entry point that fails to load, names no
    Engine class, or whose name differs from the class's ``kind`` is logged and skipped: one
    broken plugin must not keep a node from opening its other spaces (a space that needs the
    broken kind then fails to open with the unknown-kind error).
    """
    global _installed_loaded
    _installed_loaded = True
    # Imported here: scanning installed distributions is only needed on a registry miss.
    from importlib.metadata import entry_points

    added: list[str] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = point.load()
        except Exception:
            _log.exception("engine entry point %r (%s) failed to load", point.name, point.value)
            continue
        if getattr(cls, "kind", None) != point.name:
            _log.error("engine entry point %r does not name an engine of that kind", point.name)
            continue
        try:
            known = point.name in _KINDS
            register_engine(cls)
        except LocalProtocolError as exc:
            _log.error("engine entry point %r skipped: %s", point.name, exc)
            continue
        if not known:
            added.append(point.name)
    return added
