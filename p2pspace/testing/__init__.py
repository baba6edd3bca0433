"""Fakes that ship with p2pspace, for its own tests and for applications' and tools' tests.

What this layer decides: how p2pspace runs without a real network -- the seeded simulated
network with faults (:mod:`.simnet`), in-process session links (:mod:`.loopback`), an in-process
network and a hand-driven discovery for real nodes (:mod:`.memory_network`,
:mod:`.fake_discovery`, :mod:`.nodes`) -- and what every engine must satisfy
(:func:`check_engine`, :mod:`.engine_contract`). It may import every layer but the app.

The node fakes -- :class:`MemoryNetwork`, :class:`FakeDiscovery`, :func:`open_test_node`,
:class:`ManualClock` -- load on first use, so importing this package does not pull in trio.
"""

import importlib
from typing import TYPE_CHECKING, Any

from p2pspace.testing.engine_contract import (
    EngineContractError,
    EngineContractReport,
    MemoryEngineState,
    check_engine,
)
from p2pspace.testing.simnet import (
    FAULT_KINDS,
    Convergence,
    Faults,
    SimNetwork,
    SimulationReport,
    causality_violation,
    run_simulation,
)

if TYPE_CHECKING:
    from p2pspace.testing.fake_discovery import FakeDiscovery
    from p2pspace.testing.memory_network import ConnectAttempt, MemoryNetwork
    from p2pspace.testing.nodes import ManualClock, open_test_node

_NODE_FAKES = {
    "ConnectAttempt": "p2pspace.testing.memory_network",
    "FakeDiscovery": "p2pspace.testing.fake_discovery",
    "ManualClock": "p2pspace.testing.nodes",
    "MemoryNetwork": "p2pspace.testing.memory_network",
    "open_test_node": "p2pspace.testing.nodes",
}


def __getattr__(name: str) -> Any:
    module = _NODE_FAKES.get(name)
    if module is None:
        raise AttributeError(f"module 'p2pspace.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FAULT_KINDS",
    "ConnectAttempt",
    "Convergence",
    "EngineContractError",
    "EngineContractReport",
    "FakeDiscovery",
    "Faults",
    "ManualClock",
    "MemoryEngineState",
    "MemoryNetwork",
    "SimNetwork",
    "SimulationReport",
    "causality_violation",
    "check_engine",
    "open_test_node",
    "run_simulation",
]
