"""Engine implementations shipped with p2pspace (installed as ``p2pspace.engines``)."""
