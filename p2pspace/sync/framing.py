"""Length-prefixed frames: a 4-byte big-endian length, then that many payload bytes.

:class:`FrameDecoder` keeps the bytes fed and parses them either all at once (:meth:`feed`,
every complete frame) or one frame at a time (:meth:`append` then :meth:`next_frame`, the
session's pull). Its driver drains every complete frame after each read, so memory is bounded by
what the driver reads per call (transports read bounded chunks) plus one frame. A declared length
above ``max_frame`` raises :class:`~p2pspace.errors.FrameTooLargeError` before any of that frame
is buffered. ``max_frame`` may change between frames: a peer that has proven nothing gets a small
one (the handshake's), a member the full :data:`MAX_FRAME`.
"""

from __future__ import annotations

from p2pspace.errors import FrameTooLargeError, LocalProtocolError

MAX_FRAME = 4 * 1024 * 1024
HEADER = 4


def frame(payload: bytes, *, max_frame: int = MAX_FRAME) -> bytes:
    """``payload`` with its length prefix. Raises :class:`LocalProtocolError` if too large."""
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds {max_frame}")
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    A frame still incomplete once what arrived is parsed moves to a buffer of exactly its
    declared length, which the bytes that follow fill in place: holding a partial frame costs
    its length (at most ``max_frame``), not a growing buffer's slack and the holes it leaves.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()  # received, not yet parsed (follows the partial frame)
        self._need: int | None = None  # the declared length of the frame being read
        self._partial: bytearray | None = None  # that frame, when it did not arrive at once
        self._filled = 0  # bytes of ``_partial`` received

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._filled

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of every frame now complete."""
        self.append(data)
        out: list[bytes] = []
        while (payload := self.next_frame()) is not None:
            out.append(payload)
        return out

    def append(self, data: bytes) -> None:
        """Add received bytes without parsing them (:meth:`next_frame` does, one at a time)."""
        partial = self._partial
        if partial is None or self._filled == len(partial):
            self._buffer += data
            return
        take = min(len(data), len(partial) - self._filled)
        with memoryview(data) as view:
            partial[self._filled : self._filled + take] = view[:take]
            self._buffer += view[take:]
        self._filled += take

    def next_frame(self) -> bytes | None:
        """The payload of the next complete frame, or None until more bytes arrive. Raises
        :class:`FrameTooLargeError` on a declared length over the maximum."""
        partial = self._partial
        if partial is not None:
            if self._filled < len(partial):
                return None
            self._partial, self._filled, self._need = None, 0, None
            return bytes(partial)
        if self._need is None:
            if len(self._buffer) < HEADER:
                return None
            length = int.from_bytes(self._buffer[:HEADER], "big")
            if length > self.max_frame:
                self._buffer.clear()
                raise FrameTooLargeError(
                    f"frame of {length} bytes exceeds the maximum of {self.max_frame}"
                )
            del self._buffer[:HEADER]
            self._need = length
        need = self._need
        if len(self._buffer) < need:
            # Everything buffered belongs to this frame: move it where the rest will land.
            self._partial = bytearray(need)
            self._filled = len(self._buffer)
            self._partial[: self._filled] = self._buffer
            self._buffer = bytearray()
            return None
        with memoryview(self._buffer) as view:
            payload = bytes(view[:need])
        del self._buffer[:need]
        self._need = None
        return payload

    @property
    def mid_frame(self) -> bool:
        """True while part of a frame has arrived (a stalled peer leaves this set)."""
        return self._need is not None or bool(self._buffer)
