"""Invitation codes and the inviter's book of them (sans-IO).

Theory of operation. An invitation is an out-of-band code a member hands to someone who should
join a space: the space id, the inviter's endpoint id and addresses, a one-time id and secret, the
role the joiner gets and an expiry time. The code is text (``p2ps1-`` + base32 of canonical CBOR
+ a 4-byte checksum) so a typo is caught before any connection is made.

The joiner dials the inviter (pinning the inviter's key to the id in the code, so the secret is
only ever shown to the inviter) and proves knowledge of the secret with an HMAC over the
connection's fresh nonce and both endpoint ids. The inviter looks the invitation up in its store,
checks expiry and one-time use in one transaction, and adds the joiner with a members delta.
Forged, expired and reused invitations raise :class:`~p2pspace.errors.InvitationError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from p2pspace.core import codec
from p2pspace.core.delta import SPACE_ID_SIZE
from p2pspace.core.identity import ENDPOINT_ID_SIZE
from p2pspace.core.membership import ROLES
from p2pspace.core.store import Store
from p2pspace.errors import InvitationError, LocalProtocolError, MalformedError

PREFIX = "p2ps1-"
INVITATION_ID_SIZE = 16
SECRET_SIZE = 16
MAC_SIZE = 32
MAX_ADDRESSES = 16
MAX_ADDRESS_TEXT = 300
MAX_CODE_TEXT = 4096
CHECKSUM_SIZE = 4
DEFAULT_TTL_MS = 24 * 3600 * 1000
CODE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Invitation:
    """The contents of an invitation code."""

    space: bytes
    inviter: bytes
    addresses: tuple[str, ...]  # "host:port"
    invitation: bytes
    secret: bytes
    role: str
    expires: int  # milliseconds since the epoch
    space_name: str = ""

    def __post_init__(self) -> None:
        if type(self.space) is not bytes or len(self.space) != SPACE_ID_SIZE:
            raise MalformedError("space id must be 16 bytes")
        if type(self.inviter) is not bytes or len(self.inviter) != ENDPOINT_ID_SIZE:
            raise MalformedError("inviter id must be 16 bytes")
        if type(self.invitation) is not bytes or len(self.invitation) != INVITATION_ID_SIZE:
            raise MalformedError("invitation id must be 16 bytes")
        if type(self.secret) is not bytes or len(self.secret) != SECRET_SIZE:
            raise MalformedError("secret must be 16 bytes")
        if self.role not in ROLES:
            raise MalformedError(f"role must be one of {', '.join(ROLES)}")
        if type(self.expires) is not int or self.expires < 0:
            raise MalformedError("expiry must be a non-negative integer")
        if type(self.space_name) is not str or len(self.space_name) > 200:
            raise MalformedError("space name must be text of at most 200 characters")
        if len(self.addresses) > MAX_ADDRESSES:
            raise MalformedError("too many addresses")
        for address in self.addresses:
            if type(address) is not str or len(address) > MAX_ADDRESS_TEXT:
                raise MalformedError("addresses must be host:port text")
            split_address(address)

    def encode(self) -> str:
        payload = codec.encode(
            [
                CODE_VERSION,
                self.space,
                self.inviter,
                list(self.addresses),
                self.invitation,
                self.secret,
                self.role,
                self.expires,
                self.space_name,
            ]
        )
        checksum = hashlib.sha256(payload).digest()[:CHECKSUM_SIZE]
        text = base64.b32encode(payload + checksum).decode("ascii").rstrip("=").lower()
        return PREFIX + text


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``; MalformedError if not."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise MalformedError(f"not a host:port address: {address!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise MalformedError(f"port out of range in {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def decode_code(text: str) -> Invitation:
    """Parse an invitation code. Raises :class:`InvitationError` with a clear message."""
    text = text.strip()
    if len(text) > MAX_CODE_TEXT or not text.lower().startswith(PREFIX):
        raise InvitationError(f"not an invitation code (it should start with {PREFIX!r})")
    body = text[len(PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise InvitationError("not an invitation code (bad characters)") from None
    payload, checksum = raw[:-CHECKSUM_SIZE], raw[-CHECKSUM_SIZE:]
    if len(raw) <= CHECKSUM_SIZE or hashlib.sha256(payload).digest()[:CHECKSUM_SIZE] != checksum:
        raise InvitationError("invitation code is damaged (checksum mismatch); copy it again")
    try:
        value = codec.decode(payload, max_depth=3)
        if type(value) is not list or len(value) != 9 or value[0] != CODE_VERSION:
            raise MalformedError("unknown invitation layout")
        _v, space, inviter, addresses, invitation, secret, role, expires, name = value
        if type(addresses) is not list:
            raise MalformedError("addresses must be a list")
        return Invitation(
            space=space,
            inviter=inviter,
            addresses=tuple(addresses),
            invitation=invitation,
            secret=secret,
            role=role,
            expires=expires,
            space_name=name,
        )
    except MalformedError as exc:
        raise InvitationError(f"not a valid invitation code: {exc}") from None


def join_mac(
    secret: bytes, *, nonce: bytes, space: bytes, inviter: bytes, joiner: bytes, invitation: bytes
) -> bytes:
    """The joiner's proof that it holds ``secret``, bound to this connection and both ids."""
    message = b"p2pspace-join-v1\0" + nonce + space + inviter + joiner + invitation
    return hmac.new(secret, message, hashlib.sha256).digest()


def issue(
    store: Store,
    *,
    space: bytes,
    inviter: bytes,
    addresses: tuple[str, ...],
    role: str,
    now: int,
    ttl_ms: int,
    random: bytes,
    space_name: str = "",
) -> Invitation:
    """Record a new invitation in ``store`` and return it. ``random`` is 32 fresh bytes."""
    if role not in ROLES:
        raise LocalProtocolError(f"role must be one of {', '.join(ROLES)}")
    if ttl_ms <= 0:
        raise LocalProtocolError("an invitation must be valid for a positive time")
    if len(random) != INVITATION_ID_SIZE + SECRET_SIZE:
        raise LocalProtocolError("issue() needs 32 random bytes")
    invitation = Invitation(
        space=space,
        inviter=inviter,
        addresses=addresses,
        invitation=random[:INVITATION_ID_SIZE],
        secret=random[INVITATION_ID_SIZE:],
        role=role,
        expires=now + ttl_ms,
        space_name=space_name,
    )
    with store.transaction():
        store.add_invitation(
            invitation.invitation, space, invitation.secret, role, invitation.expires
        )
    return invitation


def redeem(
    store: Store,
    *,
    space: bytes,
    invitation: bytes,
    mac: bytes,
    nonce: bytes,
    inviter: bytes,
    joiner: bytes,
    now: int,
) -> str:
    """Check a joiner's proof and mark the invitation used. Returns the role to grant.

    Must run inside a store transaction (with the members delta that admits the joiner, so a
    crash leaves both or neither). Raises :class:`InvitationError` for an unknown, forged,
    expired or already used invitation.
    """
    row = store.invitation(invitation)
    if row is None:
        raise InvitationError("unknown invitation (it was not issued by this endpoint)")
    inv_space, secret, role, expires, used_by = row
    expected = join_mac(
        secret, nonce=nonce, space=space, inviter=inviter, joiner=joiner, invitation=invitation
    )
    if inv_space != space or not hmac.compare_digest(expected, mac):
        raise InvitationError("invitation proof does not match (forged or altered code)")
    if used_by is not None and used_by != joiner:
        raise InvitationError("invitation was already used")
    if now > expires:
        raise InvitationError("invitation has expired")
    if used_by is None and not store.use_invitation(invitation, joiner):
        raise InvitationError("invitation was already used")
    return role


__all__ = [
    "DEFAULT_TTL_MS",
    "Invitation",
    "decode_code",
    "issue",
    "join_address",
    "join_mac",
    "redeem",
    "split_address",
]
