"""The product's source tree read as code (``ast``): its modules and every import they make.

The product lives in three folders: ``p2pspace/``, and ``engines/`` and ``tools/``, which
pyproject maps to ``p2pspace.engines`` and ``p2pspace.tools``. Every import counts: top-level,
inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def product_sources(root: Path = ROOT) -> dict[str, Path]:
    """The product's source folders under ``root``, each with the package it installs as."""
    return {
        "p2pspace": root / "p2pspace",
        "p2pspace.engines": root / "engines",
        "p2pspace.tools": root / "tools",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports (a module of ours, or a top-level library name)
    line: int


def modules_in(sources: dict[str, Path]) -> dict[str, Path]:
    """Every module of ours: dotted name -> file."""
    found: dict[str, Path] = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            found[".".join((package, *rel))] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    """Every import statement in the file, wherever it sits, resolved to our modules."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module=module, target=_ours(alias.name, known), line=node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                source = ".".join([*base[: len(base) - node.level + 1], node.module or ""])
                source = source.rstrip(".")
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from p2pspace.core import codec`` imports the module p2pspace.core.codec.
                candidate = f"{source}.{alias.name}"
                target = candidate if candidate in known else _ours(source, known)
                yield Import(module=module, target=target, line=node.lineno)


def _ours(name: str, known: set[str]) -> str:
    """The longest module of ours that ``name`` names, or its top-level library name."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return parts[0]
