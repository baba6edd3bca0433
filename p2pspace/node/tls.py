"""TLS 1.3 contexts with each endpoint's self-signed Ed25519 certificate.

The certificate's key *is* the endpoint's identity key: a peer that presents a certificate is
pinned by checking ``endpoint_id_of(certificate key)`` against the id it is expected to have.
There is no certificate authority; chain and hostname checks are off and replaced by that pin.
The certificate is made per home folder (``tls.pem``, mode 0600) from ``identity.key``, with
ordinary validity dates, and renewed before it ends. It carries no endpoint id: TLS 1.3 encrypts
certificates, so a passive observer sees none, and the key it holds is what peers pin.
In a home encrypted at rest the key in ``tls.pem`` is encrypted (PKCS #8) under a password
derived from the identity key, so the file gives away no more than the sealed key file does.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

from p2pspace.core.identity import Identity, endpoint_id_of
from p2pspace.errors import AuthenticationError, StorageError
from p2pspace.node.home import certificate_path, is_encrypted, write_private

VALIDITY = datetime.timedelta(days=397)  # what browsers accept of public certificates
RENEW_BEFORE = datetime.timedelta(days=30)
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])


def make_certificate(
    identity: Identity, *, now: datetime.datetime | None = None, password: bytes | None = None
) -> bytes:
    """PEM of the private key (encrypted under ``password`` if given) followed by a
    self-signed certificate for it.

    Nothing in it names the endpoint or the software beyond what any self-signed certificate
    says: a generic subject, a random serial, and ordinary validity (from a day before ``now``
    for clock skew, for :data:`VALIDITY`), so its dates do not single out p2pspace across
    networks. It is renewed when it nears its end (:func:`certificate_file`)."""
    name = SUBJECT
    start = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    start -= datetime.timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        .sign(identity.private_key, algorithm=None)
    )
    encryption = NoEncryption() if password is None else BestAvailableEncryption(password)
    key_pem = identity.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    return key_pem + certificate.public_bytes(Encoding.PEM)


def pem_password(identity: Identity) -> bytes:
    """The password of the key in an encrypted home's ``tls.pem``: whoever can read it holds
    the identity key already."""
    digest = hmac.new(identity.private_bytes(), b"p2pspace-tls-pem-v1", hashlib.sha256)
    return digest.hexdigest().encode("ascii")


def certificate_file(home: Path, identity: Identity) -> Path:
    """The home folder's key-and-certificate file, (re)made if missing or for another key, and
    with its key encrypted if and only if the home is encrypted at rest."""
    path = certificate_path(home)
    password = pem_password(identity) if is_encrypted(home) else None
    try:
        if path.exists():
            pem = path.read_bytes()
            sealed = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem
            if sealed == (password is not None) and _pem_matches(pem, identity):
                return path
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    write_private(path, make_certificate(identity, password=password), sync=True)
    return path


def _pem_matches(pem: bytes, identity: Identity) -> bool:
    """True if ``pem`` holds a certificate for ``identity``'s key, of the current kind (the
    generic subject, ordinary validity -- an older release named the endpoint and ran a
    century), and not near its end."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        if public_key_of(certificate.public_bytes(Encoding.DER)) != identity.public_key:
            return False
    except (ValueError, AuthenticationError):
        return False
    if certificate.subject != SUBJECT:
        return False
    span = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return span <= VALIDITY and left > RENEW_BEFORE


def server_context(home: Path, identity: Identity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # The password is used only if the file's key is encrypted (an encrypted home).
    context.load_cert_chain(str(certificate_file(home, identity)), password=pem_password(identity))
    return context


def client_context(home: Path, identity: Identity) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA: the server's key is pinned to its endpoint id after the handshake instead.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(certificate_file(home, identity)), password=pem_password(identity))
    return context


def public_key_of(der: bytes | None) -> bytes:
    """The raw Ed25519 key of a DER certificate. AuthenticationError if it is not one."""
    if not der:
        raise AuthenticationError("peer presented no certificate")
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise AuthenticationError("peer certificate does not parse") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuthenticationError("peer certificate key is not Ed25519")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def pinned_peer(der: bytes | None, expected: bytes | None) -> tuple[bytes, bytes]:
    """``(endpoint id, key)`` of a peer's certificate, checked against ``expected`` if given."""
    key = public_key_of(der)
    peer = endpoint_id_of(key)
    if expected is not None and peer != expected:
        raise AuthenticationError(
            f"peer presents key of endpoint {peer.hex()}, expected {expected.hex()}"
        )
    return peer, key


__all__ = ["certificate_file", "client_context", "pinned_peer", "public_key_of", "server_context"]
