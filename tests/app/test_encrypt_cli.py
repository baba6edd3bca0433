"""``p2pspace init --encrypt`` end to end with the real command: a node runs on the encrypted
home and writes a record; on disk the store shows none of it; started without the passphrase,
the node says so in one line and exits non-zero, changing nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT
from tests.helpers.cli_node import NODE_ARGS, cli, running, status_of

PASSPHRASE = "correct horse battery staple"
NAME = "Zelda Quillfeather"
SECRET = "the-combination-is-31-41-59"


def without_passphrase(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``p2pspace ARGS --home HOME`` with no passphrase in the environment and no terminal."""
    env = {k: v for k, v in os.environ.items() if k != "P2PSPACE_PASSPHRASE"}
    return subprocess.run(
        [sys.executable, "-m", "p2pspace", *args, "--home", str(home)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


def files(home: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.iterdir())
        if p.is_file() and p.name != "node.lock"
    }


@pytest.fixture(autouse=True)
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The passphrase comes from the environment; the computer's own keyring is never used."""
    monkeypatch.setenv("P2PSPACE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


def test_an_encrypted_home_runs_keeps_its_secrets_and_needs_its_passphrase(
    tmp_path: Path,
) -> None:
    home = tmp_path / "laptop"
    made = cli(home, "init", "--encrypt", "--name", NAME)
    shown = made.stdout.strip()
    assert "encrypted at rest" in made.stderr and "passphrase" in made.stderr

    with running(home, tmp_path / "node.log") as node:
        space = cli(home, "space", "create", "vault", "--tool", "none").stdout.strip()
        cli(home, "rdb", "set", "vault", "notes", "n1", f"text={SECRET}")
        status = status_of(home)
        assert status["online"] is True and status["at_rest"] == "encrypted (passphrase)"
        assert "at rest: encrypted (passphrase)" in cli(home, "status").stdout
    assert node.proc.returncode == 0, node.stderr()

    on_disk = b"".join(p.read_bytes() for p in home.glob("store.sqlite3*"))
    assert not on_disk.startswith(b"SQLite format 3")
    for plaintext in (SECRET.encode(), NAME.encode(), b"vault", bytes.fromhex(space)):
        assert plaintext not in on_disk, plaintext
    assert len((home / "identity.key").read_bytes()) != 32

    before = files(home)
    for args in (("run", *NODE_ARGS), ("rdb", "get", "vault", "notes"), ("id",)):
        proc = without_passphrase(home, *args)
        assert proc.returncode != 0, args
        lines = proc.stderr.splitlines()
        assert lines == [
            f"p2pspace: error: {home} is encrypted and its key is not available: "
            "set P2PSPACE_PASSPHRASE or run in a terminal"
        ], proc.stderr
        assert proc.stdout == ""
    assert files(home) == before

    # With the passphrase, the offline view has everything the node wrote.
    got = json.loads(cli(home, "rdb", "get", "vault", "notes", "n1", "--json").stdout)
    assert got == {"text": SECRET}
    assert cli(home, "id").stdout.strip() == shown


def test_init_encrypt_refuses_an_unencrypted_home(tmp_path: Path) -> None:
    home = tmp_path / "plain"
    cli(home, "init", "--name", NAME)
    before = files(home)
    proc = cli(home, "init", "--encrypt", ok=False)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1 and "not converted in place" in proc.stderr
    assert files(home) == before
    assert json.loads(cli(home, "status", "--json").stdout)["at_rest"] == "plain"
