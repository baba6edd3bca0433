"""A space's founding delta: what makes a genesis valid, how one is made, and what it founds.

Theory of operation. A space id is the first 16 bytes of the SHA-256 of its genesis delta, so
the genesis is self-certifying: nobody can forge another genesis for an id. A valid genesis is
rank 1, seq 1, signed by its creator, and holds exactly one ``members.genesis`` command that
names the creator as the space's first manager and lists the space's engine instances
(``{instance: kind}``). Every kind must be one this process can run
(:func:`~p2pspace.core.engine_registry.lookup_engine`), so a replica never accepts a space whose
state it could not execute.

Founding a replica (:func:`found_space`) stores the genesis and executes its one command in one
transaction; afterwards the replica opens from the store like any other.
"""

from __future__ import annotations

from p2pspace.core import codec, membership
from p2pspace.core.delta import Delta, make_body, space_id_of
from p2pspace.core.engine import DeltaContext, Engine
from p2pspace.core.engine_registry import lookup_engine
from p2pspace.core.identity import Identity, verify_signature
from p2pspace.core.kv_state import KVState
from p2pspace.core.store import Store
from p2pspace.errors import (
    AuthenticationError,
    CommandError,
    ForgedDeltaError,
    LocalProtocolError,
    WrongSpaceError,
)

DEFAULT_ENGINES = {"db": "rdb"}


def validate_genesis(genesis: Delta) -> tuple[bytes, dict[str, str]]:
    """Check a genesis delta; return ``(space id, engine instances)``.

    Raises :class:`~p2pspace.errors.InvalidDeltaError` subclasses: :class:`WrongSpaceError` if it
    is not a genesis, :class:`CommandError` if it does not hold exactly one valid
    ``members.genesis`` command naming its creator or names an engine kind no registered or
    installed engine provides, :class:`ForgedDeltaError` if its creator did not sign it.
    """
    if not genesis.is_genesis:
        raise WrongSpaceError("not a genesis delta")
    if len(genesis.commands) != 1:
        raise CommandError("a genesis delta holds exactly one members.genesis command")
    command = genesis.commands[0]
    if command.engine != membership.INSTANCE or command.name != "genesis":
        raise CommandError("a genesis delta holds exactly one members.genesis command")
    membership.validate_command(command)
    member = command.args["member"]
    if member["id"] != genesis.creator:
        raise CommandError("the genesis member must be its creator")
    engines = dict(command.args["engines"])
    for kind in engines.values():
        if kind == membership.KIND or lookup_engine(kind) is None:
            raise CommandError(f"unknown engine kind {kind!r}")
    if genesis.signature is None:
        raise ForgedDeltaError("a genesis delta must be signed")
    try:
        verify_signature(member["key"], genesis.signature, genesis.body)
    except AuthenticationError:
        raise ForgedDeltaError("genesis signature does not verify") from None
    return space_id_of(genesis), engines


def space_engines(instances: dict[str, str]) -> dict[str, Engine]:
    """One engine object per instance of a space (the members instance included).

    Raises :class:`CommandError` for a kind that no registered or installed engine provides.
    """
    engines: dict[str, Engine] = {}
    for instance, kind in {membership.INSTANCE: membership.KIND, **instances}.items():
        cls = lookup_engine(kind)
        if cls is None:
            raise CommandError(f"unknown engine kind {kind!r}")
        engines[instance] = cls()
    return engines


def make_genesis(
    identity: Identity,
    *,
    name: str,
    time: int,
    engines: dict[str, str] | None,
    member_name: str,
    nonce: bytes,
) -> Delta:
    """A signed genesis naming ``identity`` as manager (``engines`` None: :data:`DEFAULT_ENGINES`).

    Raises :class:`LocalProtocolError` if the arguments do not make a valid genesis.
    """
    command = membership.genesis_command(
        name=name,
        nonce=nonce,
        engines=dict(DEFAULT_ENGINES if engines is None else engines),
        member_id=identity.endpoint_id,
        key=identity.public_key,
        member_name=member_name,
    )
    try:
        membership.validate_command(command)
    except CommandError as exc:
        raise LocalProtocolError(str(exc)) from None
    unsigned = make_body(
        space=b"",
        creator=identity.endpoint_id,
        seq=1,
        rank=1,
        deps={},
        prev=b"",
        time=time,
        commands=[command],
    )
    return unsigned.with_signature(identity.sign(unsigned.body))


def found_space(store: Store, genesis: Delta, genesis_wire: bytes) -> bytes:
    """Store a validated ``genesis`` and execute it, in one transaction; returns the space id.

    Raises :class:`CommandError` if the members engine is not registered, :class:`StorageError`
    if the store fails (nothing is stored then).
    """
    space_id = space_id_of(genesis)
    members_engine = space_engines({})[membership.INSTANCE]
    command = genesis.commands[0]
    with store.transaction():
        store.add_space(space_id, genesis_wire)
        context = DeltaContext(space=space_id, creator=genesis.creator, seq=1, time=genesis.time)
        state = KVState(store, space_id, membership.INSTANCE)
        undo = members_engine.execute(state, command, context)
        state.flush()
        store.insert_delta(
            space_id,
            genesis.creator,
            1,
            1,
            genesis.hash,
            True,
            genesis_wire,
            codec.encode_trusted([undo]),
        )
        member = command.args["member"]
        store.add_grant(space_id, member["id"], member["key"], genesis.creator, 1)
    return space_id
