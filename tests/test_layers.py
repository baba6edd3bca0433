"""The tree shows the layers: imports go only downward, no module cycles, a pure core and sync.

Layers, by package prefix (DESIGN §2): core <- engines <- tools; core <- sync <- node <- app.
Every import counts: top-level, inside functions, and under ``TYPE_CHECKING``. The rules are
checked on the source tree by reading it (``ast``), and the core's purity is also checked by
importing it in a fresh interpreter. The checker is run on small made-up trees too, to show it
catches an upward import and a cycle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import TIMEOUT
from tests.helpers.source_tree import imports_of, modules_in, product_sources

SOURCES = product_sources()

LAYERS = ["errors", "core", "engines", "tools", "sync", "node", "testing", "app"]
ALLOWED: dict[str, set[str]] = {
    "errors": {"errors"},
    "core": {"errors", "core"},
    "engines": {"errors", "core", "engines"},
    "tools": {"errors", "core", "engines", "tools"},
    "sync": {"errors", "core", "sync"},
    "node": {"errors", "core", "sync", "engines", "tools", "node"},
    "testing": {"errors", "core", "sync", "engines", "tools", "node", "testing"},
    "app": {"errors", "core", "sync", "engines", "tools", "node", "testing", "app"},
    # The package itself: lazy re-exports of core and sync names, and ``python -m p2pspace``.
    "root": {"errors", "core", "sync", "node", "app"},
}
PURE = {"errors", "core", "sync"}
IO_LIBRARIES = {"trio", "socket", "ssl", "zeroconf", "asyncio", "selectors"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "p2pspace":
        raise ValueError(module)
    if len(parts) == 1 or parts[1] == "__main__":
        return "root"
    if parts[1] in LAYERS:
        return parts[1]
    raise ValueError(f"{module} is in no layer (add it to a layer package)")


def check_tree(sources: dict[str, Path]) -> list[str]:
    """Every layering violation and module cycle in the tree, as readable lines."""
    modules = modules_in(sources)
    known = set(modules)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        layer = layer_of(module)
        for imp in imports_of(module, path, known):
            if imp.target in known:
                target_layer = layer_of(imp.target)
                if target_layer not in ALLOWED[layer]:
                    problems.append(
                        f"{path.name}:{imp.line}: {module} ({layer}) imports {imp.target} "
                        f"({target_layer}): {layer} may import only {sorted(ALLOWED[layer])}"
                    )
                if imp.target != module:
                    graph[module].add(imp.target)
            elif layer in PURE and imp.target in IO_LIBRARIES:
                problems.append(f"{path.name}:{imp.line}: {module} ({layer}) imports {imp.target}")
    problems += [f"import cycle among: {', '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# -- the real tree ------------------------------------------------------------------------------


def test_imports_go_only_downward_and_never_in_a_cycle() -> None:
    problems = check_tree(SOURCES)
    assert problems == [], "\n".join(problems)


def test_every_module_sits_in_a_layer() -> None:
    modules = modules_in(SOURCES)
    layers = {layer_of(m) for m in modules}
    assert {"core", "sync", "node", "app", "engines", "tools", "testing"} <= layers
    # Nothing is left in the flat package: only the exception tree and the entry points.
    flat = sorted(m for m in modules if m.count(".") == 1 and layer_of(m) not in LAYERS[1:])
    assert flat == ["p2pspace.__main__", "p2pspace.errors"]


PROBE = """
import importlib, json, sys
modules, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
already = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
for name in modules:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"already": already, "loaded": loaded, "imported": sorted(
    m for m in modules if m in sys.modules)}))
"""


def _probe(modules: list[str]) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, json.dumps(modules), json.dumps(sorted(IO_LIBRARIES))],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_core_and_sync_load_no_io_library() -> None:
    # Found from the tree, not listed by hand: every module of the pure layers.
    pure = sorted(m for m in modules_in(SOURCES) if layer_of(m) in PURE)
    assert "p2pspace.core.replica" in pure and "p2pspace.sync.session" in pure
    result = _probe(pure)
    assert result["imported"] == pure
    assert result["already"] == []  # the interpreter starts clean: what loads came from us
    assert result["loaded"] == [], f"the pure layers pulled in I/O libraries: {result['loaded']}"


def test_the_probe_sees_an_io_import() -> None:
    result = _probe(["p2pspace.node.transport"])
    assert "trio" in result["loaded"] and "ssl" in result["loaded"]


# -- the checker catches what it is for ---------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / "p2pspace" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [tmp_path / "p2pspace", *(tmp_path / "p2pspace").rglob("*")]:
        if folder.is_dir():
            (folder / "__init__.py").touch()
    return {"p2pspace": tmp_path / "p2pspace"}


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "core/replica.py": "from p2pspace.node.views import status\n",
            "node/views.py": "def status() -> None: ...\n",
        },
    )
    problems = check_tree(tree)
    assert len(problems) == 1
    assert "p2pspace.core.replica (core) imports p2pspace.node.views (node)" in problems[0]


def test_an_import_under_type_checking_or_in_a_function_counts(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "sync/session.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from p2pspace.app import api\n"
                "def f() -> None:\n    import p2pspace.engines.rdb\n"
            ),
            "app/api.py": "",
            "engines/rdb.py": "",
        },
    )
    problems = check_tree(tree)
    assert any("imports p2pspace.app.api (app)" in p for p in problems)
    assert any("imports p2pspace.engines.rdb (engines)" in p for p in problems)


def test_a_cycle_is_caught_even_within_a_layer(tmp_path: Path) -> None:
    tree = _tree(
        tmp_path,
        {
            "sync/endpoint.py": "from p2pspace.sync.session import Session\n",
            "sync/session.py": "from p2pspace.sync import endpoint\n",
        },
    )
    assert check_tree(tree) == ["import cycle among: p2pspace.sync.endpoint, p2pspace.sync.session"]


def test_an_io_library_in_the_core_is_caught(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"core/store.py": "import socket\n"})
    assert check_tree(tree) == ["store.py:1: p2pspace.core.store (core) imports socket"]
