"""Less to track: what a stranger on the LAN sees of an endpoint -- its mDNS announcement and
its TLS certificate -- carries no stable id, and changes every day, while members still
recognise each other."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from zeroconf import ServiceInfo

from p2pspace.core.identity import Identity, endpoint_id_of
from p2pspace.node.discovery import (
    DAY_SECONDS,
    MAX_UNMATCHED,
    SERVICE_TYPE,
    Announcement,
    Discovery,
    discovery_tag,
    parse_info,
)
from p2pspace.node.home import certificate_path, write_private
from p2pspace.node.tls import VALIDITY, certificate_file, make_certificate
from p2pspace.sync.messages import PROTOCOL_VERSION

ME = Identity.from_seed(b"me").endpoint_id
PEER = Identity.from_seed(b"peer").endpoint_id
STRANGER = Identity.from_seed(b"stranger").endpoint_id


def discovery(now: list[float], known: set[bytes]) -> Discovery:
    return Discovery(
        ME, port=4000, interfaces=("127.0.0.1",), known=lambda: known, clock=lambda: now[0]
    )


def announcement(endpoint: bytes, day: int, port: int = 5000) -> tuple[str, Announcement]:
    tag = discovery_tag(endpoint, day)
    return f"{tag.hex()}.{SERVICE_TYPE}", Announcement(
        tag=tag, addresses=(("127.0.0.1", port),), version=PROTOCOL_VERSION
    )


def test_the_announcement_names_no_id_and_changes_every_day() -> None:
    now = [DAY_SECONDS * 20_000 + 5.0]
    ours = discovery(now, set())
    today, tomorrow = ours._info(ours.day()), ours._info(ours.day() + 1)
    for info in (today, tomorrow):
        text = f"{info.name} {info.server} {info.properties}"
        assert ME.hex() not in text and ME.hex()[:8] not in text
        assert set(info.properties) == {b"v"}
    assert today.name != tomorrow.name and today.server != tomorrow.server
    tags = {discovery_tag(ME, d) for d in range(20_000, 20_030)}
    assert len(tags) == 30 and all(len(t) == 16 for t in tags)
    assert discovery_tag(ME, 20_000) != discovery_tag(PEER, 20_000)


def test_a_resolved_service_is_parsed_to_its_tag() -> None:
    tag = discovery_tag(PEER, 20_000)
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{tag.hex()}.{SERVICE_TYPE}",
        port=5000,
        properties={"v": str(PROTOCOL_VERSION)},
        addresses=[socket.inet_aton("127.0.0.1")],
    )
    parsed = parse_info(info)
    assert parsed == Announcement(
        tag=tag, addresses=(("127.0.0.1", 5000),), version=PROTOCOL_VERSION
    )
    bad = ServiceInfo(SERVICE_TYPE, f"{PEER.hex()}.{SERVICE_TYPE}", port=5000, properties={})
    assert parse_info(bad) is None


async def test_members_recognise_each_other_and_strangers_stay_unknown() -> None:
    now = [DAY_SECONDS * 20_000 + 10.0]
    known = {PEER}
    ours = discovery(now, known)
    name, heard = announcement(PEER, 20_000)
    ours.heard(name, heard)
    assert set(ours.peers) == {PEER}
    assert (await ours.events.receive()).endpoint == PEER
    # Near midnight the other side's clock may be on the next day.
    late_name, late = announcement(PEER, 20_001, port=5001)
    ours.heard(late_name, late)
    assert ours.peers[PEER].addresses == (("127.0.0.1", 5001),)
    # A stranger's tag matches nobody: no sighting, nothing dialled.
    stranger_name, stranger = announcement(STRANGER, 20_000)
    ours.heard(stranger_name, stranger)
    assert STRANGER not in ours.peers
    # ... until its id is learnt (a join's inviter, or a new member): then it is found.
    assert ours.find(STRANGER) is not None and STRANGER in ours.peers
    # It goes: its sighting goes too.
    ours.heard(stranger_name, None)
    assert STRANGER not in ours.peers


def test_a_peer_that_becomes_a_member_is_recognised_on_the_next_round() -> None:
    now = [DAY_SECONDS * 20_000 + 10.0]
    known: set[bytes] = set()
    ours = discovery(now, known)
    name, heard = announcement(PEER, 20_000)
    ours.heard(name, heard)
    assert ours.peers == {}
    known.add(PEER)
    ours.rematch()
    assert set(ours.peers) == {PEER}


def test_unknown_announcements_are_bounded() -> None:
    now = [DAY_SECONDS * 20_000 + 10.0]
    ours = discovery(now, set())
    for i in range(MAX_UNMATCHED * 4):
        name, heard = announcement(Identity.from_seed(b"s%d" % i).endpoint_id, 20_000)
        ours.heard(name, heard)
    assert len(ours._unmatched) == MAX_UNMATCHED
    assert ours.peers == {}


def test_the_certificate_names_no_endpoint_and_has_ordinary_dates() -> None:
    me = Identity.from_seed(b"me")
    now = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
    pem = make_certificate(me, now=now)
    certificate = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE") :])
    text = certificate.subject.rfc4514_string() + certificate.issuer.rfc4514_string()
    assert me.endpoint_id.hex() not in text
    assert certificate.serial_number != int.from_bytes(me.endpoint_id[:8], "big") | 1
    assert certificate.not_valid_before_utc == now - datetime.timedelta(days=1)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == VALIDITY
    again = x509.load_pem_x509_certificate(
        (pem2 := make_certificate(me, now=now))[pem2.index(b"-----BEGIN CERTIFICATE") :]
    )
    assert again.serial_number != certificate.serial_number  # random: nothing to link them
    # Peers pin the key it holds, which is the endpoint's.
    key = certificate.public_key().public_bytes_raw()  # type: ignore[union-attr]
    assert endpoint_id_of(key) == me.endpoint_id


def test_a_certificate_near_its_end_is_renewed(tmp_path: Path) -> None:
    me = Identity.from_seed(b"me")
    old = datetime.datetime.now(datetime.UTC) - VALIDITY + datetime.timedelta(days=10)
    tmp_path.mkdir(exist_ok=True)
    write_private(certificate_path(tmp_path), make_certificate(me, now=old))
    pem = certificate_file(tmp_path, me).read_bytes()
    renewed = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE") :])
    assert renewed.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + VALIDITY / 2
    assert certificate_file(tmp_path, me).read_bytes() == pem  # a fresh one is kept


def test_a_certificate_of_an_older_release_is_replaced(tmp_path: Path) -> None:
    """An older release named the endpoint in the subject and made it valid for a century:
    an upgraded home gets a certificate of the current kind on its next start."""
    me = Identity.from_seed(b"me")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, me.endpoint_id.hex())])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(me.private_key.public_key())
        .serial_number(int.from_bytes(me.endpoint_id[:8], "big") | 1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 100))
        .sign(me.private_key, algorithm=None)
    )
    key = me.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_private(certificate_path(tmp_path), key + old.public_bytes(Encoding.PEM))
    pem = certificate_file(tmp_path, me).read_bytes()
    now = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE") :])
    assert me.endpoint_id.hex() not in now.subject.rfc4514_string()
    assert now.not_valid_after_utc - now.not_valid_before_utc == VALIDITY
