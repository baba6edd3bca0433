"""The closed table of engine kinds a genesis delta may name.

A kind name that came off the wire is only ever looked up here; it never names a module or class.
"""

from __future__ import annotations

from p2pspace.core.engine import Engine
from p2pspace.engines.members import MembersEngine
from p2pspace.engines.rdb import RdbEngine

ENGINE_KINDS: dict[str, type[Engine]] = {
    MembersEngine.kind: MembersEngine,
    RdbEngine.kind: RdbEngine,
}
