"""The home folder: file names, private files written whole, the key file, the store, the lock."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pspace.core.identity import Identity
from p2pspace.errors import LocalProtocolError, StorageError
from p2pspace.node.home import (
    KEY_FILE,
    STORE_FILE,
    home_lock,
    load_or_create_identity,
    open_endpoint,
    open_store,
    read_config,
    write_config,
    write_private,
)


def test_key_file_created_0600_and_reloaded_the_same(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_or_create_identity(home)
    key_file = home / KEY_FILE
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() == first.private_bytes()
    assert len(first.private_bytes()) == 32
    assert not (home / "identity.key.tmp").exists()

    again = load_or_create_identity(home)
    assert again.public_key == first.public_key
    assert again.endpoint_id == first.endpoint_id
    assert again.private_bytes() == first.private_bytes()


def test_seed_is_deterministic_and_ignored_once_a_key_exists(tmp_path: Path) -> None:
    a = load_or_create_identity(tmp_path / "a", seed=b"s1")
    b = load_or_create_identity(tmp_path / "b", seed=b"s1")
    assert a.endpoint_id == b.endpoint_id == Identity.from_seed(b"s1").endpoint_id
    reloaded = load_or_create_identity(tmp_path / "a", seed=b"other")
    assert reloaded.endpoint_id == a.endpoint_id
    assert Identity.from_seed(b"s2").endpoint_id != a.endpoint_id


def test_generated_identities_differ(tmp_path: Path) -> None:
    a = load_or_create_identity(tmp_path / "a")
    b = load_or_create_identity(tmp_path / "b")
    assert a.endpoint_id != b.endpoint_id


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64])
def test_corrupt_key_file_is_storage_error(tmp_path: Path, raw: bytes) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / KEY_FILE).write_bytes(raw)
    with pytest.raises(StorageError):
        load_or_create_identity(home)
    # The corrupt file is left alone, never silently replaced with a new identity.
    assert (home / KEY_FILE).read_bytes() == raw


def test_unreadable_key_file_is_storage_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / KEY_FILE).mkdir(parents=True)  # a folder where the key file should be
    with pytest.raises(StorageError):
        load_or_create_identity(home)


def test_open_store_creates_the_home(tmp_path: Path) -> None:
    home = tmp_path / "a" / "b"
    store = open_store(home, durability="normal")
    try:
        assert store.path == home / STORE_FILE
        assert (home / STORE_FILE).exists()
    finally:
        store.close()


def test_open_endpoint_keeps_identity_and_spaces(tmp_path: Path) -> None:
    home = tmp_path / "e"
    first = open_endpoint(home, seed=b"home-e", durability="normal", name="e")
    try:
        space = first.create_space("s", time=1, nonce=bytes(16)).space_id
        endpoint_id = first.endpoint_id
    finally:
        first.close()
    again = open_endpoint(home, seed=b"ignored", durability="normal")
    try:
        assert again.endpoint_id == endpoint_id == Identity.from_seed(b"home-e").endpoint_id
        assert space in again.replicas
    finally:
        again.close()


def test_private_files_are_0600_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    write_private(path, "one")
    assert path.read_text() == "one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    write_private(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_a_private_file_that_cannot_be_written_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with pytest.raises(StorageError):
        write_private(tmp_path / "blocked" / "secret", "x")


def test_config_keeps_values_between_writes(tmp_path: Path) -> None:
    assert read_config(tmp_path) == {}
    write_config(tmp_path, name="ann")
    write_config(tmp_path, other=1)
    assert read_config(tmp_path) == {"name": "ann", "other": 1}
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(StorageError):
        read_config(tmp_path)


def test_the_home_lock_is_exclusive(tmp_path: Path) -> None:
    with home_lock(tmp_path), pytest.raises(LocalProtocolError), home_lock(tmp_path):
        pass
    with home_lock(tmp_path):
        pass
