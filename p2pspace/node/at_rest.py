"""Encryption at rest: a home's data key, where it is kept, and how a process gets it back.

Theory of operation. A home made with ``p2pspace init --encrypt`` has a random 32-byte *data
key*. Each use gets its own key derived from it (HMAC-SHA256 under a label), so no two uses
share one: the store's SQLCipher key (a raw key, so opening the store runs no KDF), the
AES-256-GCM key that seals the identity key file, and a check value that tells a wrong data key
from a damaged file. The data key itself is kept in one of two places, named by the home's
*record* (``atrest.json``, written by :mod:`~p2pspace.node.home`):

==============  =================================================================================
``keyring``     the OS keyring (Secret Service, macOS Keychain, Windows Credential Locker) holds
                it, as hex, under the service ``p2pspace`` and the home's absolute path; the
                user's login session unlocks it
``passphrase``  the record holds it wrapped (AES-256-GCM) under a key that scrypt derives from a
                passphrase; the salt and scrypt's cost are in the record too
==============  =================================================================================

A passphrase comes from the caller, else ``$P2PSPACE_PASSPHRASE`` (scripts), else the terminal
(asked without echo, up to three tries); with none of these, or a wrong one, :func:`unlock`
raises :class:`StorageError` with one line saying so -- before anything in the home is read
further or written. A keyring counts only if it is one the keyring library recommends (priority
of at least 1): the plaintext file and "fail" backends would keep the key beside the data.

This module reads and writes no file: it turns records into keys and keys into records, and
:mod:`~p2pspace.node.home` keeps them. ``keyring`` (slow to import: it scans its plug-ins) is
imported only for a home that uses it.
"""

from __future__ import annotations

import enum
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from p2pspace.errors import LocalProtocolError, StorageError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

FORMAT = 1
KEYRING_SERVICE = "p2pspace"
PASSPHRASE_ENV = "P2PSPACE_PASSPHRASE"
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16
PROMPT_TRIES = 3
SEAL_MAGIC = b"P2PSEAL1"  # the first bytes of a sealed file: format 1
_LABEL = b"p2pspace-at-rest-v1\0"
_MIN_KEYRING_PRIORITY = 1  # keyring's own threshold for a backend it recommends
_HEX = "0123456789abcdef"


class Method(enum.Enum):
    """Where a home's data key is kept."""

    KEYRING = "keyring"
    PASSPHRASE = "passphrase"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScryptCost:
    """scrypt's parameters for a passphrase. The default (128 MiB, about half a second) is
    OWASP's recommendation for scrypt; a record may carry any cost within these bounds.

    Raises :class:`LocalProtocolError` for parameters outside them.
    """

    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        n_ok = 2**10 <= self.n <= 2**20 and self.n & (self.n - 1) == 0
        if not (n_ok and 1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise LocalProtocolError(
                "scrypt's n is a power of two from 2**10 to 2**20, r is 1-32 and p is 1-16"
            )


SCRYPT_COST = ScryptCost()


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeKey:
    """An unlocked home's data key (never shown by ``repr``) and where it is kept."""

    data: bytes = field(repr=False)
    method: Method

    def __post_init__(self) -> None:
        if len(self.data) != KEY_BYTES:
            raise LocalProtocolError("a data key is 32 bytes")

    def store_key(self) -> bytes:
        """The SQLCipher key of the home's store."""
        return _derive(self.data, b"store")

    def seal(self, purpose: str, plaintext: bytes) -> bytes:
        """``plaintext`` encrypted and authenticated for ``purpose`` (a file's name)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = SEAL_MAGIC + purpose.encode("utf-8")
        sealed = AESGCM(_derive(self.data, b"seal")).encrypt(nonce, plaintext, aad)
        return SEAL_MAGIC + nonce + sealed

    def unseal(self, purpose: str, sealed: bytes, *, where: str) -> bytes:
        """What :meth:`seal` sealed for ``purpose``. Raises :class:`StorageError` naming
        ``where`` if ``sealed`` is not that (another key, another file, damaged)."""
        head = len(SEAL_MAGIC)
        if not sealed.startswith(SEAL_MAGIC) or len(sealed) < head + NONCE_BYTES + 16:
            raise StorageError(f"{where} is not sealed with this home's key")
        nonce, body = sealed[head : head + NONCE_BYTES], sealed[head + NONCE_BYTES :]
        try:
            return AESGCM(_derive(self.data, b"seal")).decrypt(
                nonce, body, SEAL_MAGIC + purpose.encode("utf-8")
            )
        except InvalidTag:
            raise StorageError(f"{where} does not open with this home's key") from None


def describe(record: bytes) -> str:
    """How a record keeps its key, as ``status`` shows it: ``"encrypted (keyring)"``,
    ``"encrypted (passphrase)"``, or ``"encrypted"`` if the record does not say."""
    try:
        method = Method(json.loads(record)["method"])
    except (ValueError, TypeError, KeyError):
        return "encrypted"
    return f"encrypted ({method.value})"


def new_home_key(
    *,
    where: str,
    use_keyring: bool = True,
    passphrase: str | None = None,
    cost: ScryptCost = SCRYPT_COST,
) -> tuple[HomeKey, bytes]:
    """A new data key for the home at ``where`` (its absolute path) and the record to keep.

    The key goes into the OS keyring when ``use_keyring``, no passphrase is given (neither here
    nor in ``$P2PSPACE_PASSPHRASE``) and a recommended keyring exists; otherwise it is wrapped
    under the passphrase (given, from the environment, or asked twice on the terminal).
    Raises :class:`StorageError` if there is no passphrase to be had or the keyring does not
    keep the key, :class:`LocalProtocolError` for an empty passphrase.
    """
    data = secrets.token_bytes(KEY_BYTES)
    record: dict[str, Any] = {"format": FORMAT, "check": _check(data)}
    given = passphrase if passphrase is not None else _from_environment()
    backend = usable_keyring() if use_keyring and given is None else None
    if backend is not None:
        _keep_in_keyring(backend, where, data)
        record.update(method=Method.KEYRING.value, service=KEYRING_SERVICE, user=where)
        return HomeKey(data=data, method=Method.KEYRING), _dump(record)
    if given is None:
        given = _ask_new_passphrase(where)
    if not given:
        raise LocalProtocolError("a passphrase cannot be empty")
    salt = secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(_passphrase_key(given, salt, cost)).encrypt(nonce, data, _LABEL + b"wrap")
    record.update(
        method=Method.PASSPHRASE.value,
        kdf="scrypt",
        salt=salt.hex(),
        n=cost.n,
        r=cost.r,
        p=cost.p,
        wrapped=(nonce + wrapped).hex(),
    )
    return HomeKey(data=data, method=Method.PASSPHRASE), _dump(record)


def unlock(record: bytes, *, where: str, passphrase: str | None = None) -> HomeKey:
    """The data key a home's ``record`` keeps, from the keyring or with the passphrase
    (``passphrase``, else ``$P2PSPACE_PASSPHRASE``, else asked on the terminal).

    Raises :class:`StorageError` -- one line, naming ``where`` -- if the key is not available
    (no keyring entry, no passphrase and no terminal), the passphrase is wrong, or the record
    is damaged.
    """
    fields = _load(record, where)
    method = fields["method"]
    if method == Method.KEYRING.value:
        data = _from_keyring(fields, where)
        key = HomeKey(data=data, method=Method.KEYRING)
    else:
        key = HomeKey(data=_unwrap(fields, where, passphrase), method=Method.PASSPHRASE)
    if not hmac.compare_digest(_check(key.data), fields["check"]):
        raise StorageError(f"the key of {where} does not match it (is its record damaged?)")
    return key


def usable_keyring() -> KeyringBackend | None:
    """The OS keyring if the keyring library finds one it recommends, else None."""
    import keyring
    from keyring.backends.chainer import ChainerBackend

    backend = keyring.get_keyring()
    try:
        chosen = backend.backends[0] if isinstance(backend, ChainerBackend) else backend
        priority = chosen.priority
    except (IndexError, RuntimeError):  # an empty chain; a backend unsuitable here
        return None
    return backend if priority >= _MIN_KEYRING_PRIORITY else None


# -- the two ways of keeping the key ------------------------------------------------------------


def _keep_in_keyring(backend: KeyringBackend, where: str, data: bytes) -> None:
    from keyring.errors import KeyringError

    try:
        backend.set_password(KEYRING_SERVICE, where, data.hex())
        kept = backend.get_password(KEYRING_SERVICE, where)
    except (KeyringError, RuntimeError, OSError) as exc:
        raise StorageError(
            f"the OS keyring refused the key of {where} ({_first_line(exc)}); "
            "use a passphrase instead: p2pspace init --encrypt --passphrase"
        ) from None
    if kept != data.hex():
        raise StorageError(
            f"the OS keyring did not keep the key of {where}; "
            "use a passphrase instead: p2pspace init --encrypt --passphrase"
        )


def _from_keyring(fields: dict[str, Any], where: str) -> bytes:
    import keyring
    from keyring.errors import KeyringError

    service, user = fields.get("service"), fields.get("user")
    if not isinstance(service, str) or not isinstance(user, str):
        raise StorageError(f"the at-rest record of {where} is damaged (no keyring entry named)")
    try:
        value = keyring.get_password(service, user)
    except (KeyringError, RuntimeError, OSError) as exc:
        raise StorageError(
            f"{where} is encrypted and its key is in the OS keyring, which is not available "
            f"here ({_first_line(exc)})"
        ) from None
    if value is None:
        raise StorageError(
            f"{where} is encrypted and its key is not in the OS keyring "
            f"(service {service!r}, user {user!r})"
        )
    try:
        data = bytes.fromhex(value)
    except ValueError:
        data = b""
    if len(data) != KEY_BYTES:
        raise StorageError(f"the OS keyring's entry for {where} is not a p2pspace key")
    return data


def _unwrap(fields: dict[str, Any], where: str, passphrase: str | None) -> bytes:
    try:
        salt = bytes.fromhex(fields["salt"])
        blob = bytes.fromhex(fields["wrapped"])
        cost = ScryptCost(n=fields["n"], r=fields["r"], p=fields["p"])
        if fields["kdf"] != "scrypt" or len(salt) != SALT_BYTES:
            raise ValueError("unknown kdf")
    except (KeyError, TypeError, ValueError, LocalProtocolError):
        raise StorageError(f"the at-rest record of {where} is damaged") from None

    def opened(text: str) -> bytes | None:
        if not text:
            return None
        nonce, wrapped = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            data = AESGCM(_passphrase_key(text, salt, cost)).decrypt(
                nonce, wrapped, _LABEL + b"wrap"
            )
        except InvalidTag:
            return None
        return data if len(data) == KEY_BYTES else None

    wrong = StorageError(f"the passphrase does not open {where}")
    given = passphrase if passphrase is not None else _from_environment()
    if given is not None:
        data = opened(given)
        if data is None:
            raise wrong
        return data
    if not _interactive():
        raise StorageError(
            f"{where} is encrypted and its key is not available: set {PASSPHRASE_ENV} "
            "or run in a terminal"
        )
    for attempt in range(PROMPT_TRIES):
        data = opened(getpass.getpass(f"passphrase for {where}: "))
        if data is not None:
            return data
        if attempt + 1 < PROMPT_TRIES:
            print("that passphrase does not open it; try again", file=sys.stderr)
    raise wrong


def _ask_new_passphrase(where: str) -> str:
    if not _interactive():
        raise StorageError(f"no passphrase for {where}: set {PASSPHRASE_ENV} or run in a terminal")
    first = getpass.getpass(f"new passphrase for {where}: ")
    if getpass.getpass("the same passphrase again: ") != first:
        raise StorageError("the two passphrases differ; nothing was created")
    return first


def _from_environment() -> str | None:
    """``$P2PSPACE_PASSPHRASE``; set but empty counts as not set."""
    return os.environ.get(PASSPHRASE_ENV) or None


def _interactive() -> bool:
    stdin = sys.stdin
    return stdin is not None and stdin.isatty()


def _passphrase_key(passphrase: str, salt: bytes, cost: ScryptCost) -> bytes:
    # NFC: the same passphrase typed on another keyboard or system gives the same bytes.
    text = unicodedata.normalize("NFC", passphrase)
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=cost.n, r=cost.r, p=cost.p)
    return kdf.derive(text.encode("utf-8"))


# -- the record ---------------------------------------------------------------------------------


def _derive(data: bytes, use: bytes) -> bytes:
    return hmac.new(data, _LABEL + use, hashlib.sha256).digest()


def _check(data: bytes) -> str:
    return _derive(data, b"check")[:16].hex()


def _dump(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _load(record: bytes, where: str) -> dict[str, Any]:
    try:
        fields = json.loads(record)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not _is_check(fields.get("check")):
        raise StorageError(f"the at-rest record of {where} is damaged")
    if fields.get("format") != FORMAT:
        raise StorageError(
            f"the at-rest record of {where} is of format {fields.get('format')!r}, "
            f"this release reads format {FORMAT}"
        )
    if fields.get("method") not in {m.value for m in Method}:
        raise StorageError(f"the at-rest record of {where} names no known method")
    return fields


def _is_check(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and set(value) <= set(_HEX)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


__all__ = [
    "FORMAT",
    "KEYRING_SERVICE",
    "PASSPHRASE_ENV",
    "SCRYPT_COST",
    "HomeKey",
    "Method",
    "ScryptCost",
    "describe",
    "new_home_key",
    "unlock",
    "usable_keyring",
]
