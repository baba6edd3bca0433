"""Membership rules of the core: command shapes, member grants, who may create."""

from __future__ import annotations

from typing import Any

import pytest

from p2pspace.core import membership
from p2pspace.core.delta import Command, make_body
from p2pspace.core.identity import Identity
from p2pspace.core.membership import member_grant
from p2pspace.core.replica import Replica
from p2pspace.errors import CommandError, LocalProtocolError, NotMemberError

ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")


def test_member_grant() -> None:
    ident = Identity.from_seed(b"g")
    add = membership.add_command(member_id=ident.endpoint_id, key=ident.public_key, name="x")
    assert member_grant(add) == (ident.endpoint_id, ident.public_key)
    genesis = membership.genesis_command(
        name="s",
        nonce=b"\x00" * 16,
        engines={},
        member_id=ident.endpoint_id,
        key=ident.public_key,
        member_name="",
    )
    assert member_grant(genesis) == (ident.endpoint_id, ident.public_key)
    assert member_grant(Command(engine="db", name="add", args=add.args)) is None


def _add_args(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "id": BOB.endpoint_id,
        "key": BOB.public_key,
        "name": "bob",
        "role": "participant",
    }
    args.update(changes)
    return {k: v for k, v in args.items() if v is not ...}


BAD_ADDS: list[tuple[str, Any]] = [
    ("id-of-other-key", _add_args(id=ALICE.endpoint_id)),
    ("id-wrong-size", _add_args(id=BOB.endpoint_id + b"\x00")),
    ("id-not-bytes", _add_args(id=BOB.endpoint_id.hex())),
    ("key-wrong-size", _add_args(key=BOB.public_key[:31])),
    ("key-not-bytes", _add_args(key=list(BOB.public_key))),
    ("bad-role", _add_args(role="owner")),
    ("role-not-str", _add_args(role=1)),
    ("name-not-str", _add_args(name=b"bob")),
    ("name-too-long", _add_args(name="n" * (membership.MAX_TEXT + 1))),
    ("extra-key", _add_args(extra=1)),
    ("missing-role", _add_args(role=...)),
    ("missing-id", _add_args(id=...)),
    ("args-not-map", [BOB.endpoint_id, BOB.public_key, "bob", "participant"]),
]


@pytest.mark.parametrize("args", [a for _i, a in BAD_ADDS], ids=[i for i, _a in BAD_ADDS])
def test_add_validation_errors(space_pair: tuple[Replica, Replica], args: Any) -> None:
    command = Command(engine=membership.INSTANCE, name="add", args=args)
    with pytest.raises(CommandError):
        membership.validate_command(command)
    a, _b = space_pair
    before = (a.order_digest(), a.state_digest())
    with pytest.raises(LocalProtocolError):
        a.create([command], time=9)
    assert (a.order_digest(), a.state_digest()) == before


def test_add_validation_accepts_roles_and_empty_name() -> None:
    for role in membership.ROLES:
        membership.validate_command(
            Command(engine="members", name="add", args=_add_args(role=role))
        )
    membership.validate_command(Command(engine="members", name="add", args=_add_args(name="")))
    membership.validate_command(
        Command(engine="members", name="add", args=_add_args(name="n" * membership.MAX_TEXT))
    )


def test_unknown_command_refused() -> None:
    with pytest.raises(CommandError):
        membership.validate_command(Command(engine="members", name="remove", args={}))


def test_non_member_delta_rejected(
    space_pair: tuple[Replica, Replica], identities: list[Identity]
) -> None:
    """A delta from an endpoint no grant admitted is refused (NotMemberError)."""
    a, b = space_pair
    outsider = identities[3]
    unsigned = make_body(
        space=a.space_id,
        creator=outsider.endpoint_id,
        seq=1,
        rank=3,
        deps=dict(a.vector),
        prev=b"",
        time=3,
        commands=[
            membership.add_command(
                member_id=outsider.endpoint_id, key=outsider.public_key, name="me"
            )
        ],
    )
    delta = unsigned.with_signature(outsider.sign(unsigned.body))
    result = b.receive([delta.wire()])
    assert [type(r.error) for r in result.rejected] == [NotMemberError]
    assert not b.is_member(outsider.endpoint_id)
