"""``p2pspace bench``: the workloads of the performance issues, each with a same-run baseline.

* **W1 local commit**, **W2 catch-up** (each with authorisation enforced and, in the same run,
  without it), **W3 concurrent merge** -- one process, no network
  (:mod:`~p2pspace.app.bench.local`).
* **W3R** -- W3 in a space of 20 members while a manager changes 5 roles
  (:mod:`~p2pspace.app.bench.merge`).
* **W4 latency**, **W5 network catch-up** -- trio nodes over TLS on loopback
  (:mod:`~p2pspace.app.bench.network`).
* **W6 thread load** -- a large discussion read through the local HTTP API
  (:mod:`~p2pspace.app.bench.api`).
* **W7 CLI latency** -- whole ``p2pspace`` processes against a running node
  (:mod:`~p2pspace.app.bench.cli`).
* **W8 long history** -- three members over a long history with automatic checkpoints and
  purge: storage, a new member's join, a backdated delta (:mod:`~p2pspace.app.bench.history`).
* **W10 strangers' memory** -- a node's resident memory while it holds 1,000 unauthenticated
  connections, over the same node idle (:mod:`~p2pspace.app.bench.strangers`).
* **W9 many endpoints** -- the simulated network at 20 and 50 endpoints under every network
  fault (:mod:`~p2pspace.app.bench.many`).

:mod:`~p2pspace.app.bench.suite` runs them (``run``, ``QUICK`` sizes) and
:mod:`~p2pspace.app.bench.report` merges repeated runs into medians and prints them. Every
workload runs in a fresh temporary folder on the local disk with ``durability="full"``.

This package's ``__init__`` holds only the workload names: the command line's parser imports it,
and must not pay for the workloads themselves.
"""

WORKLOADS = ("W1", "W2", "W3", "W3R", "W4", "W5", "W6", "W7", "W8", "W9", "W10")

__all__ = ["WORKLOADS"]
