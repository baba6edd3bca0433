"""The simulated network: N endpoints in one process under a seeded fault scheduler.

Theory of operation. Each simulated endpoint is a real :class:`~p2pspace.sync.endpoint.Endpoint`
with its own home folder and on-disk SQLite store; only the network and the clock are simulated. A
discrete-event loop with a virtual millisecond clock delivers the frames each
:class:`~p2pspace.sync.session.Session` produces to its peer session after a random delay. Faults
(:mod:`p2pspace.testing.faults`), all drawn from one ``random.Random(seed)``:

* ``drop`` -- a frame is lost; ``dup`` -- a frame is delivered twice;
* ``reorder`` -- a frame gets a large extra delay, so later frames overtake it;
* ``partition`` -- the endpoints split in two groups for a while; connections across break and
  cannot be re-established until the partition heals;
* ``crash`` -- an endpoint dies abruptly (its store is closed without any clean-up, in-memory
  pending and staged deltas are lost) and restarts later by reopening its store;
* ``hostile`` -- the last endpoint is a byzantine member (a participant, or in some seeds a
  guest; in some seeds the space's creator removes it midway): besides ordinary writes it
  backdates deltas, squats record ids others use and tries every managing action, handing
  what its own replica would refuse straight to its neighbours (:mod:`.hostile`);
* ``equivocate`` -- the byzantine member (the same endpoint) also signs two different deltas
  with one id and gives one copy to one neighbour and the other to the rest.

Sessions on simulated links are ``lossy`` (they retransmit and tolerate reordering). After
:meth:`SimNetwork.heal` stops all faults, :meth:`SimNetwork.run_until_quiet` runs until every
replica has executed the same deltas; :meth:`SimNetwork.check_convergence` then compares order
and state digests and checks that every replica's executed order respects every dependency.
The byzantine member's own replica is held to nothing: only honest replicas are compared, only
protocol errors between two honest endpoints count against convergence, and a delta of its own
that it left waiting forever in an honest pending set does not keep the network from settling.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time as _time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pspace.core.causal import Limits
from p2pspace.core.delta import Command
from p2pspace.core.replica import Replica
from p2pspace.engines import members as members_engine
from p2pspace.engines import rdb
from p2pspace.errors import RemoteProtocolError
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.session import Session
from p2pspace.testing.convergence import Convergence as Convergence
from p2pspace.testing.convergence import causality_violation as causality_violation
from p2pspace.testing.convergence import compare
from p2pspace.testing.faults import FAULT_KINDS as FAULT_KINDS
from p2pspace.testing.faults import MEMBER_FAULTS as MEMBER_FAULTS
from p2pspace.testing.faults import NETWORK_FAULTS as NETWORK_FAULTS
from p2pspace.testing.faults import Faults as Faults
from p2pspace.testing.hostile import Byzantine

TICK_MS = 50
NO_FAULTS = Faults()


@dataclass(slots=True)
class _Conn:
    a: int
    b: int
    gen: int
    sessions: dict[int, Session]


@dataclass(slots=True, kw_only=True)
class SimStats:
    frames: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    partitions: int = 0
    deltas_created: int = 0
    hostile_errors: int = 0  # protocol errors on sessions with the byzantine member


@dataclass(slots=True)
class SimEndpoint:
    index: int
    home: Path
    endpoint: Endpoint | None
    undo_counts: dict[Any, int] = field(default_factory=dict)


class SimNetwork:
    """N simulated endpoints sharing one space. See the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        endpoints: int,
        seed: int,
        faults: Faults = NO_FAULTS,
        topology: str = "mesh",
        durability: str = "normal",
        limits: Limits | None = None,
    ) -> None:
        if endpoints < 1:
            raise ValueError("at least one endpoint")
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.now = 0
        self.stats = SimStats()
        self.protocol_errors: list[str] = []
        self._creates_due = 0
        self._events: list[tuple[int, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._gen = itertools.count(1)
        self._durability = durability
        self._limits = limits
        self.nodes: list[SimEndpoint] = []
        for i in range(endpoints):
            home = root / f"endpoint-{i}"
            ep = open_endpoint(
                home,
                seed=f"sim-{seed}-{i}".encode(),
                durability=durability,
                limits=limits,
                name=f"e{i}",
            )
            self.nodes.append(SimEndpoint(index=i, home=home, endpoint=ep))
        self.links: set[tuple[int, int]] = self._topology(endpoints, topology)
        self.conns: dict[tuple[int, int], _Conn] = {}
        # The same connections by generation and per endpoint: a delivery or a flush looks up
        # its own, not every connection of the network (50 endpoints have 1,225 in a mesh).
        self._by_gen: dict[int, _Conn] = {}
        self._conns_of: dict[int, dict[int, _Conn]] = {i: {} for i in range(endpoints)}
        self._conn_of_session: dict[Session, _Conn] = {}  # looked up, never iterated
        self._partition: tuple[frozenset[int], frozenset[int]] | None = None
        self._faults_on = True
        self.space_id = b""
        # The byzantine member, if any: the last endpoint (see the module docstring).
        self.byzantine: Byzantine | None = None
        if faults.byzantine and endpoints > 1:
            self.byzantine = Byzantine.draw(
                self.rng,
                seed=seed,
                index=endpoints - 1,
                identity=self.endpoint(endpoints - 1).identity,
                victim=self.endpoint(0).endpoint_id,
                attacks=faults.attacks(),
            )
        byzantine = None if self.byzantine is None else self.byzantine.index
        self.honest = [i for i in range(endpoints) if i != byzantine]
        self._setup_space()
        for i in range(endpoints):
            self.schedule(self.rng.randint(1, TICK_MS), self._tick_event(i))
        for a, b in sorted(self.links):
            self.schedule(self.rng.randint(0, 20), self._connect_event(a, b))

    # -- setup --------------------------------------------------------------------------------

    def _topology(self, n: int, kind: str) -> set[tuple[int, int]]:
        pairs = {(a, b) for a in range(n) for b in range(a + 1, n)}
        if kind == "line":
            return {(i, i + 1) for i in range(n - 1)}  # deltas cross every endpoint between
        if kind == "mesh" or n <= 3:
            return pairs
        ring = {(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)}
        extra = {p for p in sorted(pairs - ring) if self.rng.random() < 0.4}
        return ring | extra

    def _setup_space(self) -> None:
        first = self.endpoint(0)
        replica = first.create_space("sim", time=self.now, nonce=self.rng.randbytes(16))
        self.space_id = replica.space_id
        adds: list[Command] = []
        for node in self.nodes[1:]:
            assert node.endpoint is not None
            ident = node.endpoint.identity
            role = "participant"
            if self.byzantine is not None and node.index == self.byzantine.index:
                role = self.byzantine.role
            adds.append(
                members_engine.add_command(
                    member_id=ident.endpoint_id,
                    key=ident.public_key,
                    name=f"e{node.index}",
                    role=role,
                )
            )
        if adds:
            replica.create(adds, time=self.now)
        replica.create([rdb.create("t", f"r{k}", {"v": 0}) for k in range(8)], time=self.now)
        genesis = replica.genesis.wire()
        everyone = [n.endpoint.endpoint_id for n in self.nodes if n.endpoint is not None]
        for node in self.nodes[1:]:
            assert node.endpoint is not None
            # Every endpoint was added up front: any of them may bring a joiner its grant.
            node.endpoint.join_space(genesis, sponsors=everyone)
        for node in self.nodes:
            self._watch(node)

    def _watch(self, node: SimEndpoint) -> None:
        assert node.endpoint is not None
        replica = node.endpoint.replica(self.space_id)

        def count(ids: Any) -> None:
            for did in ids:
                node.undo_counts[did] = node.undo_counts.get(did, 0) + 1

        replica.undo_listener = count

    def endpoint(self, i: int) -> Endpoint:
        ep = self.nodes[i].endpoint
        if ep is None:
            raise RuntimeError(f"endpoint {i} is down")
        return ep

    def replica(self, i: int) -> Replica:
        return self.endpoint(i).replica(self.space_id)

    # -- event loop ---------------------------------------------------------------------------

    def schedule(self, delay: int, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` virtual milliseconds from now."""
        heapq.heappush(self._events, (self.now + max(0, delay), next(self._counter), action))

    def step(self) -> bool:
        if not self._events:
            return False
        at, _n, action = heapq.heappop(self._events)
        self.now = max(self.now, at)
        action()
        return True

    def run_for(self, ms: int) -> None:
        end = self.now + ms
        while self._events and self._events[0][0] <= end:
            self.step()
        self.now = max(self.now, end)

    def flush(self, i: int) -> None:
        """Send what endpoint ``i``'s sessions have queued (each frame meets the faults)."""
        for conn in list(self._conns_of[i].values()):
            if conn.sessions[i].has_output:
                self._flush_conn(conn, i)

    def _flush_news(self, i: int, fed: Session) -> None:
        """After a delivery to endpoint ``i`` on ``fed``: send what that session and those
        the endpoint handed deltas have queued (anything else waits for ``i``'s next tick,
        which flushes everything -- 50 endpoints would otherwise poll 49 sessions a frame)."""
        endpoint = self.nodes[i].endpoint
        handed = [] if endpoint is None else endpoint.take_handed()
        for session in [fed, *handed]:
            conn = self._conn_of_session.get(session)
            if conn is not None and session.has_output:
                self._flush_conn(conn, i)

    def _flush_conn(self, conn: _Conn, i: int) -> None:
        session = conn.sessions[i]
        other = conn.b if i == conn.a else conn.a
        frames = session.frames_to_send()
        for data in frames:
            self.stats.frames += 1
            copies = 1
            if self._faults_on and self.rng.random() < self.faults.drop:
                self.stats.dropped += 1
                continue
            if self._faults_on and self.rng.random() < self.faults.dup:
                self.stats.duplicated += 1
                copies = 2
            for _ in range(copies):
                delay = self.rng.randint(1, 8)
                if self._faults_on and self.rng.random() < self.faults.reorder:
                    delay += self.rng.randint(20, 150)
                self.schedule(delay, self._deliver_event(conn.gen, other, data))
        if session.closed:
            self._break(conn)

    def _deliver_event(self, gen: int, to: int, data: bytes) -> Callable[[], None]:
        def deliver() -> None:
            conn = self._conn_by_gen(gen)
            if conn is None or to not in conn.sessions:
                return
            session = conn.sessions[to]
            endpoint = self.nodes[to].endpoint
            assert endpoint is not None  # a crash closes its connections first
            try:
                endpoint.receive_data(session, data)
            except RemoteProtocolError as exc:
                if self.honest_count(conn.a, conn.b) < 2:
                    self.stats.hostile_errors += 1  # what it sends, or answers to it
                else:
                    self.protocol_errors.append(f"endpoint {to}: {type(exc).__name__}: {exc}")
            self._flush_news(to, session)
            if session.closed:
                self._break(conn)

        return deliver

    def inject(self, src: int, dst: int, data: bytes) -> None:
        """Deliver ``data`` to ``dst`` as if endpoint ``src`` had sent it on their connection,
        now and fault-free, ahead of what their sessions send (a hostile peer's frames).
        Nothing happens if the two are not connected."""
        conn = self.conns.get((min(src, dst), max(src, dst)))
        if conn is not None:
            self.schedule(0, self._deliver_event(conn.gen, dst, data))

    def neighbours(self, i: int) -> list[int]:
        """The endpoints ``i`` is connected to now."""
        return sorted(c.b if c.a == i else c.a for c in self._conns_of[i].values())

    def live_endpoint(self, i: int) -> Endpoint | None:
        """Endpoint ``i``, or None while it is down."""
        return self.nodes[i].endpoint

    @property
    def faults_active(self) -> bool:
        return self._faults_on

    def honest_count(self, *indexes: int) -> int:
        """How many of ``indexes`` are honest endpoints."""
        return sum(1 for i in indexes if self.byzantine is None or i != self.byzantine.index)

    def _conn_by_gen(self, gen: int) -> _Conn | None:
        return self._by_gen.get(gen)

    def _tick_event(self, i: int) -> Callable[[], None]:
        def tick() -> None:
            node = self.nodes[i]
            if node.endpoint is not None:
                node.endpoint.tick()
                self.flush(i)
            self.schedule(TICK_MS, self._tick_event(i))

        return tick

    # -- connections --------------------------------------------------------------------------

    def _can_connect(self, a: int, b: int) -> bool:
        if self.nodes[a].endpoint is None or self.nodes[b].endpoint is None:
            return False
        if self._partition is not None:
            left, _right = self._partition
            if (a in left) != (b in left):
                return False
        return True

    def _connect_event(self, a: int, b: int) -> Callable[[], None]:
        def connect() -> None:
            if (a, b) in self.conns:
                return
            if not self._can_connect(a, b):
                self.schedule(self.rng.randint(100, 300), self._connect_event(a, b))
                return
            ea, eb = self.endpoint(a), self.endpoint(b)
            sa = ea.open_session(expected_peer=eb.endpoint_id, lossy=True)
            sb = eb.open_session(expected_peer=ea.endpoint_id, lossy=True)
            conn = _Conn(a=a, b=b, gen=next(self._gen), sessions={a: sa, b: sb})
            self.conns[(a, b)] = conn
            self._by_gen[conn.gen] = conn
            self._conns_of[a][conn.gen] = conn
            self._conns_of[b][conn.gen] = conn
            self._conn_of_session[sa] = self._conn_of_session[sb] = conn
            self._flush_conn(conn, a)
            self._flush_conn(conn, b)

        return connect

    def _break(self, conn: _Conn) -> None:
        key = (conn.a, conn.b)
        if self.conns.get(key) is not conn:
            return
        del self.conns[key]
        del self._by_gen[conn.gen]
        del self._conns_of[conn.a][conn.gen]
        del self._conns_of[conn.b][conn.gen]
        for session in conn.sessions.values():
            self._conn_of_session.pop(session, None)
        for i, session in conn.sessions.items():
            node = self.nodes[i]
            if node.endpoint is not None:
                node.endpoint.close_session(session)
        self.schedule(self.rng.randint(50, 250), self._connect_event(conn.a, conn.b))

    # -- faults -------------------------------------------------------------------------------

    def crash(self, i: int, *, restart_after: int | None = None) -> None:
        node = self.nodes[i]
        if node.endpoint is None:
            return
        self.stats.crashes += 1
        for conn in list(self._conns_of[i].values()):
            self._break(conn)
        # Abrupt: the store connection is closed with nothing flushed from memory.
        node.endpoint.store.close()
        node.endpoint = None
        if restart_after is not None:
            self.schedule(restart_after, lambda: self.restart(i))

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.endpoint is not None:
            return
        node.endpoint = open_endpoint(
            node.home, durability=self._durability, limits=self._limits, name=f"e{i}"
        )
        self._watch(node)

    def partition(self, duration: int) -> None:
        ids = list(range(len(self.nodes)))
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, max(1, len(ids) - 1))
        left = frozenset(ids[:cut])
        self._partition = (left, frozenset(ids[cut:]))
        self.stats.partitions += 1
        for conn in list(self.conns.values()):
            if (conn.a in left) != (conn.b in left):
                self._break(conn)
        self.schedule(duration, self._end_partition)

    def _end_partition(self) -> None:
        self._partition = None

    def heal(self) -> None:
        """Stop every fault: links deliver reliably, crashed endpoints restart."""
        self._faults_on = False
        self._partition = None
        for node in self.nodes:
            if node.endpoint is None:
                self.restart(node.index)
        for a, b in sorted(self.links):
            if (a, b) not in self.conns:
                self.schedule(self.rng.randint(0, 20), self._connect_event(a, b))

    # -- workload -----------------------------------------------------------------------------

    def random_commands(self, i: int) -> list[Command]:
        roll = self.rng.random()
        k = self.rng.randrange(8)
        if roll < 0.7:
            return [
                rdb.set_fields("t", f"r{k}", {"v": self.rng.randrange(1000), f"e{i}": self.now})
            ]
        if roll < 0.85:
            return [rdb.create("t", f"n{i}-{self.now}-{self.rng.randrange(10**6)}", {"by": i})]
        if roll < 0.9:
            return [rdb.delete("t", f"r{k}")]
        return [
            rdb.set_fields("t", f"r{k}", {"w": self.rng.randrange(100)}),
            rdb.set_fields("t", f"r{(k + 1) % 8}", {"w": self.rng.randrange(100)}),
        ]

    def schedule_workload(self, deltas: int, *, over_ms: int = 5000) -> None:
        """Spread ``deltas`` random rdb deltas over the honest endpoints and ``over_ms`` of
        time."""
        for _ in range(deltas):
            if self.byzantine is None:
                i = self.rng.randrange(len(self.nodes))
            else:
                i = self.rng.choice(self.honest)
            self._creates_due += 1
            self.schedule(self.rng.randint(0, over_ms), self._create_event(i))

    def schedule_hostile(self, turns: int, *, over_ms: int = 5000) -> None:
        """Spread ``turns`` moves of the byzantine member (if any) over ``over_ms``."""
        if self.byzantine is not None:
            self.byzantine.schedule(self, turns, over_ms=over_ms)

    def schedule_faults(self, *, over_ms: int = 5000) -> None:
        n = len(self.nodes)
        if self.faults.partition and n > 1:
            for _ in range(self.rng.randint(1, 3)):
                at = self.rng.randint(0, over_ms)
                dur = self.rng.randint(200, 1500)
                self.schedule(at, self._partition_event(dur))
        if self.faults.crash:
            for _ in range(self.rng.randint(1, 3)):
                at = self.rng.randint(0, over_ms)
                who = self.rng.randrange(n)
                back = self.rng.randint(100, 1500)
                self.schedule(at, self._crash_event(who, back))

    def _partition_event(self, duration: int) -> Callable[[], None]:
        def split() -> None:
            if self._faults_on:
                self.partition(duration)

        return split

    def _crash_event(self, who: int, back: int) -> Callable[[], None]:
        def crash() -> None:
            if self._faults_on:
                self.crash(who, restart_after=back)

        return crash

    def _create_event(self, i: int) -> Callable[[], None]:
        def create() -> None:
            node = self.nodes[i]
            if node.endpoint is None or not self.replica(i).can_create():
                # Down, or not yet holding its own membership: the user acts a little later.
                self.schedule(self.rng.randint(50, 300), self._create_event(i))
                return
            node.endpoint.create(self.space_id, self.random_commands(i), time=self.now)
            self._creates_due -= 1
            self.stats.deltas_created += 1
            self.flush(i)

        return create

    # -- convergence --------------------------------------------------------------------------

    def _settled(self) -> bool:
        removal_due = self.byzantine is not None and self.byzantine.removal_due
        if self._creates_due or removal_due or any(n.endpoint is None for n in self.nodes):
            return False
        hostile: set[bytes] = set()
        if self.byzantine is not None:
            member = self.byzantine.member
            hostile = {member.identity.endpoint_id, member.sybil.endpoint_id}
        vectors = []
        for i in self.honest:
            replica = self.replica(i)
            if replica.staged_count:
                return False
            # A byzantine member can leave a delta of its own (or of its sybil) waiting forever
            # for one it never sends (the pending set's bounds hold it); anything else pending
            # must arrive.
            if any(did.creator not in hostile for did in replica.buffer.pending_ids()):
                return False
            vectors.append(replica.vector)
        if not all(v == vectors[0] for v in vectors):
            return False
        # The same deltas may still have executed differently: a replica that has not met a
        # proof of equivocation yet runs deltas that the proof makes void. Settled once the
        # proofs that matter have spread too.
        states = {self.replica(i).state_digest() for i in self.honest}
        return len(states) == 1

    def run_until_quiet(self, *, limit_ms: int = 120_000) -> bool:
        """Run until every honest replica executed the same deltas (and a little longer for
        acks)."""
        end = self.now + limit_ms
        honest_links = [link for link in self.links if self.honest_count(*link) == 2]
        while self.now < end:
            self.run_for(TICK_MS)
            if self._settled() and all(link in self.conns for link in honest_links):
                self.run_for(TICK_MS * 4)
                if self._settled():
                    return True
        return False

    def check_convergence(self) -> Convergence:
        """Compare the honest replicas (see :func:`~p2pspace.testing.convergence.compare`)."""
        honest = [(i, self.nodes[i].endpoint) for i in self.honest]
        return compare(honest, self.space_id, self.protocol_errors)

    def max_undos_per_delta(self) -> int:
        return max((max(n.undo_counts.values(), default=0) for n in self.nodes), default=0)

    def close(self) -> None:
        for node in self.nodes:
            if node.endpoint is not None:
                node.endpoint.close()
                node.endpoint = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationReport:
    converged: bool
    deltas: int
    undone: int
    redone: int
    seconds: float
    endpoints: tuple[dict[str, Any], ...]
    reasons: tuple[str, ...]
    max_undos_per_delta: int
    stats: dict[str, int]
    byzantine: dict[str, Any] | None = None  # who it was and what it tried
    duplicates: int = 0  # deltas honest replicas received again (already held), in all


def run_simulation(
    root: Path,
    *,
    endpoints: int,
    deltas: int,
    seed: int,
    faults: Iterable[str] = (),
    topology: str = "mesh",
    dump_logs: Path | None = None,
    quiet_limit_ms: int = 120_000,
    limits: Limits | None = None,
) -> SimulationReport:
    """One seeded run: workload under faults, heal, converge, compare. Deterministic per seed.

    ``quiet_limit_ms``: how long (virtual time) the healed network may take to settle.
    ``limits``: every replica's (None: the defaults)."""
    started = _time.perf_counter()
    net = SimNetwork(
        root,
        endpoints=endpoints,
        seed=seed,
        faults=Faults.of(faults),
        topology=topology,
        limits=limits,
    )
    try:
        span = max(2000, deltas * 20)
        net.schedule_workload(deltas, over_ms=span)
        net.schedule_hostile(max(6, deltas // 3), over_ms=span)
        net.schedule_faults(over_ms=span)
        net.run_for(span + 100)
        net.heal()
        quiet = net.run_until_quiet(limit_ms=quiet_limit_ms)
        result = net.check_convergence()
        reasons = list(result.reasons)
        if not quiet:
            reasons.append("replicas did not settle after healing")
        if dump_logs is not None:
            write_logs(net, dump_logs)
        undone = sum(net.replica(n.index).stats.undone for n in net.nodes)
        redone = sum(net.replica(n.index).stats.redone for n in net.nodes)
        duplicates = sum(net.replica(i).stats.duplicates for i in net.honest)
        return SimulationReport(
            converged=quiet and result.converged,
            deltas=net.stats.deltas_created,
            undone=undone,
            redone=redone,
            seconds=_time.perf_counter() - started,
            endpoints=result.endpoints,
            reasons=tuple(reasons),
            max_undos_per_delta=net.max_undos_per_delta(),
            stats={
                "frames": net.stats.frames,
                "dropped": net.stats.dropped,
                "duplicated": net.stats.duplicated,
                "crashes": net.stats.crashes,
                "partitions": net.stats.partitions,
                "hostile_errors": net.stats.hostile_errors,
            },
            byzantine=None if net.byzantine is None else net.byzantine.report(net),
            duplicates=duplicates,
        )
    finally:
        net.close()


def write_logs(net: SimNetwork, folder: Path) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for node in net.nodes:
        if node.endpoint is None:
            continue
        replica = net.replica(node.index)
        data = {"endpoint": node.endpoint.endpoint_id.hex(), "order": replica.dump_order()}
        (folder / f"endpoint-{node.index}.json").write_text(json.dumps(data, indent=1))
