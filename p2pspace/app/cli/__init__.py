"""The ``p2pspace`` command line.

Simulation: ``demo``, ``simulate``, ``bench``. A real endpoint: ``init``, ``id``, ``run``,
``space create|list|leave``, ``member list|remove|role``, ``invite``, ``join``,
``rdb set|get|delete``,
``discuss post|reply|edit|delete|undo|show``, ``status``, ``open``; each works on a home folder
(``--home``, else ``$P2PSPACE_HOME``, else ``$XDG_DATA_HOME/p2pspace`` or
``~/.local/share/p2pspace``).

How a command reaches the endpoint. If ``home/api.json`` names a URL that answers with the token
in ``home/api.token``, the command goes through the running node's HTTP API. Otherwise it works
on the store directly ("offline"), holding the home's lock for the duration of the command: a
temporary node that neither listens nor discovers. ``invite`` and ``open`` (the web UI) need a
running node (the code carries its address; the UI is served by the node); an offline ``join``
runs a temporary node until the space has caught up.

A command answers like ``git``: ``--help``, a usage error and every command a running node
serves import the standard library and this package's light modules only -- no trio, HTTP
server, cryptography, CBOR, SQLite, demo, simulator or bench (``tests/app/test_cli_imports.py``
checks it, bench workload W7 times it). The modules, in the order a command meets them:

* :mod:`~p2pspace.app.cli.dispatch` -- ``main``/``entry``: parse, run, map user errors to one line
* :mod:`~p2pspace.app.cli.parser` -- the grammar (argparse)
* :mod:`~p2pspace.app.cli.commands` -- one function per command
* :mod:`~p2pspace.app.cli.choose_backend` -- online (the node's API) or offline (the store)
* :mod:`~p2pspace.app.cli.backend` -- what a command needs from the endpoint; the CLI's errors
* :mod:`~p2pspace.app.cli.http_backend` -- the running node's API, standard library only
* :mod:`~p2pspace.app.cli.offline_backend` -- a temporary node on the store (trio, the core)
* :mod:`~p2pspace.app.cli.run_node` -- ``run``: the node in the foreground
* :mod:`~p2pspace.app.cli.rendering` -- status, threads, events; terminal-safe text

Every error a user can cause prints one line on stderr and exits non-zero, without a traceback.
"""

from p2pspace.app.cli.dispatch import entry, main

__all__ = ["entry", "main"]
