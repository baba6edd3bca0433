"""Genesis: what makes a founding delta valid, and what creating a space refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from p2pspace.core import membership
from p2pspace.core.delta import Command, make_body
from p2pspace.core.genesis import validate_genesis
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.core.store import Store
from p2pspace.errors import CommandError, ForgedDeltaError, LocalProtocolError, WrongSpaceError

ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")


def _genesis_args(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "space",
        "nonce": b"\x00" * 16,
        "engines": {"db": "rdb"},
        "member": {"id": ALICE.endpoint_id, "key": ALICE.public_key, "name": "alice"},
    }
    args.update(changes)
    return {k: v for k, v in args.items() if v is not ...}


BAD_GENESES: list[tuple[str, Any]] = [
    ("empty-name", _genesis_args(name="")),
    ("short-nonce", _genesis_args(nonce=b"\x00" * 15)),
    ("engines-not-map", _genesis_args(engines=["db"])),
    ("engine-named-members", _genesis_args(engines={"members": "rdb"})),
    ("engine-kind-not-str", _genesis_args(engines={"db": 1})),
    ("engine-name-empty", _genesis_args(engines={"": "rdb"})),
    ("too-many-engines", _genesis_args(engines={f"e{i}": "rdb" for i in range(33)})),
    (
        "member-id-mismatch",
        _genesis_args(member={"id": BOB.endpoint_id, "key": ALICE.public_key, "name": "x"}),
    ),
    (
        "member-extra-key",
        _genesis_args(
            member={"id": ALICE.endpoint_id, "key": ALICE.public_key, "name": "x", "role": "guest"}
        ),
    ),
    ("extra-key", _genesis_args(extra=True)),
    ("missing-nonce", _genesis_args(nonce=...)),
]


@pytest.mark.parametrize("args", [a for _i, a in BAD_GENESES], ids=[i for i, _a in BAD_GENESES])
def test_genesis_validation_errors(args: Any) -> None:
    with pytest.raises(CommandError):
        membership.validate_command(Command(engine="members", name="genesis", args=args))


def test_create_space_refuses_bad_genesis(
    make_store: Callable[[str], Store], identities: list[Identity]
) -> None:
    store = make_store("g")
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="", time=1)
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="x", time=1, engines={"members": "rdb"})
    with pytest.raises(LocalProtocolError):
        Replica.create_space(store, identities[0], name="x", time=1, member_name="m" * 201)
    assert store.spaces() == []


def test_genesis_command_only_in_genesis(space_pair: tuple[Replica, Replica]) -> None:
    a, _b = space_pair
    again = membership.genesis_command(
        name="again",
        nonce=b"\x01" * 16,
        engines={},
        member_id=a.endpoint_id,
        key=a.identity.public_key,
        member_name="",
    )
    with pytest.raises(LocalProtocolError):
        a.create([again], time=5)


def _genesis(
    signer: Identity, *, commands: list[Command] | None = None, sign: bool = True, **changes: Any
) -> Any:
    unsigned = make_body(
        space=b"",
        creator=signer.endpoint_id,
        seq=1,
        rank=1,
        deps={},
        prev=b"",
        time=0,
        commands=commands
        if commands is not None
        else [Command(engine="members", name="genesis", args=_genesis_args(**changes))],
    )
    return unsigned.with_signature(signer.sign(unsigned.body)) if sign else unsigned


def test_validate_genesis() -> None:
    space_id, engines = validate_genesis(_genesis(ALICE))
    assert engines == {"db": "rdb"}
    assert len(space_id) == 16
    with pytest.raises(CommandError):  # the genesis member must be its creator
        validate_genesis(_genesis(BOB))  # signed by Bob, names Alice
    with pytest.raises(CommandError):  # unknown engine kind
        validate_genesis(_genesis(ALICE, engines={"db": "spreadsheet"}))
    with pytest.raises(CommandError):  # members is not an extra engine kind
        validate_genesis(_genesis(ALICE, engines={"db": "members"}))
    with pytest.raises(CommandError):  # two commands
        validate_genesis(
            _genesis(
                ALICE,
                commands=[
                    Command(engine="members", name="genesis", args=_genesis_args()),
                    Command(engine="members", name="genesis", args=_genesis_args()),
                ],
            )
        )
    with pytest.raises(ForgedDeltaError):
        validate_genesis(_genesis(ALICE, sign=False))
    forged = _genesis(ALICE, sign=False).with_signature(BOB.sign(_genesis(ALICE).body))
    with pytest.raises(ForgedDeltaError):
        validate_genesis(forged)


def test_genesis_of_other_space_rejected(space_pair: tuple[Replica, Replica]) -> None:
    a, b = space_pair
    result = b.receive([_genesis(ALICE).wire()])
    assert [type(r.error) for r in result.rejected] == [WrongSpaceError]
    assert b.receive([a.genesis.wire()]).duplicates == 1
