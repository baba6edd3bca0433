"""Tools built on engines (installed as ``p2pspace.tools``).

What this layer decides: what a user-facing component means in terms of engine commands -- the
discussion's topics, replies, edits and per-post sync status are rdb records and their changes.
It may import ``p2pspace.core``, ``p2pspace.engines``, ``p2pspace.errors`` and its own modules --
never ``sync``, ``node`` or ``app``: a tool runs the same under the simulator and in a node.
"""
