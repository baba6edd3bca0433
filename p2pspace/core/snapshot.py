"""Snapshots (DESIGN §12): the state at the last checkpoint, for joiners and laggards.

Theory of operation. When a checkpoint closes block ``n`` (:mod:`p2pspace.core.checkpoint`),
the replica keeps a copy of the engine state its digest attests -- the state the closed blocks
build, before the checkpoint itself executes -- as the *base* (store table ``base``), and for
each creator its last closed delta with the full dependency vector that delta claims and the
creator's bytes up to it (``base_heads``). A snapshot is that base and what a replica needs to
go on from it without the history:

* the checkpoint delta (in the :class:`Manifest`);
* every base state row (``["s", instance, key, value]``);
* each creator's last closed delta (``["h", wire, signed, rank, vector, used]``): its seq,
  rank and hash are what later deltas chain to and rank above;
* every members delta of the closed blocks (``["m", wire, signed, vector, unsupported]``): the
  keys of the members and the causal-past memberships later deltas are judged on.

The items are packed, in that order, into chunks of at most :data:`CHUNK_BYTES`; the manifest
lists each chunk's SHA-256, so a receiver checks each chunk as it arrives (a corrupted or forged
chunk is refused with :class:`~p2pspace.errors.SnapshotError` and asked for elsewhere) and keeps
the good ones in its store (``snapshot_parts``): a broken connection resumes at the first
missing chunk, from the same member or another one holding the same checkpoint.

Nothing replaces the receiver's replica until the whole snapshot verifies (:func:`verify`):

* the checkpoint is a ``members.checkpoint`` of this space whose number and digest are the
  manifest's, signed by its creator's key;
* every members delta verifies (signed, or chained to the next one of its creator, which does)
  under the keys the genesis and the members deltas before it admit, in order: so the key the
  checkpoint is checked with comes from the founder's, not from the sender;
* the state rows hash to the checkpoint's digest (the state digest of
  :func:`~p2pspace.core.audit.state_digest`), and the members state they hold names that
  checkpoint's block as the last but one closed, and its creator as the checkpointer.

Then :func:`install` writes it in one transaction, and the checkpoint executes on it as where
it closed. What a snapshot does not carry: the closed blocks' deltas (a replica answers a fetch
for them only while it still holds them), and the equivocation proofs (exchanged as ever with
each revision).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from p2pspace.core import codec
from p2pspace.core.authenticity import chains_to, check_signature
from p2pspace.core.checkpoint import block_value
from p2pspace.core.delta import Delta, DeltaId, decode_delta
from p2pspace.core.kv_state import KVState
from p2pspace.core.membership import (
    INSTANCE,
    MembersView,
    is_checkpoint,
    member_grant,
)
from p2pspace.core.store import Store
from p2pspace.errors import (
    AuthenticationError,
    LocalProtocolError,
    MalformedError,
    SnapshotError,
)

CHUNK_BYTES = 256 * 1024
MAX_CHUNKS = 16_384  # 4 GiB: a bound on what a manifest may announce
MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a snapshot holds: its checkpoint, the digest it attests and its chunks' hashes."""

    space: bytes
    number: int
    checkpoint: bytes  # the checkpoint delta's wire
    digest: bytes
    chunks: tuple[bytes, ...]
    size: int

    def encode(self) -> bytes:
        return codec.encode(
            [
                MANIFEST_VERSION,
                self.space,
                self.number,
                self.checkpoint,
                self.digest,
                list(self.chunks),
                self.size,
            ]
        )

    @property
    def checkpoint_id(self) -> DeltaId:
        return decode_delta(self.checkpoint).id

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """:class:`MalformedError` unless ``data`` is a well-formed manifest."""
        value = codec.decode(data)
        if type(value) is not list or len(value) != 7 or value[0] != MANIFEST_VERSION:
            raise MalformedError("not a snapshot manifest")
        _v, space, number, checkpoint, digest, chunks, size = value
        if type(space) is not bytes or type(checkpoint) is not bytes or type(digest) is not bytes:
            raise MalformedError("snapshot manifest fields have the wrong types")
        if type(number) is not int or number < 1 or type(size) is not int or size < 0:
            raise MalformedError("snapshot manifest numbers are out of range")
        if type(chunks) is not list or not 0 < len(chunks) <= MAX_CHUNKS:
            raise MalformedError("snapshot manifest lists no chunks, or too many")
        if any(type(c) is not bytes or len(c) != 32 for c in chunks):
            raise MalformedError("snapshot chunk hashes are 32 bytes")
        return cls(
            space=space,
            number=number,
            checkpoint=checkpoint,
            digest=digest,
            chunks=tuple(chunks),
            size=size,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A verified snapshot, ready to install."""

    manifest: Manifest
    checkpoint: Delta
    state: tuple[tuple[str, bytes, bytes], ...]
    heads: tuple[tuple[Delta, bool, bytes, int], ...]  # (delta, signed, vector blob, used)
    members: tuple[tuple[Delta, bool, bytes, int], ...]  # (delta, signed, vector, unsupported)
    grants: tuple[tuple[bytes, bytes, bytes, int], ...]  # (member, key, creator, seq)

    @property
    def vector(self) -> dict[bytes, int]:
        """Each creator's last delta inside the snapshot."""
        return {delta.creator: delta.seq for delta, *_rest in self.heads}


# -- what closing keeps ----------------------------------------------------------------------


def advance_heads(
    store: Store, space: bytes, before: Mapping[bytes, int], after: Mapping[bytes, int]
) -> None:
    """Record each creator's last closed delta once a block closes (inside its transaction):
    its full claimed vector and the creator's bytes up to it, carried forward from the last
    block's (the same sums :class:`~p2pspace.core.authority.Authority` keeps per chain)."""
    held = {c: (q, dict(codec.decode_stored(v)), u) for c, q, v, u in store.base_heads(space)}
    rows = []
    for creator, last in after.items():
        first = before.get(creator, 0) + 1
        if last < first:
            continue
        _seq, vector, used = held.get(creator, (0, {}, 0))
        for seq, _signed, wire in store.wires_range(space, creator, first, last):
            delta = decode_delta(wire)
            if seq == 1:
                vector, used = {}, 0
            for endpoint, dep in delta.deps:
                if dep > vector.get(endpoint, 0):
                    vector[endpoint] = dep
            vector[creator] = seq
            used += len(delta.body)
        rows.append((space, creator, last, codec.encode_local(vector), used))
    store.set_base_heads(rows)


# -- building ----------------------------------------------------------------------------------


def build(store: Store, space: bytes, checkpoint_id: DeltaId) -> tuple[Manifest, list[bytes]]:
    """The snapshot at the last closed checkpoint ``checkpoint_id``: its manifest and chunks.
    :class:`LocalProtocolError` if this replica holds no base for it."""
    row = store.log_row(space, *checkpoint_id)
    if row is None or row[0] >= 0:
        raise LocalProtocolError("this replica holds no closed checkpoint to make a snapshot of")
    checkpoint = decode_delta(row[3])
    args = checkpoint.commands[0].args
    items: list[Any] = [["s", i, k, v] for i, k, v in store.base_rows(space)]
    for creator, seq, vector, used in store.base_heads(space):
        head = store.log_row(space, creator, seq)
        if head is None:
            raise LocalProtocolError(f"the last closed delta {creator.hex()}:{seq} is missing")
        items.append(["h", head[3], head[2], head[1], vector, used])
    for wire, vector, unsupported in store.closed_members_deltas(space):
        delta = decode_delta(wire)
        signed = store.log_row(space, delta.creator, delta.seq)
        items.append(["m", wire, bool(signed and signed[2]), vector, unsupported])
    chunks: list[bytes] = []
    batch: list[Any] = []
    size = 0
    for item in items:
        encoded = len(codec.encode(item))
        if batch and size + encoded > CHUNK_BYTES:
            chunks.append(codec.encode(batch))
            batch, size = [], 0
        batch.append(item)
        size += encoded
    chunks.append(codec.encode(batch))
    manifest = Manifest(
        space=space,
        number=int(args["number"]),
        checkpoint=row[3],
        digest=bytes(args["digest"]),
        chunks=tuple(hashlib.sha256(c).digest() for c in chunks),
        size=sum(len(c) for c in chunks),
    )
    return manifest, chunks


# -- receiving ---------------------------------------------------------------------------------


def check_chunk(manifest: Manifest, index: int, data: bytes) -> None:
    """:class:`SnapshotError` unless ``data`` is chunk ``index`` of ``manifest``."""
    if not 0 <= index < len(manifest.chunks):
        raise SnapshotError(f"snapshot chunk {index} is not in its manifest")
    if hashlib.sha256(data).digest() != manifest.chunks[index]:
        raise SnapshotError(f"snapshot chunk {index} is corrupted (its hash does not match)")


def verify(manifest: Manifest, chunks: Sequence[bytes], genesis: Delta) -> Snapshot:
    """Decode and verify a whole snapshot (see the module docstring); :class:`SnapshotError`
    names what does not verify."""
    if len(chunks) != len(manifest.chunks):
        raise SnapshotError("snapshot is incomplete")
    for index, data in enumerate(chunks):
        check_chunk(manifest, index, data)
    try:
        checkpoint = decode_delta(manifest.checkpoint)
        items: list[Any] = []
        for data in chunks:
            batch = codec.decode(data)
            if type(batch) is not list:
                raise SnapshotError("a snapshot chunk is not a list of items")
            items.extend(batch)
        state, heads, members = _parse(items)
    except MalformedError as exc:
        raise SnapshotError(f"snapshot does not decode: {exc}") from None
    space = manifest.space
    if checkpoint.space != space or not is_checkpoint(checkpoint.commands):
        raise SnapshotError("the snapshot's checkpoint is not a checkpoint of this space")
    args = checkpoint.commands[0].args
    if args["number"] != manifest.number or args["digest"] != manifest.digest:
        raise SnapshotError("the snapshot's manifest does not match its checkpoint")
    grants, keys = _verify_members(members, genesis)
    key = keys.get(checkpoint.creator)
    try:
        if key is None:
            raise AuthenticationError("its creator's key is not admitted")
        check_signature(key, checkpoint)
    except AuthenticationError as exc:
        raise SnapshotError(f"the snapshot's checkpoint does not verify: {exc}") from None
    if _digest(state) != manifest.digest:
        raise SnapshotError("the snapshot's state does not match its checkpoint's digest")
    view = MembersView(cast(KVState, _Rows({k: v for i, k, v in state if i == INSTANCE})))
    if view.checkpointer() != checkpoint.creator:
        raise SnapshotError("the snapshot's checkpoint is not by the checkpointer of its state")
    last = view.last_checkpoint()
    if (last[0] if last is not None else 0) != manifest.number - 1:
        raise SnapshotError("the snapshot's state does not precede its checkpoint's block")
    for delta, signed, _vector, _used in heads:
        if delta.space != space:
            raise SnapshotError("a snapshot head is from another space")
        if signed and delta.signature is None:
            raise SnapshotError(f"snapshot head {delta.id} claims a signature it lacks")
    head_ids = {d.creator: d for d, *_rest in heads}
    if len(head_ids) != len(heads) or head_ids.get(checkpoint.creator) is None:
        raise SnapshotError("the snapshot's heads are not one per creator with the checkpoint's")
    if head_ids[checkpoint.creator].hash != checkpoint.hash:
        raise SnapshotError("the snapshot's heads do not end at its checkpoint")
    return Snapshot(
        manifest=manifest,
        checkpoint=checkpoint,
        state=tuple(state),
        heads=tuple(heads),
        members=tuple(members),
        grants=tuple(grants),
    )


def _parse(
    items: list[Any],
) -> tuple[
    list[tuple[str, bytes, bytes]],
    list[tuple[Delta, bool, bytes, int]],
    list[tuple[Delta, bool, bytes, int]],
]:
    state: list[tuple[str, bytes, bytes]] = []
    heads: list[tuple[Delta, bool, bytes, int]] = []
    members: list[tuple[Delta, bool, bytes, int]] = []
    for item in items:
        if type(item) is not list or not item:
            raise SnapshotError("a snapshot item is malformed")
        kind = item[0]
        if kind == "s" and len(item) == 4:
            _k, instance, key, value = item
            if type(instance) is not str or type(key) is not bytes or type(value) is not bytes:
                raise SnapshotError("a snapshot state row is malformed")
            state.append((instance, key, value))
        elif kind == "h" and len(item) == 6:
            _k, wire, signed, rank, vector, used = item
            if type(wire) is not bytes or type(vector) is not bytes or type(used) is not int:
                raise SnapshotError("a snapshot head is malformed")
            delta = decode_delta(wire)
            if type(rank) is not int or rank != delta.rank or type(signed) is not bool:
                raise SnapshotError("a snapshot head's rank or signature flag is wrong")
            _check_vector(vector)
            heads.append((delta, signed, vector, used))
        elif kind == "m" and len(item) == 5:
            _k, wire, signed, vector, unsupported = item
            if type(wire) is not bytes or type(vector) is not bytes:
                raise SnapshotError("a snapshot members delta is malformed")
            if type(signed) is not bool or unsupported not in (0, 1):
                raise SnapshotError("a snapshot members delta's flags are malformed")
            _check_vector(vector)
            members.append((decode_delta(wire), signed, vector, int(unsupported)))
        else:
            raise SnapshotError(f"unknown snapshot item {kind!r}")
    keys = [(i, k) for i, k, _v in state]
    if keys != sorted(keys) or len(set(keys)) != len(keys):
        raise SnapshotError("snapshot state rows are not in order, or repeat")
    return state, heads, members


def _check_vector(blob: bytes) -> None:
    try:
        vector = codec.decode_stored(blob)
    except Exception:
        raise SnapshotError("a snapshot vector does not decode") from None
    if type(vector) is not dict or any(
        type(k) is not bytes or type(v) is not int for k, v in vector.items()
    ):
        raise SnapshotError("a snapshot vector is malformed")


def _verify_members(
    members: Sequence[tuple[Delta, bool, bytes, int]], genesis: Delta
) -> tuple[list[tuple[bytes, bytes, bytes, int]], dict[bytes, bytes]]:
    """Check every members delta under the keys admitted before it (the founder's first);
    return the grants they make and the keys they admit."""
    founder = member_grant(genesis.commands[0])
    if founder is None:
        raise SnapshotError("the genesis admits no founder")
    keys = {founder[0]: founder[1]}
    grants = [(founder[0], founder[1], genesis.creator, genesis.seq)]
    by_id = {d.id: d for d, *_rest in members}
    for delta, _signed, _vector, _unsupported in members:
        if delta.is_genesis:
            continue
        key = keys.get(delta.creator)
        try:
            if key is None:
                raise AuthenticationError(f"{delta.id} is by an endpoint not admitted before it")
            signer = delta
            while signer.signature is None:
                successor = by_id.get(DeltaId(delta.creator, signer.seq + 1))
                if successor is None or not chains_to(signer, successor):
                    raise AuthenticationError(f"unsigned {delta.id} chains to no signed delta")
                signer = successor
            check_signature(key, signer)
        except AuthenticationError as exc:
            raise SnapshotError(f"a snapshot members delta does not verify: {exc}") from None
        for command in delta.commands:
            grant = member_grant(command)
            if grant is not None:
                keys.setdefault(grant[0], grant[1])
                grants.append((grant[0], grant[1], delta.creator, delta.seq))
    return grants, keys


def _digest(rows: Sequence[tuple[str, bytes, bytes]]) -> bytes:
    h = hashlib.sha256()
    for instance, key, value in rows:
        for part in (instance.encode(), key, value):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
    return h.digest()


class _Rows:
    """A read-only key/value view of snapshot rows, enough for :class:`MembersView`."""

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self._rows = rows

    def get(self, key: bytes) -> bytes | None:
        return self._rows.get(key)

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self._rows.items() if k.startswith(prefix))


# -- installing --------------------------------------------------------------------------------


def install(store: Store, snapshot: Snapshot) -> None:
    """Replace the space's content by ``snapshot`` (inside a transaction): the log holds each
    creator's last closed delta and the closed members deltas, in the snapshot's block."""
    block = block_value(snapshot.manifest.number)
    log: dict[DeltaId, tuple[bytes, int, int, int, bytes, bool, bytes]] = {}
    for delta, signed, *_rest in (*snapshot.members, *snapshot.heads):
        log[delta.id] = (
            delta.creator,
            delta.seq,
            block,
            delta.rank,
            delta.hash,
            signed,
            delta.wire(),
        )
    store.replace_space_content(
        snapshot.manifest.space,
        state=snapshot.state,
        log=list(log.values()),
        heads=[(d.creator, d.seq, v, u) for d, _s, v, u in snapshot.heads],
        members=[(d.creator, d.seq, v, u) for d, _s, v, u in snapshot.members],
        grants=snapshot.grants,
    )
