"""What can go wrong in a simulated run: the fault kinds and how often each strikes.

Network faults act on frames, links and endpoints (:mod:`p2pspace.testing.simnet`); member
faults make one endpoint a byzantine member (:mod:`p2pspace.testing.hostile`). The names are
what ``p2pspace simulate --faults`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2pspace.testing.hostile import ATTACKS

NETWORK_FAULTS = ("drop", "dup", "reorder", "partition", "crash")
MEMBER_FAULTS = ("hostile", "equivocate")
FAULT_KINDS = NETWORK_FAULTS + MEMBER_FAULTS


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    partition: bool = False
    crash: bool = False
    hostile: bool = False
    equivocate: bool = False

    @property
    def byzantine(self) -> bool:
        """True if one endpoint is a byzantine member."""
        return self.hostile or self.equivocate

    def attacks(self) -> tuple[str, ...]:
        """The attacks the byzantine member chooses from: equivocation with ``equivocate``,
        the others with ``hostile``."""
        return tuple(a for a in ATTACKS if (self.equivocate if a == "equivocate" else self.hostile))

    @classmethod
    def of(cls, kinds: Iterable[str]) -> Faults:
        """The faults named (see :data:`FAULT_KINDS`); ValueError for an unknown name."""
        chosen = set(kinds)
        unknown = chosen - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        return cls(
            drop=0.05 if "drop" in chosen else 0.0,
            dup=0.05 if "dup" in chosen else 0.0,
            reorder=0.1 if "reorder" in chosen else 0.0,
            partition="partition" in chosen,
            crash="crash" in chosen,
            hostile="hostile" in chosen,
            equivocate="equivocate" in chosen,
        )
