"""The tools a new space can be created with, as the API and the command line offer them.

``p2pspace space create --tool T`` and ``POST /api/spaces {"tool": T}`` name one of
:data:`SPACE_TOOLS`; the value is the genesis's engine instances (None: the node's default,
which holds the discussion tool). Standard library only: the command line's parser imports it.
"""

from __future__ import annotations

SPACE_TOOLS: dict[str, dict[str, str] | None] = {"discussion": None, "none": {"db": "rdb"}}
DEFAULT_TOOL = "discussion"

__all__ = ["DEFAULT_TOOL", "SPACE_TOOLS"]
