"""How this endpoint writes its own deltas: rank, dependencies, hash chain, group signatures.

Theory of operation. A local delta always sorts after everything its creator has executed, so
creating one never undoes anything locally: its rank is 1 + the highest executed rank, and it
depends on the whole executed vector. On the wire it carries only the entries that grew since
the vector its creator's previous delta declared (``own_deps``), so a delta does not grow with
the number of members.

Group commit writes a batch of deltas as one chain: the first carries the dependency diff, each
following one depends only on its predecessor (through ``seq`` and ``prev``) and carries none.
Only the last delta of the batch, and every :data:`~p2pspace.core.authenticity.MAX_CHAIN`-th,
is signed; the others are authenticated by the ``prev`` hashes leading to a signed one
(:mod:`p2pspace.core.authenticity`). One signature per chain is what makes bulk writes cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from p2pspace.core import authenticity
from p2pspace.core.causal import Head
from p2pspace.core.delta import Command, Delta, diff_vector, make_body
from p2pspace.core.identity import Identity
from p2pspace.errors import CommandError, LocalProtocolError, MalformedError


def write_chain(
    batches: Sequence[Sequence[Command]],
    *,
    identity: Identity,
    space_id: bytes,
    head: Head | None,
    max_rank: int,
    own_deps: Mapping[bytes, int],
    vector: Mapping[bytes, int],
    time: int,
    validate: Callable[[Delta], None],
) -> list[Delta]:
    """One delta per entry of ``batches``, chained after ``head`` (this endpoint's last
    executed delta) and signed as described above.

    ``vector`` is the executed vector without this endpoint's own entry; ``validate`` checks a
    delta's commands against the space's engines. Raises :class:`LocalProtocolError` if a
    command is malformed or invalid for its engine (the caller misused the API).
    """
    seq = head.seq if head is not None else 0
    prev = head.hash if head is not None else b""
    rank = max_rank
    chain_length = authenticity.MAX_CHAIN
    made: list[Delta] = []
    try:
        for i, commands in enumerate(batches):
            seq += 1
            rank += 1
            delta = make_body(
                space=space_id,
                creator=identity.endpoint_id,
                seq=seq,
                rank=rank,
                deps=diff_vector(own_deps, vector) if i == 0 else {},
                prev=prev,
                time=time,
                commands=list(commands),
            )
            validate(delta)
            if i == len(batches) - 1 or i % chain_length == chain_length - 1:
                delta = delta.with_signature(identity.sign(delta.body))
            made.append(delta)
            prev = delta.hash
    except (MalformedError, CommandError) as exc:
        raise LocalProtocolError(f"invalid command: {exc}") from None
    return made
