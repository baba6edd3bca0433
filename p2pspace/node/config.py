"""Every knob of a running node, in one frozen record.

Theory of operation. :class:`NodeConfig` is what :func:`~p2pspace.node.open_node` is told: where
to listen, whom to dial, whether to run mDNS, how durable the store is, and the timings of the
node's own logic (ticks, stall deadlines, dial backoff, stranger grace, the caps on strangers).
It is validated once, when it is made, so a node never starts with a knob that makes no sense; every
collaborator of the node reads its knobs from here instead of from module constants, which is
what lets a test run the same logic with small numbers (a cap of four, a one-second stall).

This module imports no trio: the command line builds a config before it decides to run a node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from p2pspace.core.causal import Limits
from p2pspace.core.checkpoint import CheckpointPolicy
from p2pspace.errors import LocalProtocolError, P2PSpaceError
from p2pspace.sync import invitations
from p2pspace.sync.handshake import MAX_HANDSHAKE_FRAME

DEFAULT_PORT = 7455
# A space created without naming its engines holds the records database and the discussion tool.
DEFAULT_SPACE_ENGINES: Mapping[str, str] = MappingProxyType({"db": "rdb", "discussion": "rdb"})
DURABILITIES = ("full", "normal")
MIN_STRANGER_FRAME = 1024  # a Hello naming a few spaces must fit


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as a tuple; ``default_port`` when ``text`` has none.

    Raises :class:`LocalProtocolError` if it is not such an address (the caller's input).
    """
    try:
        if default_port is not None and ":" not in text:
            return text, default_port
        return invitations.split_address(text)
    except P2PSpaceError:
        raise LocalProtocolError(f"not a HOST:PORT address: {text!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node runs. Every field has the production default; see the module docstring.

    Raises :class:`LocalProtocolError` (the caller's misuse) for a value out of range.
    """

    # -- who and where ---------------------------------------------------------------------
    name: str | None = None  # display name; None keeps the one in the home's config.json
    # Every interface by default: peers on the LAN must reach the node. Tests, the demo and the
    # benchmarks pass a loopback address. None: do not listen (an offline command).
    listen: tuple[str, int] | None = ("0.0.0.0", DEFAULT_PORT)
    interfaces: tuple[str, ...] = ()  # addresses to run mDNS on and advertise (empty: all)
    peers: tuple[tuple[str, int], ...] = ()  # static peers, dialled whenever not connected
    discovery: bool = True  # run mDNS (when no other discovery is given to open_node)
    # -- the store -------------------------------------------------------------------------
    durability: str = "full"  # "full": a returned write survives a power cut; "normal": a crash
    limits: Limits = Limits()
    # When this endpoint, as a space's checkpointer, closes the open window by itself.
    checkpoints: CheckpointPolicy = CheckpointPolicy()
    # Purge each space's closed history by itself once every member has it (DESIGN §12);
    # a space set to keep its history (``space compact --keep-history``) is never purged.
    auto_compact: bool = True
    space_engines: Mapping[str, str] = field(default_factory=lambda: DEFAULT_SPACE_ENGINES)
    # -- timings (seconds) and bounds ------------------------------------------------------
    tick_seconds: float = 0.1  # sessions' periodic duties: acks, gap repair
    housekeeping_ticks: int = 10  # every this many ticks: dial new members, drop idle strangers
    stall_timeout: float = 20.0  # a frame must be complete this long after its first byte
    read_size: int = 256 * 1024  # bytes asked of a stream per read
    backoff_min: float = 0.1  # first retry delay of a dial target (jittered down to half)
    backoff_max: float = 10.0  # the delay doubles up to this
    dial_grace: float = 0.5  # the larger id waits this long before dialling a discovered peer
    jitter_seed: int | None = None  # seeds the backoff jitter (None: from the OS)
    event_queue: int = 1024  # events a subscriber may fall behind before it is dropped
    join_timeout: float = 60.0  # default bound of a join
    progress_every: float = 0.5  # seconds between catch-up progress events during a join
    sponsor_grace: float = 2.0  # seconds a join waits for its inviter's connection to come back
    # Unauthenticated connections (handshakes under way and accepted strangers, see
    # node.strangers): held at once, and from one address (never more than max_inbound);
    # past a cap the idlest is dropped.
    max_inbound: int = 256
    max_inbound_per_address: int = 16
    handshake_rate: float = 10.0  # handshakes begun per second and address, sustained...
    handshake_burst: int = 30  # ...and at once; beyond, an arrival is refused before TLS
    # The largest frame a peer may send until it proves a member (the handshake's 64 KiB at
    # most): Hellos are far smaller, and 32 KiB keeps a stranger that holds a partial frame
    # under 128 KiB of the node's memory, TLS buffers included.
    stranger_frame: int = 32 * 1024
    stranger_grace: float = 10.0  # an accepted connection sharing no space closes after this

    def __post_init__(self) -> None:
        if self.listen is not None:
            host, port = self.listen
            if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port < 65536:
                raise LocalProtocolError(f"listen is (host, port), not {self.listen!r}")
        for host, port in self.peers:
            if not host or not 0 < port < 65536:
                raise LocalProtocolError(f"a peer is (host, port 1-65535), not {(host, port)!r}")
        if self.durability not in DURABILITIES:
            raise LocalProtocolError(
                f"durability is one of {DURABILITIES}, not {self.durability!r}"
            )
        if not self.space_engines:
            raise LocalProtocolError("space_engines names no engine")
        # Read-only, so the record stays frozen all the way down.
        object.__setattr__(self, "space_engines", MappingProxyType(dict(self.space_engines)))
        object.__setattr__(self, "interfaces", tuple(self.interfaces))
        object.__setattr__(self, "peers", tuple(tuple(p) for p in self.peers))
        for knob in ("tick_seconds", "stall_timeout", "backoff_min", "backoff_max"):
            _positive(knob, getattr(self, knob))
        for knob in ("join_timeout", "progress_every", "stranger_grace"):
            _positive(knob, getattr(self, knob))
        if not (isinstance(self.sponsor_grace, int | float) and 0 <= self.sponsor_grace < 3600):
            raise LocalProtocolError("sponsor_grace must be 0 to 3600 seconds")
        if not isinstance(self.handshake_rate, int | float) or not (
            math.isfinite(self.handshake_rate) and self.handshake_rate > 0
        ):
            raise LocalProtocolError(
                f"handshake_rate must be a positive number a second, not {self.handshake_rate!r}"
            )
        if not math.isfinite(self.dial_grace) or self.dial_grace < 0:
            raise LocalProtocolError(f"dial_grace must be >= 0, not {self.dial_grace!r}")
        if self.backoff_min > self.backoff_max:
            raise LocalProtocolError("backoff_min must not exceed backoff_max")
        for knob in (
            "housekeeping_ticks",
            "read_size",
            "event_queue",
            "max_inbound",
            "max_inbound_per_address",
            "handshake_burst",
        ):
            value = getattr(self, knob)
            if not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{knob} must be a positive integer, not {value!r}")
        frame = self.stranger_frame
        if not isinstance(frame, int) or not MIN_STRANGER_FRAME <= frame <= MAX_HANDSHAKE_FRAME:
            raise LocalProtocolError(
                f"stranger_frame must be {MIN_STRANGER_FRAME}-{MAX_HANDSHAKE_FRAME} bytes (a "
                f"peer that proved nothing gets no more than a handshake), not {frame!r}"
            )


def _positive(knob: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise LocalProtocolError(f"{knob} must be a positive number of seconds, not {value!r}")


__all__ = ["DEFAULT_PORT", "DEFAULT_SPACE_ENGINES", "NodeConfig", "parse_hostport"]
