"""Endpoint identity: Ed25519 keys, endpoint ids and signatures.

An endpoint id is the first 16 bytes of SHA-256 over the endpoint's raw 32-byte Ed25519 public
key. People see it as base32 in groups of four (``ABCD-EFGH-...``); :func:`parse_endpoint_id`
reverses :func:`format_endpoint_id`. The private key lives in the endpoint's home folder as
``identity.key`` (raw 32 bytes, mode 0600), created on first use.

Errors from ``cryptography`` are translated: a bad signature is
:class:`~p2pspace.errors.ForgedDeltaError`'s parent :class:`~p2pspace.errors.AuthenticationError`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p2pspace.errors import AuthenticationError, LocalProtocolError

ENDPOINT_ID_SIZE = 16
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def endpoint_id_of(public_key: bytes) -> bytes:
    """The endpoint id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError("an Ed25519 public key has 32 bytes")
    return hashlib.sha256(public_key).digest()[:ENDPOINT_ID_SIZE]


def format_endpoint_id(endpoint_id: bytes) -> str:
    """Human form: unpadded base32 in dash-separated groups of four characters."""
    if len(endpoint_id) != ENDPOINT_ID_SIZE:
        raise LocalProtocolError("an endpoint id has 16 bytes")
    text = base64.b32encode(endpoint_id).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_endpoint_id(text: str) -> bytes:
    """Inverse of :func:`format_endpoint_id`; accepts any case and missing dashes.

    Raises :class:`LocalProtocolError` when ``text`` is not an endpoint id.
    """
    compact = text.replace("-", "").replace(" ", "").upper()
    if len(compact) != 26:
        raise LocalProtocolError(f"not an endpoint id: {text!r}")
    try:
        raw = base64.b32decode(compact + "======")
    except ValueError:
        raise LocalProtocolError(f"not an endpoint id: {text!r}") from None
    if len(raw) != ENDPOINT_ID_SIZE or format_endpoint_id(raw).replace("-", "") != compact:
        raise LocalProtocolError(f"not an endpoint id: {text!r}")
    return raw


def short_id(endpoint_id: bytes) -> str:
    """The first group of the human form, for logs and tables."""
    return format_endpoint_id(endpoint_id)[:9]


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`AuthenticationError` unless ``signature`` is valid for ``message``."""
    try:
        _public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise AuthenticationError("signature does not verify") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """An endpoint's key pair. ``endpoint_id`` is derived from the public key."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: bytes
    endpoint_id: bytes

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        if len(raw) != 32:
            raise LocalProtocolError("an Ed25519 private key has 32 bytes")
        key = Ed25519PrivateKey.from_private_bytes(raw)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private_key=key, public_key=public, endpoint_id=endpoint_id_of(public))

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_bytes(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """A deterministic identity (for simulations and tests): key = SHA-256(seed)."""
        return cls.from_private_bytes(hashlib.sha256(b"p2pspace-seed" + seed).digest())

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def private_bytes(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
