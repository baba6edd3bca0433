"""The pure core: what a replica of a space contains, and every rule it decides alone.

What this layer decides: identities and ids (``identity``), canonical bytes (``codec``), what a
delta is (``delta``), the engine interface and the registry of engine kinds (``engine``,
``engine_registry``), the membership rules (``membership``), what founds a space
(``genesis``), how this endpoint writes its own deltas (``authoring``), which received deltas
are authentic and ready (``authenticity``, ``causal``), which wait during a catch-up
(``staging``), where the total order is executed (``merge``), where SQLite is touched
(``store``), what a peer gets from our log (``serving``), how replicas are compared
(``audit``), and the facade its owners drive (``replica``).

What it may import: only ``p2pspace.core`` and ``p2pspace.errors`` -- no engine implementation
(engines register themselves from above), and no trio, socket, ssl, asyncio, selectors or
zeroconf: time and randomness are passed in. This file imports nothing, so importing one core
module stays cheap.
"""
