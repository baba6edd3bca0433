"""Helpers for tests that are not tests themselves (pytest collects nothing here)."""

# The bound on every wait for something real -- a process, a socket, a peer.
TIMEOUT = 30.0
