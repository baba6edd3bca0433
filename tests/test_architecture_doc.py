"""docs/architecture.md follows the tree: its module table lists every module there is, and the
"where each decision lives" table points at public names that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text("utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert match is not None, f"docs/architecture.md has no section {title!r}"
    return match.group(1)


def _tree_modules() -> set[str]:
    """Every module file of ours, named as the doc names them (relative to its package)."""
    found = set()
    for base, prefix in ((ROOT / "p2pspace", ""), (ROOT / "engines", "engines/"),
                         (ROOT / "tools", "tools/")):  # fmt: skip
        for path in base.rglob("*.py"):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts or rel.name == "__init__.py":
                continue
            found.add(prefix + rel.as_posix())
    return found


def test_the_module_table_lists_every_module() -> None:
    table = _section("The tree")
    named = set(re.findall(r"`((?:[a-z_]+/)+[a-z_]+\.py)`", table))
    # A package listed as a folder names its modules by stem: `app/api/` ... `routes`, ...
    for folder, rest in re.findall(r"^\| `((?:[a-z_]+/)+)`[^|]*\|(.*)$", table, re.M):
        named |= {folder + stem + ".py" for stem in re.findall(r"`([a-z_]+)`", rest)}
    top_level = {"errors.py", "__main__.py"}  # the exception tree and `python -m p2pspace`
    missing = sorted(_tree_modules() - named - top_level)
    assert missing == [], f"modules missing from docs/architecture.md: {missing}"
    stale = sorted(named - _tree_modules())
    assert stale == [], f"docs/architecture.md names modules that do not exist: {stale}"


DECISIONS = re.findall(
    r"`((?:core|sync|node|app)\.[A-Za-z_.]+)`", _section("Where each decision lives")
)


@pytest.mark.parametrize("name", sorted(set(DECISIONS)))
def test_each_decision_points_at_a_public_name(name: str) -> None:
    parts = name.split(".")
    assert not any(p.startswith("_") for p in parts), f"{name} is private"
    # The longest importable module prefix, then attributes.
    for end in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module("p2pspace." + ".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for attr in parts[end:]:
            assert hasattr(obj, attr), f"{name}: no {attr!r} in {obj!r}"
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{name}: no such module")


def test_the_decision_table_is_not_empty() -> None:
    assert len(set(DECISIONS)) >= 20
