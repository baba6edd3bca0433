"""Self-signed Ed25519 certificates and pinning them to endpoint ids."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from p2pspace.core.identity import Identity
from p2pspace.errors import AuthenticationError
from p2pspace.node.tls import (
    certificate_file,
    client_context,
    make_certificate,
    pinned_peer,
    server_context,
)

ME = Identity.from_seed(b"me")
YOU = Identity.from_seed(b"you")


def der_of(identity: Identity) -> bytes:
    pem = make_certificate(identity)
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_pin_accepts_the_matching_key_and_refuses_others() -> None:
    assert pinned_peer(der_of(ME), ME.endpoint_id) == (ME.endpoint_id, ME.public_key)
    assert pinned_peer(der_of(ME), None)[0] == ME.endpoint_id
    with pytest.raises(AuthenticationError, match="expected"):
        pinned_peer(der_of(YOU), ME.endpoint_id)
    with pytest.raises(AuthenticationError, match="no certificate"):
        pinned_peer(None, None)
    with pytest.raises(AuthenticationError, match="does not parse"):
        pinned_peer(b"\x30\x03junk", None)


def test_non_ed25519_certificates_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(AuthenticationError, match="not Ed25519"):
        pinned_peer(cert.public_bytes(Encoding.DER), None)


def test_certificate_file_is_private_and_follows_the_key(tmp_path: Path) -> None:
    path = certificate_file(tmp_path, ME)
    assert os.stat(path).st_mode & 0o777 == 0o600
    first = path.read_bytes()
    assert certificate_file(tmp_path, ME).read_bytes() == first  # reused
    certificate_file(tmp_path, YOU)  # another key: remade
    assert path.read_bytes() != first


def test_contexts_require_tls_13(tmp_path: Path) -> None:
    for context in (server_context(tmp_path, ME), client_context(tmp_path, ME)):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_3
