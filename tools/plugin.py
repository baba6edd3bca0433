"""Tools as installable plugins: what a tool declares, and how installed tools are found.

Theory of operation. A tool is a Python package that declares an entry point in the group
:data:`TOOLS_GROUP` naming a :class:`ToolPlugin` -- in its ``pyproject.toml``::

    [project.entry-points."p2pspace.tools"]
    tasks = "p2pspace_tasks:PLUGIN"

A plugin says which engine instances it needs in a space (``engines``: a space created with
``--tool NAME`` gets them in its genesis; a space holding them all has the tool), how to open
the tool on one space's replica (``open``, given a :class:`ToolContext`: the replica to read, a
commit callable to write, the clock and what peers acknowledged), and, as ``"module:attribute"``
texts imported only when they are needed, the routes of its HTTP API, the package folder of
its web page and the entry of its command-line commands. A running node loads every installed
plugin when it starts (:func:`installed_plugins`), opens each on every space that fits it, and
serves the plugin's API under ``/tools/NAME/api/`` and its page under ``/tools/NAME/``; the
command line runs ``p2pspace tool NAME ...`` through it. The discussion tool is a plugin like
any other (declared in p2pspace's own ``pyproject.toml``).

A plugin that cannot be loaded -- it fails to import, is not a :class:`ToolPlugin`, or repeats
a name already taken -- is logged and left out, so one broken tool does not take the node down.
This module is part of the tools layer: it imports the core, never the node or the app.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from p2pspace.core.delta import Command, Delta
from p2pspace.core.membership import INSTANCE as MEMBERS
from p2pspace.core.replica import Replica
from p2pspace.errors import LocalProtocolError

TOOLS_GROUP = "p2pspace.tools"
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The kinds of file a tool's page may be made of, by name ending.
ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

log = logging.getLogger("p2pspace.tools")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """What a tool gets to work on one space."""

    replica: Replica  # to read (its engines' state, its members)
    commit: Callable[[Sequence[Command]], Delta]  # to write: one delta of the commands
    now: Callable[[], int]  # the node's clock, ms
    acks: Callable[[], Mapping[bytes, Mapping[bytes, int]]]  # what each member acknowledged


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolPlugin:
    """What an installed tool declares (see the module's text)."""

    name: str  # lower case, digits and dashes: in URLs and on the command line
    title: str  # what people read ("Tasks")
    engines: Mapping[str, str]  # engine instance -> kind, that the tool keeps its records in
    open: Callable[[ToolContext], Any]  # the tool on one space
    routes: str = ""  # "module:callable": the API's route provider (given the route context)
    page: str = ""  # "package": a folder of files (importlib.resources) with index.html
    cli: str = ""  # "module:callable": main(argv, client) -> exit status
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise LocalProtocolError(
                f"a tool's name is 1-32 lower-case letters, digits and dashes, not {self.name!r}"
            )
        if not self.engines:
            raise LocalProtocolError(f"the tool {self.name!r} names no engine instance")
        if MEMBERS in self.engines:
            raise LocalProtocolError(
                f"the tool {self.name!r} names the members instance: a tool manages no members"
            )

    def fits(self, engine_kinds: Mapping[str, str]) -> bool:
        """Whether a space whose engine instances are ``engine_kinds`` holds this tool."""
        return all(engine_kinds.get(i) == kind for i, kind in self.engines.items())

    def load(self, spec: str) -> Any:
        """The object ``spec`` (``"module:attribute"``) names, imported now.

        Raises :class:`LocalProtocolError` if it cannot be imported.
        """
        module, _sep, attribute = spec.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split(".") if attribute else ():
                found = getattr(found, part)
        except Exception as exc:
            raise LocalProtocolError(
                f"the tool {self.name!r}: cannot load {spec!r}: {exc!r}"
            ) from exc
        return found


def load_plugins(points: Iterable[EntryPoint]) -> dict[str, ToolPlugin]:
    """The plugins ``points`` name, by name; a broken one is logged and left out, and so is one
    that repeats a name or an engine instance another tool took first (p2pspace's own tools
    first, then by name): no tool writes another's records, and no package installed later
    replaces the discussion by naming itself so."""
    plugins: dict[str, ToolPlugin] = {}
    owners: dict[str, str] = {}  # engine instance -> the tool that keeps its records there

    def order(point: EntryPoint) -> tuple[bool, str, str]:
        dist = getattr(point, "dist", None)
        # Installed: its distribution says; made by hand (no distribution): its module does.
        ours = dist.name == "p2pspace" if dist is not None else point.value.startswith("p2pspace.")
        return (not ours, point.name, point.value)

    for point in sorted(points, key=order):
        try:
            plugin = point.load()
        except Exception:
            log.exception("the tool %r (%s) failed to load; left out", point.name, point.value)
            continue
        if not isinstance(plugin, ToolPlugin):
            log.error("the tool %r (%s) is not a ToolPlugin; left out", point.name, point.value)
            continue
        if plugin.name != point.name or plugin.name in plugins:
            log.error(
                "the tool %r (%s): its name is %r, or is taken; left out",
                point.name,
                point.value,
                plugin.name,
            )
            continue
        shared = sorted(i for i in plugin.engines if i in owners)
        if shared:
            log.error(
                "the tool %r (%s) would write to %s, which the tool %r keeps; left out",
                point.name,
                point.value,
                ", ".join(shared),
                owners[shared[0]],
            )
            continue
        owners.update(dict.fromkeys(plugin.engines, plugin.name))
        plugins[plugin.name] = plugin
    return plugins


def installed_plugins() -> dict[str, ToolPlugin]:
    """Every tool installed in this Python environment (the :data:`TOOLS_GROUP` entry points)."""
    return load_plugins(entry_points(group=TOOLS_GROUP))


def installed_plugin(name: str) -> ToolPlugin | None:
    """The installed tool ``name`` alone (the command line loads no other), or None."""
    return load_plugins(entry_points(group=TOOLS_GROUP, name=name)).get(name)


def asset_type(name: str) -> str | None:
    """The content type a page file named ``name`` is served with, or None if it is not one
    (a name with a path in it, a hidden file, an unknown kind)."""
    if not ASSET_NAME.fullmatch(name):
        return None
    suffix = name[name.rfind(".") :] if "." in name else ""
    return ASSET_TYPES.get(suffix)


__all__ = [
    "TOOLS_GROUP",
    "ToolContext",
    "ToolPlugin",
    "asset_type",
    "installed_plugin",
    "installed_plugins",
    "load_plugins",
]
