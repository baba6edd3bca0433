"""Fakes that ship with p2pspace: the simulated network, usable by applications' tests too."""

from p2pspace.testing.simnet import (
    FAULT_KINDS,
    Convergence,
    Faults,
    SimNetwork,
    SimulationReport,
    causality_violation,
    run_simulation,
)

__all__ = [
    "FAULT_KINDS",
    "Convergence",
    "Faults",
    "SimNetwork",
    "SimulationReport",
    "causality_violation",
    "run_simulation",
]
