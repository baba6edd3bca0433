"""Programs on a node: the local HTTP API and web UI, the command line, the demo, the bench.

What this layer decides: how a person or a local program reaches a node -- over HTTP on
loopback with a token (:mod:`p2pspace.app.api`, :mod:`p2pspace.app.web`), from a terminal
(:mod:`p2pspace.app.cli`, the ``p2pspace`` command) -- and the programs built on nodes
(:mod:`p2pspace.app.demo`, :mod:`p2pspace.app.bench`). A node does not start its API; the
program that opens the node does (``serve_api(node, host, port, token)``).

What it may import: anything (core, sync, node, engines, tools, testing, errors); nothing below
imports it. The command line's fast path imports only the standard library,
:mod:`p2pspace.node.home` (the home's file names, read to find a running node),
:mod:`p2pspace.app.space_tools` and the bench's workload names, so this ``__init__`` imports
nothing.
"""
