"""Tools built on engines (installed as ``p2pspace.tools``)."""
