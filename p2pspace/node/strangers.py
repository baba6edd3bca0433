"""Which unauthenticated connections a node holds, and which it drops first.

Theory of operation. Until its peer proves a member, a connection is *unproven*: a TLS handshake
under way, or an authenticated connection that shares no space (its key cost the peer nothing).
Anyone who can reach the port can open such connections, so they are held within caps, the idea
of OpenSSH's ``MaxStartups``:

* at most ``max_total`` at once, and at most ``max_per_address`` from one address. An arrival
  over a cap is let in, and the unproven connection *idle the longest* -- its last byte came
  earliest -- is dropped to make room: one of the same address when that address's cap is the
  one reached, else any. Idle sockets, the cheapest attack, go first; a handshake that is moving
  goes last, so honest peers and joiners get through while a thousand idle sockets knock, and
  one address can only push out its own.
* handshakes begin at most ``rate`` a second per address, a token bucket holding ``burst``:
  beyond that an arrival is refused before TLS starts, so no address makes the node spend its
  CPU on key exchanges. Buckets are kept for the ``max_addresses`` addresses seen most recently
  (memory stays bounded whatever the number of addresses; a forgotten one starts full again).

An address is the host a connection came from (an IPv4-mapped IPv6 address counts as its IPv4
one, another IPv6 address as its /64: one host usually holds a whole /64). The book is
bookkeeping only: the caller passes the time in and closes what it is told to;
nothing here awaits, reads a clock or touches a socket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pspace.errors import LocalProtocolError

MAX_ADDRESSES = 4096


def address_of(host: str) -> str:
    """The address the per-address cap and rate count ``host`` under."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host  # not an IP address (an in-process network's host name): itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not (ip.is_loopback or ip.is_link_local):
            # One host usually holds a whole /64 of a routed prefix (privacy addresses):
            # count it as one. Link-local peers all share fe80::/64, so not those.
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(slots=True, kw_only=True, eq=False)
class Unproven:
    """One connection held while its peer has proven nothing."""

    address: str  # as :func:`address_of` gives it
    arrived: float
    active: float  # when its last bytes arrived (the caller moves it forward)
    serial: int  # arrival order: of two equally idle connections the older goes first


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """What :meth:`StrangerBook.arrive` decided about one arrival."""

    admitted: Unproven | None  # None: refused, close it before TLS
    dropped: Unproven | None = None  # a held connection to close to make room
    cap: str = ""  # which cap made room: "address" or "total"


@dataclass(slots=True, kw_only=True)
class _Bucket:
    tokens: float
    updated: float


class StrangerBook:
    """The unproven connections held, and the handshake rate of every address seen lately.

    Raises :class:`LocalProtocolError` for caps or a rate that make no sense.
    """

    def __init__(
        self,
        *,
        max_total: int,
        max_per_address: int,
        rate: float,
        burst: int,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if not 1 <= max_per_address <= max_total or rate <= 0 or burst < 1 or max_addresses < 1:
            raise LocalProtocolError("stranger caps, rate and burst must be positive")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.rate = rate
        self.burst = burst
        self._max_addresses = max_addresses
        self._held: dict[Unproven, None] = {}  # in arrival order
        self._per_address: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}  # least recently used first
        self._serial = 0
        self.admitted = 0  # arrivals held
        self.refused = 0  # arrivals refused for the handshake rate
        self.dropped = 0  # held connections dropped to make room

    def __len__(self) -> int:
        return len(self._held)

    def held_from(self, host: str) -> int:
        """Unproven connections held from ``host``'s address."""
        return self._per_address.get(address_of(host), 0)

    def arrive(self, host: str, now: float) -> Arrival:
        """A connection from ``host`` arrived at ``now``: refuse it (the address is over its
        handshake rate), or hold it, naming the connection to drop if a cap was reached (it is
        no longer held when this returns)."""
        address = address_of(host)
        if not self._take_token(address, now):
            self.refused += 1
            return Arrival(admitted=None)
        dropped, cap = None, ""
        if self._per_address.get(address, 0) >= self.max_per_address:
            dropped, cap = self._idlest(address), "address"
        elif len(self._held) >= self.max_total:
            dropped, cap = self._idlest(None), "total"
        if dropped is not None:
            self.leave(dropped)
            self.dropped += 1
        self._serial += 1
        self.admitted += 1
        entry = Unproven(address=address, arrived=now, active=now, serial=self._serial)
        self._held[entry] = None
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return Arrival(admitted=entry, dropped=dropped, cap=cap)

    def leave(self, entry: Unproven) -> None:
        """``entry`` is no longer held: it proved a member, failed or closed. Idempotent."""
        if entry not in self._held:
            return
        del self._held[entry]
        left = self._per_address[entry.address] - 1
        if left:
            self._per_address[entry.address] = left
        else:
            del self._per_address[entry.address]

    def _idlest(self, address: str | None) -> Unproven | None:
        candidates = [e for e in self._held if address is None or e.address == address]
        return min(candidates, key=lambda e: (e.active, e.serial), default=None)

    def _take_token(self, address: str, now: float) -> bool:
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            while len(self._buckets) >= self._max_addresses:
                del self._buckets[next(iter(self._buckets))]  # the least recently used
        else:
            refill = max(0.0, now - bucket.updated) * self.rate
            bucket.tokens = min(float(self.burst), bucket.tokens + refill)
            bucket.updated = now
        self._buckets[address] = bucket  # the most recently used goes last
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


__all__ = ["MAX_ADDRESSES", "Arrival", "StrangerBook", "Unproven", "address_of"]
