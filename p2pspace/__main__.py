"""``python -m p2pspace``: the same as the ``p2pspace`` command."""

from p2pspace.app.cli import entry

entry()
