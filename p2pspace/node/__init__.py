from p2pspace.node.node import DEFAULT_PORT, Node, PeerConnection, home_lock, open_node

__all__ = ["DEFAULT_PORT", "Node", "PeerConnection", "home_lock", "open_node"]
