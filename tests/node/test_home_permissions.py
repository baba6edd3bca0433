"""Another user of the same computer reads nothing of a home folder: the folder is 0700, every
file in it 0600 (the store and SQLite's files beside it included), and a node refuses to start
on a home or key that others can read."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pspace.errors import UnsafePermissionsError
from p2pspace.node.home import KEY_FILE, STORE_FILE, open_store, write_private
from p2pspace.node.runtime import open_node
from tests.helpers.api_client import NODE_CONFIG, api_node

NO_MDNS = ("--no-discovery",)
PRIVATE_FILES = (
    KEY_FILE,
    STORE_FILE,
    STORE_FILE + "-wal",
    STORE_FILE + "-shm",
    "tls.pem",
    "config.json",
    "api.token",
    "api.json",
    "node.lock",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user may enter (like /home), so only the home's own modes protect it."""
    folder = Path(tempfile.mkdtemp(prefix="p2pspace-perm-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


async def test_a_new_home_is_0700_and_every_file_in_it_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644 if we let it decide
    try:
        home = tmp_path / "deep" / "home"
        async with api_node(home, name="ann", port=None) as node:  # the port kept in config
            node.create_space("notes")
            assert mode(home) == 0o700
            present = [name for name in PRIVATE_FILES if (home / name).exists()]
            assert set(PRIVATE_FILES) - set(present) == set()
            for name in present:
                assert mode(home / name) == 0o600, name
            # Whatever else appears there is private too.
            for path in home.iterdir():
                assert mode(path) & 0o077 == 0, path.name
    finally:
        os.umask(old)


def test_a_store_from_an_older_release_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    store = open_store(home)
    store.close()
    for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
        if (home / name).exists():
            os.chmod(home / name, 0o644)
    open_store(home).close()
    for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
        if (home / name).exists():
            assert mode(home / name) == 0o600, name


@pytest.mark.parametrize(
    ("target", "loose", "fix"), [("", 0o755, "chmod 700"), (KEY_FILE, 0o644, "chmod 600")]
)
async def test_a_node_refuses_a_home_or_key_others_can_read(
    tmp_path: Path, target: str, loose: int, fix: str
) -> None:
    home = tmp_path / "home"
    async with open_node(home, NODE_CONFIG):
        pass
    path = home / target if target else home
    os.chmod(path, loose)
    before = sorted(p.name for p in home.iterdir())
    with pytest.raises(UnsafePermissionsError) as refused:
        async with open_node(home, NODE_CONFIG):
            pass  # pragma: no cover
    message = str(refused.value)
    assert f"{fix} {path}" in message and "\n" not in message
    assert sorted(p.name for p in home.iterdir()) == before  # nothing was written


def test_the_command_line_says_how_to_fix_it_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = str(Path(sys.executable).with_name("p2pspace"))
    subprocess.run(
        [cli, "init", "--home", str(home), "--name", "ann"], check=True, capture_output=True
    )
    os.chmod(home, 0o750)
    proc = subprocess.run(
        [
            cli,
            "run",
            "--home",
            str(home),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            *NO_MDNS,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        f"p2pspace: error: {home} can be read by other users of this computer (mode 750); "
        f"fix it with: chmod 700 {home}"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second, unprivileged user")
async def test_another_user_reads_nothing(shared_tmp: Path) -> None:
    home = shared_tmp / "home"
    async with api_node(home, name="ann") as node:
        node.create_space("notes")
        # Even with the folder opened up for traversal, each file keeps the other user out.
        os.chmod(home, 0o711)
        for name in (STORE_FILE, KEY_FILE, "api.token", "tls.pem", STORE_FILE + "-wal"):
            proc = subprocess.run(
                ["cat", str(home / name)], user="nobody", capture_output=True, timeout=30
            )
            assert proc.returncode != 0 and b"Permission denied" in proc.stderr, name
        os.chmod(home, 0o700)
        listing = subprocess.run(["ls", str(home)], user="nobody", capture_output=True, timeout=30)
        assert listing.returncode != 0 and b"Permission denied" in listing.stderr


def test_a_planted_link_never_receives_a_private_file(shared_tmp: Path) -> None:
    """Another user who could write into the folder plants ``identity.key.tmp`` as a link to
    a file of theirs: the key is never written through it."""
    home = shared_tmp / "home"
    home.mkdir(mode=0o700)
    target = shared_tmp / "leaked"
    (home / "identity.key.tmp").symlink_to(target)
    write_private(home / "identity.key", b"k" * 32)
    assert not target.exists()
    assert not (home / "identity.key").is_symlink()
    assert mode(home / "identity.key") == 0o600


def test_init_refuses_a_home_others_can_write_or_a_link(shared_tmp: Path) -> None:
    cli = str(Path(sys.executable).with_name("p2pspace"))
    loose = shared_tmp / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    proc = subprocess.run(
        [cli, "init", "--home", str(loose), "--name", "ann"], capture_output=True, text=True
    )
    assert proc.returncode != 0 and f"chmod 700 {loose}" in proc.stderr
    assert not (loose / KEY_FILE).exists()
    linked = shared_tmp / "linked"
    linked.symlink_to(loose)
    proc = subprocess.run(
        [cli, "init", "--home", str(linked), "--name", "ann"], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "is a link" in proc.stderr
    assert not (loose / KEY_FILE).exists()
