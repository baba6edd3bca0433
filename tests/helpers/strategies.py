"""Hypothesis strategies for sync-protocol messages (shared by the message and framing tests).

Every strategy draws only valid values: each message it builds passes its constructor's checks
and round-trips through ``encode_message``/``decode_message``.
"""

from __future__ import annotations

from hypothesis import strategies as st

from p2pspace.core.delta import MAX_SEQ
from p2pspace.errors import ErrorCode
from p2pspace.sync.messages import (
    MAX_ERROR_TEXT,
    Ack,
    Deltas,
    Error,
    Fetch,
    Hello,
    Message,
    Revision,
    Synced,
)

ids16 = st.binary(min_size=16, max_size=16)
seqs = st.integers(min_value=0, max_value=MAX_SEQ)
vectors = st.dictionaries(ids16, seqs, max_size=8).map(lambda d: tuple(sorted(d.items())))


@st.composite
def fetch_ranges(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """One ``(creator, first, last)`` range of a Fetch, ``1 <= first <= last``."""
    first = draw(st.integers(min_value=1, max_value=MAX_SEQ))
    last = draw(st.integers(min_value=first, max_value=MAX_SEQ))
    return draw(ids16), first, last


hellos = st.builds(
    Hello,
    endpoint=ids16,
    spaces=st.lists(ids16, max_size=6).map(tuple),
    reply=st.booleans(),
)
revisions = st.builds(Revision, space=ids16, vector=vectors)
syncs = st.builds(Synced, space=ids16, vector=vectors)
acks = st.builds(Ack, space=ids16, vector=vectors)
deltas = st.builds(
    Deltas, space=ids16, wires=st.lists(st.binary(max_size=60), min_size=1, max_size=6).map(tuple)
)
fetches = st.builds(
    Fetch, space=ids16, ranges=st.lists(fetch_ranges(), min_size=1, max_size=6).map(tuple)
)
errors = st.builds(
    Error,
    code=st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([int(c) for c in ErrorCode]),
    message=st.text(max_size=MAX_ERROR_TEXT),
)
messages: st.SearchStrategy[Message] = st.one_of(
    hellos, revisions, syncs, acks, deltas, fetches, errors
)
