"""p2pspace: a peer-to-peer shared-space engine.

The core is sans-IO: an :class:`~p2pspace.sync.endpoint.Endpoint` (``open_endpoint(folder)``)
holds an identity, a SQLite store and the replicas (:class:`~p2pspace.core.replica.Replica`) of
the spaces it belongs to, and speaks the sync protocol through
:class:`~p2pspace.sync.session.Session` objects that a driver feeds with bytes.
``p2pspace.testing`` has the simulated network, in-process links and the engine contract suite;
``p2pspace.node`` runs an endpoint on a real network.

The names below are imported on first use, not with this package: importing any submodule (the
command line above all) must not load the engine, cryptography and SQLite along with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pspace.core.delta import Command, Delta, DeltaId
    from p2pspace.core.identity import Identity, format_endpoint_id, parse_endpoint_id
    from p2pspace.core.replica import Replica
    from p2pspace.errors import (
        AuthenticationError,
        LocalProtocolError,
        P2PSpaceError,
        RemoteProtocolError,
        ResourceLimitError,
        StorageError,
    )
    from p2pspace.node.home import open_endpoint
    from p2pspace.sync.endpoint import Endpoint

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "AuthenticationError": "p2pspace.errors",
    "Command": "p2pspace.core.delta",
    "Delta": "p2pspace.core.delta",
    "DeltaId": "p2pspace.core.delta",
    "Endpoint": "p2pspace.sync.endpoint",
    "Identity": "p2pspace.core.identity",
    "LocalProtocolError": "p2pspace.errors",
    "P2PSpaceError": "p2pspace.errors",
    "RemoteProtocolError": "p2pspace.errors",
    "Replica": "p2pspace.core.replica",
    "ResourceLimitError": "p2pspace.errors",
    "StorageError": "p2pspace.errors",
    "format_endpoint_id": "p2pspace.core.identity",
    "open_endpoint": "p2pspace.node.home",
    "parse_endpoint_id": "p2pspace.core.identity",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2pspace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AuthenticationError",
    "Command",
    "Delta",
    "DeltaId",
    "Endpoint",
    "Identity",
    "LocalProtocolError",
    "P2PSpaceError",
    "RemoteProtocolError",
    "Replica",
    "ResourceLimitError",
    "StorageError",
    "__version__",
    "format_endpoint_id",
    "open_endpoint",
    "parse_endpoint_id",
]
