"""The pure wire protocol: how two endpoints keep a space in sync over one connection.

This layer decides what crosses a connection and what it means: frames (:mod:`.framing`), the
closed set of messages (:mod:`.messages`), the key proof and join messages of the handshake
(:mod:`.handshake`), invitation codes (:mod:`.invitations`), the per-peer state machine that
turns bytes into events (:mod:`.session`, with :mod:`.space_link` and :mod:`.outbox`), the
sync states shown to users (:mod:`.syncstate`), and the endpoint that applies what sessions
receive to its replicas (:mod:`.endpoint`).

Sans-IO: no trio, sockets, ssl, asyncio or zeroconf, no clock (time is passed in). May import
:mod:`p2pspace.core` and :mod:`p2pspace.errors` only; engines and tools reach it through the
core's registry, and the node drives it.
"""
