"""The tool a new space is created with when none is named, as the API and the command line
offer it.

``p2pspace space create --tool NAME`` and ``POST /api/spaces {"tool": NAME}`` name an installed
tool (:mod:`p2pspace.tools.plugin`), or ``none`` for the record database alone; the node works
out the genesis's engine instances (``Node.engines_for``). Standard library only: the command
line's parser imports it.
"""

from __future__ import annotations

DEFAULT_TOOL = "discussion"
NO_TOOL = "none"

__all__ = ["DEFAULT_TOOL", "NO_TOOL"]
