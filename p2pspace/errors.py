"""The one exception hierarchy of p2pspace.

Every error the library raises derives from :class:`P2PSpaceError`. The split follows who is at
fault:

* :class:`RemoteProtocolError` -- a peer (or a delta it relayed) misbehaved. It carries a wire
  error code (:class:`ErrorCode`) that an error frame can send back.
* :class:`LocalProtocolError` -- this process misused the API (a bug in the caller).
* :class:`AuthenticationError` -- a signature, hash chain or identity did not check out.
* :class:`ResourceLimitError` -- input exceeded a configured bound (frame size, pending set).
* :class:`StorageError` -- the SQLite store failed or holds something it should not.

Errors of ``cbor2``, ``cryptography`` and ``sqlite3`` are translated at the module boundary that
calls them; they never reach callers raw.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Wire codes carried by error frames and by :class:`RemoteProtocolError`."""

    MALFORMED = 1
    UNKNOWN_TYPE = 2
    UNSUPPORTED_VERSION = 3
    FRAME_TOO_LARGE = 4
    BAD_SIGNATURE = 5
    BAD_CHAIN = 6
    BAD_RANK = 7
    NOT_MEMBER = 8
    BAD_COMMAND = 9
    EQUIVOCATION = 10
    WRONG_SPACE = 11
    TOO_FAR_AHEAD = 12
    UNEXPECTED_MESSAGE = 13
    LIMIT_EXCEEDED = 14
    INTERNAL = 15
    INVITATION_REFUSED = 16
    NOT_AUTHORIZED = 17
    QUOTA_EXCEEDED = 18
    BAD_SNAPSHOT = 19


class P2PSpaceError(Exception):
    """Root of every error raised by p2pspace."""


class LocalProtocolError(P2PSpaceError):
    """The caller misused the API; nothing was changed."""


class NotFoundError(LocalProtocolError):
    """The thing asked for (a space, a post, a record) does not exist here."""


class PermissionDeniedError(LocalProtocolError):
    """The change is not this endpoint's to make (e.g. editing another member's post)."""


class ConflictError(LocalProtocolError):
    """The change does not apply to the current state (e.g. nothing to undo, already deleted)."""


class StorageError(P2PSpaceError):
    """The store could not be read or written, or its contents are inconsistent."""


class UnsafePermissionsError(StorageError):
    """The home folder or the identity key can be read by other users of this computer: a
    node refuses to start there (the message says how to fix it)."""


class RemoteProtocolError(P2PSpaceError):
    """A peer sent something invalid. ``code`` is the wire error code to report back.

    ``blames_sender`` says whose fault it is: True when the bytes themselves prove the peer
    that sent them misbehaved (malformed, forged); False for an authentic delta that breaks a
    rule of the space -- its *creator* is at fault, and the peer that relayed it may simply
    have decided differently (an older release, or not yet holding what we hold), so the
    session with that peer stays open.
    """

    code: ErrorCode = ErrorCode.MALFORMED
    blames_sender: bool = True

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class AuthenticationError(RemoteProtocolError):
    """A signature, hash chain or claimed identity did not verify."""

    code = ErrorCode.BAD_SIGNATURE


class ResourceLimitError(RemoteProtocolError):
    """Input exceeded a configured bound; it was refused rather than buffered."""

    code = ErrorCode.LIMIT_EXCEEDED


class MalformedError(RemoteProtocolError):
    """Bytes that do not decode to a valid value of the expected schema."""

    code = ErrorCode.MALFORMED


class SnapshotError(RemoteProtocolError):
    """A snapshot (or one of its chunks) does not verify: a corrupted or forged chunk, state
    whose digest is not the one its checkpoint attests, or a checkpoint that is not one. It
    replaces nothing; the receiver asks another member, or falls back to deltas."""

    code = ErrorCode.BAD_SNAPSHOT


class InvalidDeltaError(RemoteProtocolError):
    """A delta failed verification. Subclasses name the rule it broke."""


class UnsupportedFormatError(MalformedError):
    """A delta in a format this release does not read (made by a newer release): not the
    relaying peer's fault."""

    code = ErrorCode.UNSUPPORTED_VERSION
    blames_sender = False


class ForgedDeltaError(InvalidDeltaError, AuthenticationError):
    """Bad signature, or a hash chain that does not link to a verified signature."""

    code = ErrorCode.BAD_SIGNATURE


class BrokenChainError(ForgedDeltaError):
    """The delta's previous-hash does not match its creator's previous delta."""

    code = ErrorCode.BAD_CHAIN


class RankError(InvalidDeltaError):
    """The delta's rank is not 1 + the highest rank among its dependency heads."""

    code = ErrorCode.BAD_RANK


class NotMemberError(InvalidDeltaError):
    """The creator is not a member of the space in the delta's causal past."""

    code = ErrorCode.NOT_MEMBER
    blames_sender = False


class NotAuthorizedError(InvalidDeltaError):
    """The creator's role in the delta's causal past does not allow one of its commands
    (a guest writing, a participant managing members, the last manager leaving)."""

    code = ErrorCode.NOT_AUTHORIZED
    blames_sender = False


class QuotaExceededError(InvalidDeltaError, ResourceLimitError):
    """The creator's deltas in this space exceed the per-member quota in its causal past."""

    code = ErrorCode.QUOTA_EXCEEDED
    blames_sender = False


class CommandError(InvalidDeltaError):
    """A command is not well-formed for its engine, or names an unknown engine instance."""

    code = ErrorCode.BAD_COMMAND


class WrongSpaceError(InvalidDeltaError):
    """The delta belongs to a different space than the one it was delivered for."""

    code = ErrorCode.WRONG_SPACE


class EquivocationError(InvalidDeltaError):
    """A second, different delta with an id already seen; evidence is stored and one copy,
    chosen by the same rule everywhere, is kept."""

    code = ErrorCode.EQUIVOCATION
    blames_sender = False


class TooFarAheadError(InvalidDeltaError, ResourceLimitError):
    """The delta depends on deltas too far beyond the local replica to buffer."""

    code = ErrorCode.TOO_FAR_AHEAD
    blames_sender = False


class FrameTooLargeError(ResourceLimitError):
    """A frame's declared length exceeds the hard maximum."""

    code = ErrorCode.FRAME_TOO_LARGE


class InvitationError(P2PSpaceError):
    """An invitation code is malformed, forged, expired or already used; nothing was changed."""


class TransportError(P2PSpaceError):
    """A connection could not be made or broke (unreachable address, reset, TLS failure)."""
