"""Invitation codes and their one-time redemption by the inviter."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pspace.core.identity import Identity
from p2pspace.core.store import Store
from p2pspace.errors import InvitationError, LocalProtocolError, MalformedError
from p2pspace.node.home import open_store
from p2pspace.sync import invitations

INVITER = Identity.from_seed(b"inviter").endpoint_id
JOINER = Identity.from_seed(b"joiner").endpoint_id
OTHER = Identity.from_seed(b"other").endpoint_id
SPACE = b"S" * 16
NONCE = b"n" * 32


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(tmp_path)
    yield s  # type: ignore[misc]
    s.close()


def issue(store: Store, *, now: int = 1000, ttl: int = 500) -> invitations.Invitation:
    return invitations.issue(
        store,
        space=SPACE,
        inviter=INVITER,
        addresses=("127.0.0.1:7455", "[::1]:7455"),
        role="participant",
        now=now,
        ttl_ms=ttl,
        random=bytes(range(32)),
        space_name="team",
    )


def mac(inv: invitations.Invitation, joiner: bytes = JOINER, secret: bytes | None = None) -> bytes:
    return invitations.join_mac(
        secret if secret is not None else inv.secret,
        nonce=NONCE,
        space=inv.space,
        inviter=inv.inviter,
        joiner=joiner,
        invitation=inv.invitation,
    )


def redeem(
    store: Store,
    inv: invitations.Invitation,
    proof: bytes,
    *,
    joiner: bytes = JOINER,
    now: int = 1200,
) -> str:
    with store.transaction():
        return invitations.redeem(
            store,
            space=inv.space,
            invitation=inv.invitation,
            mac=proof,
            nonce=NONCE,
            inviter=INVITER,
            joiner=joiner,
            now=now,
        )


def test_code_round_trips(store: Store) -> None:
    inv = issue(store)
    code = inv.encode()
    assert code.startswith("p2ps1-")
    assert invitations.decode_code(code) == inv
    assert invitations.decode_code("  " + code.upper() + "\n") == inv


def test_damaged_or_foreign_codes_are_refused(store: Store) -> None:
    code = issue(store).encode()
    flipped = code[:-3] + ("a" if code[-3] != "a" else "b") + code[-2:]
    for bad, message in (
        (flipped, "damaged"),
        ("hello", "not an invitation code"),
        ("p2ps1-!!!!", "bad characters"),
        ("p2ps1-", "damaged"),
        ("p2ps1-" + "a" * 5000, "not an invitation code"),
    ):
        with pytest.raises(InvitationError, match=message):
            invitations.decode_code(bad)


def test_redeem_grants_the_role_once(store: Store) -> None:
    inv = issue(store)
    assert redeem(store, inv, mac(inv)) == "participant"
    # The same joiner may retry (it may have crashed before hearing back)...
    assert redeem(store, inv, mac(inv)) == "participant"
    # ...anyone else may not.
    with pytest.raises(InvitationError, match="already used"):
        redeem(store, inv, mac(inv, joiner=OTHER), joiner=OTHER)


def test_redeem_refuses_forged_expired_and_unknown(store: Store) -> None:
    inv = issue(store)
    with pytest.raises(InvitationError, match="does not match"):
        redeem(store, inv, mac(inv, secret=b"x" * 16))
    with pytest.raises(InvitationError, match="expired"):
        redeem(store, inv, mac(inv), now=1501)
    stranger = invitations.Invitation(
        space=SPACE,
        inviter=INVITER,
        addresses=(),
        invitation=b"u" * 16,
        secret=b"s" * 16,
        role="guest",
        expires=10**12,
    )
    with pytest.raises(InvitationError, match="unknown invitation"):
        redeem(store, stranger, mac(stranger))
    other_space = invitations.Invitation(
        space=b"T" * 16,
        inviter=INVITER,
        addresses=(),
        invitation=inv.invitation,
        secret=inv.secret,
        role="participant",
        expires=inv.expires,
    )
    with pytest.raises(InvitationError, match="does not match"):
        redeem(store, other_space, mac(other_space))
    # Failed attempts did not consume the invitation.
    assert redeem(store, inv, mac(inv)) == "participant"


def test_issue_checks_its_arguments(store: Store) -> None:
    with pytest.raises(LocalProtocolError):
        invitations.issue(
            store,
            space=SPACE,
            inviter=INVITER,
            addresses=(),
            role="boss",
            now=0,
            ttl_ms=1,
            random=bytes(32),
        )
    with pytest.raises(LocalProtocolError):
        invitations.issue(
            store,
            space=SPACE,
            inviter=INVITER,
            addresses=(),
            role="guest",
            now=0,
            ttl_ms=0,
            random=bytes(32),
        )


def test_addresses() -> None:
    assert invitations.split_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert invitations.split_address("[fe80::1]:80") == ("fe80::1", 80)
    assert invitations.join_address("fe80::1", 80) == "[fe80::1]:80"
    for bad in ("x", "x:", ":1", "x:0", "x:70000", "x:ab"):
        with pytest.raises(MalformedError):
            invitations.split_address(bad)
