"""Encryption at rest: an encrypted home's store and key are unreadable without its data key,
which comes from the OS keyring or a passphrase; without it, or with a wrong passphrase, one
line says so and nothing in the home changes; a plain home is exactly what it was."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from p2pspace.core.identity import Identity
from p2pspace.core.store import Store
from p2pspace.errors import LocalProtocolError, StorageError
from p2pspace.node import at_rest
from p2pspace.node.at_rest import ScryptCost
from p2pspace.node.config import NodeConfig
from p2pspace.node.home import (
    AT_REST_FILE,
    KEY_FILE,
    STORE_FILE,
    at_rest_state,
    encrypt_new_home,
    load_or_create_identity,
    open_endpoint,
    open_store,
    unlock,
)
from p2pspace.node.runtime import open_node
from p2pspace.node.tls import server_context

# A small scrypt cost: these tests check the wrapping, not the default cost's half second.
FAST = ScryptCost(n=2**12)
PASSPHRASE = "correct horse battery staple"
NAME = "Zelda Quillfeather"
SECRET = "the-combination-is-31-41-59"
OFFLINE = NodeConfig(listen=None, discovery=False)
SQLITE_HEADER = b"SQLite format 3\x00"


class MemoryKeyring(KeyringBackend):
    """An OS keyring stand-in: entries in a dict, recommended like a real one (priority 1)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.entries[(service, username)]


class PlaintextLikeKeyring(MemoryKeyring):
    """A backend keyring does not recommend (like keyrings.alt's plaintext file)."""

    priority = 0.5  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def no_keyring_no_passphrase(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OS keyring and no passphrase unless a test provides one; stdin is no terminal. The
    keyring is left as "none" afterwards too: no test may reach the real one of this computer.
    """
    keyring.set_keyring(fail.Keyring())
    monkeypatch.delenv(at_rest.PASSPHRASE_ENV, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        yield
    finally:
        keyring.set_keyring(fail.Keyring())


@pytest.fixture
def memory_keyring() -> MemoryKeyring:
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    return ring


def snapshot(home: Path) -> dict[str, str]:
    """Every file in ``home`` (the lock file aside) and a hash of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(home.iterdir())
        if path.is_file() and path.name != "node.lock"
    }


def store_bytes(home: Path) -> bytes:
    return b"".join(
        (home / name).read_bytes()
        for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm")
        if (home / name).exists()
    )


async def fill(home: Path) -> tuple[bytes, str]:
    """A node on ``home`` named NAME writes SECRET into a record; (space id, endpoint hex)."""
    async with open_node(home, NodeConfig(listen=None, discovery=False, name=NAME)) as node:
        space = node.create_space("vault", engines={"db": "rdb"}).space_id
        node.rdb_set(space, "notes", "n1", {"text": SECRET})
        return space, node.endpoint_id.hex()


async def test_an_encrypted_home_keeps_nothing_readable_and_reopens_with_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "laptop"
    key = encrypt_new_home(home, passphrase=PASSPHRASE, cost=FAST)
    assert key.method is at_rest.Method.PASSPHRASE
    assert SECRET not in repr(key) and key.data.hex() not in repr(key)
    monkeypatch.setenv(at_rest.PASSPHRASE_ENV, PASSPHRASE)
    space, me = await fill(home)

    data = store_bytes(home)
    assert not data.startswith(SQLITE_HEADER)
    assert SECRET.encode() not in data and NAME.encode() not in data and b"vault" not in data
    with pytest.raises(sqlite3.DatabaseError):  # the standard sqlite3 sees no database
        sqlite3.connect(home / STORE_FILE).execute("SELECT * FROM sqlite_master").fetchall()

    identity = load_or_create_identity(home)
    raw = identity.private_bytes()
    assert len((home / KEY_FILE).read_bytes()) != 32
    for path in home.iterdir():  # the raw key is in no file: not the key file, not tls.pem
        assert raw not in path.read_bytes(), path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    pem = (home / "tls.pem").read_bytes()
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem and b"BEGIN PRIVATE KEY" not in pem
    server_context(home, identity)  # the node still loads it
    record = json.loads((home / AT_REST_FILE).read_text())
    assert record["method"] == "passphrase" and key.data.hex() not in json.dumps(record)

    async with open_node(home, OFFLINE) as node:  # reopened with the passphrase: all there
        assert node.endpoint_id.hex() == me
        assert node.rdb_get(space, "notes") == {"n1": {"text": SECRET}}
        assert node.status().to_json()["at_rest"] == "encrypted (passphrase)"
    assert at_rest_state(home) == "encrypted (passphrase)"


@pytest.mark.parametrize(
    ("passphrase", "says"),
    [
        ("not the passphrase", "the passphrase does not open"),
        (None, "its key is not available: set P2PSPACE_PASSPHRASE or run in a terminal"),
    ],
)
async def test_a_wrong_or_missing_passphrase_is_one_line_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passphrase: str | None, says: str
) -> None:
    home = tmp_path / "laptop"
    encrypt_new_home(home, passphrase=PASSPHRASE, cost=FAST)
    monkeypatch.setenv(at_rest.PASSPHRASE_ENV, PASSPHRASE)
    await fill(home)
    before = snapshot(home)
    if passphrase is None:
        monkeypatch.delenv(at_rest.PASSPHRASE_ENV)
    else:
        monkeypatch.setenv(at_rest.PASSPHRASE_ENV, passphrase)

    attempts = [
        lambda: open_endpoint(home),
        lambda: load_or_create_identity(home),
        lambda: open_store(home),
        lambda: encrypt_new_home(home, cost=FAST),
    ]
    for attempt in attempts:
        with pytest.raises(StorageError) as caught:
            attempt()
        message = str(caught.value)
        assert says in message and str(home) in message and "\n" not in message
    with pytest.raises(StorageError, match=says):
        async with open_node(home, OFFLINE):
            pass  # pragma: no cover - the node does not start
    assert snapshot(home) == before


def test_the_passphrase_is_asked_on_a_terminal_three_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "laptop"
    encrypt_new_home(home, passphrase=PASSPHRASE, cost=FAST)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    typed = iter(["typo", "", PASSPHRASE, "never asked"])
    asked: list[str] = []

    def getpass(prompt: str) -> str:
        asked.append(prompt)
        return next(typed)

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    assert unlock(home) is not None
    assert asked == [f"passphrase for {home}: "] * 3
    assert capsys.readouterr().err.count("try again") == 2

    typed = iter(["a", "b", "c"])
    with pytest.raises(StorageError, match="the passphrase does not open"):
        unlock(home)


async def test_the_keyring_keeps_the_key_when_there_is_one(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    home = tmp_path / "laptop"
    key = encrypt_new_home(home, cost=FAST)  # no passphrase given: the keyring is used
    assert key.method is at_rest.Method.KEYRING
    entry = ("p2pspace", str(home.resolve()))
    assert memory_keyring.entries == {entry: key.data.hex()}
    record = json.loads((home / AT_REST_FILE).read_text())
    assert record["method"] == "keyring" and "wrapped" not in record
    assert key.data.hex() not in json.dumps(record)

    space, _ = await fill(home)
    assert SECRET.encode() not in store_bytes(home)
    async with open_node(home, OFFLINE) as node:  # no passphrase needed
        assert node.rdb_get(space, "notes") == {"n1": {"text": SECRET}}
        assert node.status().to_json()["at_rest"] == "encrypted (keyring)"

    before = snapshot(home)
    del memory_keyring.entries[entry]
    with pytest.raises(StorageError, match="its key is not in the OS keyring") as caught:
        open_endpoint(home)
    assert "\n" not in str(caught.value)
    memory_keyring.entries[entry] = "00" * 32  # another key under this home's name
    with pytest.raises(StorageError, match="does not match"):
        open_endpoint(home)
    keyring.set_keyring(fail.Keyring())  # no keyring at all (a headless session)
    with pytest.raises(StorageError, match="OS keyring, which is not available here"):
        open_endpoint(home)
    assert snapshot(home) == before


def test_a_passphrase_replaces_the_keyring_when_asked_or_when_the_keyring_is_weak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    asked = encrypt_new_home(tmp_path / "a", use_keyring=False, passphrase=PASSPHRASE, cost=FAST)
    monkeypatch.setenv(at_rest.PASSPHRASE_ENV, PASSPHRASE)
    scripted = encrypt_new_home(tmp_path / "b", cost=FAST)  # $P2PSPACE_PASSPHRASE is set
    assert asked.method is scripted.method is at_rest.Method.PASSPHRASE
    assert memory_keyring.entries == {}

    keyring.set_keyring(PlaintextLikeKeyring())  # not recommended: it would sit on the disk
    monkeypatch.delenv(at_rest.PASSPHRASE_ENV)
    with pytest.raises(StorageError, match="no passphrase for"):
        encrypt_new_home(tmp_path / "c", cost=FAST)
    assert not (tmp_path / "c" / AT_REST_FILE).exists()
    with pytest.raises(LocalProtocolError, match="empty"):
        encrypt_new_home(tmp_path / "d", passphrase="", cost=FAST)


def test_an_unencrypted_home_is_not_converted(tmp_path: Path) -> None:
    home = tmp_path / "plain"
    open_endpoint(home, seed=b"plain").close()
    before = snapshot(home)
    with pytest.raises(LocalProtocolError, match="not converted in place"):
        encrypt_new_home(home, passphrase=PASSPHRASE, cost=FAST)
    assert snapshot(home) == before


async def test_a_plain_home_is_what_it_was(tmp_path: Path) -> None:
    home = tmp_path / "plain"
    space, _ = await fill(home)
    assert at_rest_state(home) == "plain" and not (home / AT_REST_FILE).exists()
    assert (home / STORE_FILE).read_bytes().startswith(SQLITE_HEADER)
    assert SECRET.encode() in store_bytes(home)
    identity = load_or_create_identity(home)
    assert (home / KEY_FILE).read_bytes() == identity.private_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in (home / "tls.pem").read_bytes()
    assert unlock(home) is None
    store = open_store(home)
    try:
        assert type(store._db) is sqlite3.Connection  # the standard module, as before
    finally:
        store.close()
    async with open_node(home, OFFLINE) as node:
        assert node.rdb_get(space, "notes") == {"n1": {"text": SECRET}}
        assert node.status().to_json()["at_rest"] == "plain"


def test_a_damaged_record_or_key_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "laptop"
    encrypt_new_home(home, passphrase=PASSPHRASE, cost=FAST)
    monkeypatch.setenv(at_rest.PASSPHRASE_ENV, PASSPHRASE)
    load_or_create_identity(home)
    (home / KEY_FILE).write_bytes(Identity.generate().private_bytes())  # a plain key dropped in
    with pytest.raises(StorageError, match="is not sealed with this home's key"):
        load_or_create_identity(home)
    record = json.loads((home / AT_REST_FILE).read_text())
    damages = (
        {"n": 3},
        {"salt": "zz"},
        {"format": 2},
        {"method": "x"},
        {"check": 1},
        {"check": "é" * 32},
    )
    for damage in damages:
        (home / AT_REST_FILE).write_text(json.dumps({**record, **damage}))
        with pytest.raises(StorageError) as caught:
            unlock(home)
        assert "\n" not in str(caught.value) and str(home) in str(caught.value)
    (home / AT_REST_FILE).write_text("{not json")
    with pytest.raises(StorageError, match="is damaged"):
        unlock(home)


def test_a_store_opened_with_another_key_is_refused_without_noise(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite3"
    Store(path, key=b"k" * 32).close()
    with pytest.raises(StorageError, match="does not open with this home's key"):
        Store(path, key=b"x" * 32)
    with pytest.raises(StorageError):
        Store(path)  # nor without one
    assert capfd.readouterr().err == ""  # SQLCipher's own log stays quiet
    with pytest.raises(LocalProtocolError):
        Store(path, key=b"short")
    reopened = Store(path, key=b"k" * 32)
    reopened.close()
