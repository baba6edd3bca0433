"""Engine implementations shipped with p2pspace (installed as ``p2pspace.engines``).

What this layer decides: how each engine kind executes and undoes its commands on its state
(``members``, the built-in membership engine; ``rdb``, the record database). It may import
``p2pspace.core``, ``p2pspace.errors`` and its own modules -- never ``sync``, ``node``, ``tools``
or ``app``.

Importing this package registers the built-in engines with
:func:`p2pspace.core.engine_registry.register_engine` (each module registers its own class when
imported). They are also declared as entry points of the ``p2pspace.engines`` group, the way a
third-party engine package declares its own, so a replica finds them even when nothing imported
this package first.
"""

from p2pspace.engines import members, rdb

__all__ = ["members", "rdb"]
