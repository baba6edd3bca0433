"""Equivocation evidence of one space: what is held, what every peer must be sent, its digest.

Theory of operation. Two authentic deltas under one id -- or an authentic delta whose ``prev``
names another copy of its creator's previous delta -- prove that the creator signed two
histories (DESIGN §8). The causal buffer records each proof as an
:class:`~p2pspace.core.causal.Evidence`; the authority voids the creator's deltas from the
lowest seq any proof names. That only converges if **every** honest replica ends up holding the
same proofs: a replica that never meets the other copy keeps judging the creator as honest.

So proofs are not relayed once and forgotten. The ledger keeps the set of *copies* they name
(creator, seq, hash -- the kept copy and the other one of each proof) and a digest of it, which
goes into the sync digest that peers compare (:func:`p2pspace.sync.divergence.heads_digest`):
two replicas whose proofs differ see different digests and send each other every copy they
hold (:meth:`EvidenceLedger.wires`), on every connection and again whenever the digests differ,
until both hold the union. Each copy is a delta signed by the creator, so a peer cannot forge
one; what is sent is bounded (:data:`MAX_WIRES`, :data:`MAX_BYTES`), lowest seqs first, since
the lowest fork decides.

A new proof is also pushed at once to every live session (:meth:`EvidenceLedger.take_new`),
once per copy, so a peer that already sent us a copy does not get it bounced back forever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from p2pspace.core.causal import Evidence
from p2pspace.core.delta import DeltaId, decode_delta

MAX_WIRES = 256  # copies sent per exchange
MAX_BYTES = 1024 * 1024  # and their bytes (one frame holds them)
_CONTEXT = b"p2pspace-evidence-v1\0"

Copy = tuple[bytes, int, bytes]  # creator, seq, hash
HeldWire = Callable[[DeltaId], bytes | None]


class EvidenceLedger:
    """The proofs of equivocation one replica holds (see the module docstring)."""

    def __init__(self, rows: Iterable[tuple[bytes, int, bytes, bytes]] = ()) -> None:
        self._proofs: list[Evidence] = []
        self._copies: set[Copy] = set()
        self._digest: bytes | None = None
        self._new: list[bytes] = []
        self._pushed: set[Copy] = set()
        self._seen: set[tuple[DeltaId, bytes]] = set()
        for creator, seq, kept, other in rows:
            self._add(Evidence(delta_id=DeltaId(creator, seq), kept_hash=kept, other_wire=other))

    def __len__(self) -> int:
        return len(self._proofs)

    def forks(self) -> dict[bytes, int]:
        """Creator -> the lowest seq a proof names (its deltas from there on are void)."""
        out: dict[bytes, int] = {}
        for proof in self._proofs:
            creator, seq = proof.delta_id
            out[creator] = min(seq, out.get(creator, seq))
        return out

    def note(self, proofs: Sequence[Evidence], held: HeldWire) -> None:
        """Record proofs just found; their copies not pushed yet are queued for every peer."""
        for proof in proofs:
            if not self._add(proof):
                continue
            for copy, wire in self._copies_of(proof, held):
                if copy not in self._pushed:
                    self._pushed.add(copy)
                    self._new.append(wire)

    def take_new(self) -> list[bytes]:
        """Copies to push to every live session now (each once)."""
        out, self._new = self._new, []
        return out

    def wires(self, held: HeldWire) -> list[bytes]:
        """Every copy the proofs name that this replica can produce, lowest seq first, within
        :data:`MAX_WIRES` and :data:`MAX_BYTES`: what a peer is sent to meet the same proofs."""
        found: dict[Copy, bytes] = {}
        for proof in sorted(self._proofs, key=lambda p: (p.delta_id.seq, p.delta_id.creator)):
            for copy, wire in self._copies_of(proof, held):
                found.setdefault(copy, wire)
        out: list[bytes] = []
        size = 0
        for copy in sorted(found, key=lambda c: (c[1], c[0], c[2])):
            wire = found[copy]
            if len(out) >= MAX_WIRES or size + len(wire) > MAX_BYTES:
                break
            out.append(wire)
            size += len(wire)
        return out

    def digest(self) -> bytes:
        """A digest of the copies the proofs name (b"" when there are none): equal on two
        replicas that met the same copies, whoever found what."""
        if self._digest is None:
            if not self._copies:
                self._digest = b""
            else:
                h = hashlib.sha256(_CONTEXT)
                for creator, seq, digest in sorted(self._copies):
                    h.update(creator + seq.to_bytes(8, "big") + digest)
                self._digest = h.digest()
        return self._digest

    # -- internals --------------------------------------------------------------------------

    def _add(self, proof: Evidence) -> bool:
        other = decode_delta(proof.other_wire)
        named = {
            (proof.delta_id.creator, proof.delta_id.seq, proof.kept_hash),
            (other.creator, other.seq, other.hash),
        }
        key = (proof.delta_id, proof.other_wire)
        if key in self._seen:
            return False
        self._seen.add(key)
        self._proofs.append(proof)
        if not named <= self._copies:
            self._copies |= named
            self._digest = None
        return True

    @staticmethod
    def _copies_of(proof: Evidence, held: HeldWire) -> list[tuple[Copy, bytes]]:
        other = decode_delta(proof.other_wire)
        out = [((other.creator, other.seq, other.hash), proof.other_wire)]
        wire = held(proof.delta_id)
        if wire is not None:
            ours = decode_delta(wire)
            out.append(((ours.creator, ours.seq, ours.hash), wire))
        return out


__all__ = ["MAX_BYTES", "MAX_WIRES", "EvidenceLedger"]
