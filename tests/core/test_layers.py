"""The sans-IO core imports no I/O library (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

CORE_MODULES = [
    "p2pspace.core.identity",
    "p2pspace.core.codec",
    "p2pspace.core.delta",
    "p2pspace.core.causal",
    "p2pspace.core.replica",
    "p2pspace.core.store",
    "p2pspace.sync.session",
    "p2pspace.sync.messages",
    "p2pspace.sync.framing",
    "p2pspace.sync.endpoint",
    "p2pspace.core.engine",
    "p2pspace.core.registry",
    "p2pspace.errors",
    "p2pspace.engines.rdb",
    "p2pspace.engines.members",
    "p2pspace.testing.simnet",
    "p2pspace.sync.handshake",
    "p2pspace.sync.invitations",
    "p2pspace.sync.syncstate",
]
FORBIDDEN = ["trio", "socket", "ssl", "zeroconf", "asyncio", "selectors"]

PROBE = """
import importlib, json, sys
modules, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
already = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
for name in modules:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"already": already, "loaded": loaded, "imported": sorted(
    m for m in modules if m in sys.modules)}))
"""


def _probe(modules: list[str], forbidden: list[str]) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, json.dumps(modules), json.dumps(forbidden)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_core_modules_import_no_io_library() -> None:
    result = _probe(CORE_MODULES, FORBIDDEN)
    assert result["imported"] == sorted(CORE_MODULES)
    # The interpreter itself starts clean, so anything loaded came from the core.
    assert result["already"] == []
    assert result["loaded"] == [], f"core modules pulled in I/O libraries: {result['loaded']}"


def test_the_probe_detects_io_imports() -> None:
    # The same probe does see an I/O library when one is imported (here: through trio).
    result = _probe(["trio"], FORBIDDEN)
    assert "trio" in result["loaded"]
    assert "socket" in result["loaded"]
