"""p2pspace: a peer-to-peer shared-space engine.

The core is sans-IO: :class:`~p2pspace.sync.endpoint.Endpoint` holds an identity, a SQLite store and
the replicas (:class:`~p2pspace.core.replica.Replica`) of the spaces it belongs to, and speaks the
sync protocol through :class:`~p2pspace.sync.session.Session` objects that a driver feeds with
bytes. ``p2pspace.testing`` has the simulated network and in-process links.
"""

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
from p2pspace.sync.endpoint import Endpoint

__version__ = "0.1.0"

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
    "parse_endpoint_id",
]
