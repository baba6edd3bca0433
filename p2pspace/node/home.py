"""An endpoint's home folder: every file name in it, and the one way private files are written.

Theory of operation. One folder holds everything an endpoint keeps (``~/.local/share/p2pspace``
unless told otherwise):

=================  ==========================================================================
``identity.key``   the raw 32-byte Ed25519 private key (mode 0600); the endpoint's identity
``store.sqlite3``  the SQLite store of every replica (plus its WAL files)
``tls.pem``        the TLS key and self-signed certificate made from the identity key (0600)
``atrest.json``    only in a home encrypted at rest: where its data key is kept
``config.json``    settings kept between runs (the display name)
``peers.json``     the address book: peers dialled successfully before
``node.lock``      held (``flock``) by the one process using the store
``api.token``      the local API's token (0600), new on every node start
``api.json``       where the running node's API listens (``{"url", "pid"}``), while it runs
``open.html``      the page ``p2pspace open`` hands the browser: it forwards to a one-time link
=================  ==========================================================================

The folder is created mode 0700 (:func:`make_home`) and every file in it is 0600 whatever the
umask: private files are written by :func:`write_private` (a temporary file renamed over the old
one, so a crash leaves the old file or the new one, never half of either); the store is created
0600 before SQLite opens it, and SQLite gives its WAL and shared-memory files the store's mode.
A node refuses to start on a home folder or identity key that other users can read
(:func:`check_private`): one line says which ``chmod`` fixes it.

A home made with ``p2pspace init --encrypt`` (:func:`encrypt_new_home`) is encrypted at rest:
its store is a SQLCipher database and ``identity.key`` is sealed (AES-256-GCM), both under its
data key (:mod:`~p2pspace.node.at_rest`), and ``tls.pem``'s key is encrypted too
(:mod:`~p2pspace.node.tls`). Whatever reads the identity or opens the store unlocks the home
first (:func:`unlock`; :func:`open_endpoint` does it once for both). A home without
``atrest.json`` is plain, and its store is opened by the standard ``sqlite3`` as before.

This module imports only the standard library at import time (the command line reads
``api.json`` and ``api.token`` through it without loading the engine); what needs the core
(identity, store, endpoint) is imported where it is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pspace.errors import (
    LocalProtocolError,
    P2PSpaceError,
    StorageError,
    UnsafePermissionsError,
)

if TYPE_CHECKING:
    from p2pspace.core.causal import Limits
    from p2pspace.core.identity import Identity
    from p2pspace.core.store import Store
    from p2pspace.node.at_rest import HomeKey, ScryptCost
    from p2pspace.sync.endpoint import Endpoint

KEY_FILE = "identity.key"
STORE_FILE = "store.sqlite3"
CERT_FILE = "tls.pem"
CONFIG_FILE = "config.json"
PEERS_FILE = "peers.json"
LOCK_FILE = "node.lock"
TOKEN_FILE = "api.token"
INFO_FILE = "api.json"
OPEN_FILE = "open.html"  # the page `p2pspace open` hands the browser (forwards to a one-time link)
AT_REST_FILE = "atrest.json"
MAX_BOOK = 256  # peers kept in the address book
PROOF_CONTEXT = b"p2pspace-api-proof-v1\0"

log = logging.getLogger("p2pspace.node")


def write_private(path: Path, data: bytes | str, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, readable by this user only (mode 0600).

    ``sync`` also flushes the file to disk before it replaces the old one (keys).
    Raises :class:`StorageError` if the folder or the file cannot be written.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    make_home(path.parent)
    try:
        # A fresh file, never one that is there already or a link planted in its place.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the mode os.open gave was filtered by the umask
            os.write(fd, raw)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from None


def make_home(home: Path) -> None:
    """Create ``home`` (and missing parents) if it does not exist, the folder itself mode 0700.
    An existing folder is left as it is (:func:`check_private` judges it). Raises
    :class:`StorageError` if it cannot be created."""
    if home.is_dir():
        return
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        home.mkdir(mode=0o700)
        os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create {home}: {exc}") from None


def check_private(home: Path) -> None:
    """Refuse a home folder, or an identity key, that other users of this computer can use.

    Raises :class:`UnsafePermissionsError` naming the ``chmod`` that fixes it.
    """
    for path, mode in ((home, 0o700), (home / KEY_FILE, 0o600)):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from None
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafePermissionsError(
                f"{path} is a link, or belongs to another user of this computer: p2pspace "
                "keeps its files only in a folder of your own"
            )
        current = stat.S_IMODE(info.st_mode)
        if current & 0o077:
            raise UnsafePermissionsError(
                f"{path} can be read by other users of this computer (mode {current:o}); "
                f"fix it with: chmod {mode:o} {path}"
            )


def tighten(path: Path) -> None:
    """Make an existing file (a store written by an older release) mode 0600."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot change the mode of {path}: {exc}") from None


# -- encryption at rest --------------------------------------------------------------------------


def is_encrypted(home: Path) -> bool:
    """True if ``home`` is encrypted at rest (``p2pspace init --encrypt``)."""
    return (home / AT_REST_FILE).exists()


def at_rest_state(home: Path) -> str:
    """``"plain"``, ``"encrypted (keyring)"`` or ``"encrypted (passphrase)"``: what ``status``
    says of ``home``."""
    try:
        record = (home / AT_REST_FILE).read_bytes()
    except FileNotFoundError:
        return "plain"
    except OSError:
        return "encrypted"
    from p2pspace.node.at_rest import describe

    return describe(record)


def unlock(home: Path, *, passphrase: str | None = None) -> HomeKey | None:
    """The data key of an encrypted home; None for a plain one (no ``atrest.json``).

    The key comes from the OS keyring or a passphrase (``passphrase``, else
    ``$P2PSPACE_PASSPHRASE``, else asked on the terminal). Raises :class:`StorageError`, one
    line, if it is not available or the passphrase is wrong; nothing in ``home`` is changed.
    """
    path = home / AT_REST_FILE
    try:
        record = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    from p2pspace.node import at_rest

    return at_rest.unlock(record, where=str(home), passphrase=passphrase)


def encrypt_new_home(
    home: Path,
    *,
    use_keyring: bool = True,
    passphrase: str | None = None,
    cost: ScryptCost | None = None,
) -> HomeKey:
    """Make ``home`` encrypted at rest before its endpoint is created: a new data key, kept in
    the OS keyring or under a passphrase (see :func:`~p2pspace.node.at_rest.new_home_key`). A
    home that is encrypted already is unlocked instead.

    Raises :class:`LocalProtocolError` if ``home`` holds an unencrypted identity or store: it is
    not converted in place (its plaintext could survive in the disk's free blocks anyway), and
    :class:`StorageError` if no key can be kept.
    """
    from p2pspace.node import at_rest

    existing = unlock(home, passphrase=passphrase)
    if existing is not None:
        return existing
    store = home / STORE_FILE
    if (home / KEY_FILE).exists() or (store.exists() and store.stat().st_size > 0):
        raise LocalProtocolError(
            f"{home} already holds an unencrypted endpoint and is not converted in place; "
            "make an encrypted one in a new folder (p2pspace init --encrypt --home NEW) and "
            "join your spaces from it"
        )
    make_home(home)
    key, record = at_rest.new_home_key(
        where=str(home.resolve()),
        use_keyring=use_keyring,
        passphrase=passphrase,
        cost=cost or at_rest.SCRYPT_COST,
    )
    write_private(home / AT_REST_FILE, record, sync=True)
    return key


# -- identity, store, endpoint ----------------------------------------------------------------


def is_initialized(home: Path) -> bool:
    """True if ``home`` holds an identity (``p2pspace init`` or a node ran there)."""
    return (home / KEY_FILE).exists()


def load_or_create_identity(
    home: Path, *, seed: bytes | None = None, home_key: HomeKey | None = None
) -> Identity:
    """The identity kept in ``home``; created (mode 0600) if the folder has none yet.

    ``seed`` makes a newly created key deterministic (simulations); it is ignored when a key
    already exists. In a home encrypted at rest the key file is sealed under ``home_key``
    (unlocked here if not given). Raises :class:`StorageError` if the key file is unreadable
    or corrupt, or the home cannot be unlocked.
    """
    from p2pspace.core.identity import Identity

    if home_key is None:
        home_key = unlock(home)
    path = home / KEY_FILE
    if path.exists():
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from None
        if home_key is not None:
            raw = home_key.unseal(KEY_FILE, raw, where=str(path))
        if len(raw) != 32:
            raise StorageError(f"{path} is not a 32-byte Ed25519 key")
        return Identity.from_private_bytes(raw)
    identity = Identity.from_seed(seed) if seed is not None else Identity.generate()
    raw = identity.private_bytes()
    write_private(path, raw if home_key is None else home_key.seal(KEY_FILE, raw), sync=True)
    return identity


def open_store(home: Path, *, durability: str = "full", home_key: HomeKey | None = None) -> Store:
    """The home's SQLite store (created with the folder if missing): a SQLCipher database
    under ``home_key`` in a home encrypted at rest (unlocked here if not given). Raises
    :class:`StorageError`."""
    from p2pspace.core.store import Store

    if home_key is None:
        home_key = unlock(home)
    make_home(home)
    path = home / STORE_FILE
    try:
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files this mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc}") from None
    for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
        tighten(home / name)
    key = None if home_key is None else home_key.store_key()
    return Store(path, durability=durability, key=key)


def open_endpoint(
    home: Path,
    *,
    seed: bytes | None = None,
    durability: str = "full",
    limits: Limits | None = None,
    name: str = "",
    new_store: bool = False,
    home_key: HomeKey | None = None,
) -> Endpoint:
    """The endpoint kept in ``home``: its identity (created if new) and store, every replica
    loaded. A home encrypted at rest is unlocked once, before anything is read (unless
    ``home_key`` is given). The caller closes it (:meth:`Endpoint.close`). Raises
    :class:`StorageError`, also when the home cannot be unlocked, or the identity exists but
    the store is missing (unless ``new_store``) or belongs to another endpoint."""
    from p2pspace.core.causal import Limits
    from p2pspace.core.membership import member_name_problem
    from p2pspace.sync.endpoint import Endpoint

    problem = member_name_problem(name)
    if problem is not None:
        raise LocalProtocolError(f"this endpoint's name cannot be used: {problem}")
    had_identity = (home / KEY_FILE).exists()
    if had_identity and not (home / STORE_FILE).exists() and not new_store:
        # A deleted or lost store must not be silently replaced by an empty one: this
        # endpoint's own changes would be made again under sequence numbers its peers hold.
        raise StorageError(
            f"{home / STORE_FILE} is missing but this endpoint's identity key is there: restore "
            "the store from a backup, or start with an empty one explicitly (p2pspace init "
            "--new-store), which recovers this endpoint's changes from its peers first"
        )
    if home_key is None:
        home_key = unlock(home)
    identity = load_or_create_identity(home, seed=seed, home_key=home_key)
    store = open_store(home, durability=durability, home_key=home_key)
    try:
        store.claim_owner(identity.endpoint_id)
        return Endpoint(identity, store, limits=limits or Limits(), name=name)
    except BaseException:
        store.close()
        raise


def certificate_path(home: Path) -> Path:
    return home / CERT_FILE


# -- settings and the address book -----------------------------------------------------------


def read_config(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from None
    return value if isinstance(value, dict) else {}


def write_config(home: Path, **values: Any) -> None:
    config = read_config(home)
    config.update(values)
    write_private(home / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True))


def read_address_book(home: Path) -> dict[bytes, list[tuple[str, int]]]:
    """Peers this endpoint dialled successfully before: endpoint id -> addresses."""
    from p2pspace.sync import invitations

    path = home / PEERS_FILE
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    book: dict[bytes, list[tuple[str, int]]] = {}
    if not isinstance(raw, dict):
        return book
    for key, addresses in list(raw.items())[:MAX_BOOK]:
        try:
            peer = bytes.fromhex(key)
            parsed = [invitations.split_address(a) for a in addresses][: invitations.MAX_ADDRESSES]
        except (ValueError, TypeError, P2PSpaceError):
            continue
        if len(peer) == 16 and parsed:
            book[peer] = parsed
    return book


def write_address_book(home: Path, book: dict[bytes, list[tuple[str, int]]]) -> None:
    """Keep the address book; a failure is logged (it is only a cache of addresses)."""
    from p2pspace.sync import invitations

    data = {
        peer.hex(): [invitations.join_address(h, p) for h, p in addresses]
        for peer, addresses in list(book.items())[-MAX_BOOK:]
    }
    try:
        write_private(home / PEERS_FILE, json.dumps(data, indent=1, sort_keys=True))
    except StorageError as exc:
        log.warning("%s", exc)


@contextlib.contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """Exclusive use of a home folder's store by one process (a node or an offline command).

    Raises :class:`LocalProtocolError` if another process holds it.
    """
    path = home / LOCK_FILE
    check_private(home)  # before anything is written there (offline commands, init, a node)
    make_home(home)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalProtocolError(
                f"another p2pspace process is using {home} (is a node running there?)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


# -- the local API's files ----------------------------------------------------------------------


def read_token(home: Path) -> str | None:
    """The token in ``home/api.token``, or None if there is none (never creates one)."""
    try:
        return (home / TOKEN_FILE).read_text("ascii").strip() or None
    except (OSError, ValueError):
        return None


def new_token(home: Path) -> str:
    """A fresh API token, written to ``home/api.token`` (mode 0600) over the previous one: every
    node start rotates it, so a token that leaked from an earlier run opens nothing.

    Raises :class:`StorageError` if the file cannot be written.
    """
    token = secrets.token_urlsafe(32)
    write_private(home / TOKEN_FILE, token + "\n")
    return token


def token_proof(token: str, url: str, challenge: bytes) -> str:
    """What a node serving its API at ``url`` with ``token`` answers to ``challenge`` (hex):
    the command line checks it before it sends the token (``GET /api/proof``)."""
    message = PROOF_CONTEXT + url.encode("utf-8") + b"\0" + challenge
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).hexdigest()


def info_path(home: Path) -> Path:
    """Where a running node says where its API listens."""
    return home / INFO_FILE


__all__ = [
    "AT_REST_FILE",
    "CERT_FILE",
    "CONFIG_FILE",
    "INFO_FILE",
    "KEY_FILE",
    "LOCK_FILE",
    "OPEN_FILE",
    "PEERS_FILE",
    "STORE_FILE",
    "TOKEN_FILE",
    "at_rest_state",
    "certificate_path",
    "check_private",
    "encrypt_new_home",
    "home_lock",
    "info_path",
    "is_encrypted",
    "is_initialized",
    "load_or_create_identity",
    "make_home",
    "new_token",
    "open_endpoint",
    "open_store",
    "read_address_book",
    "read_config",
    "read_token",
    "tighten",
    "token_proof",
    "unlock",
    "write_address_book",
    "write_config",
    "write_private",
]
