"""What ``pip install .`` installs: pyproject.toml against the source tree.

Every package folder is listed and every listed package exists; the web UI and ``py.typed`` are
package data; every console script and entry point names an object a fresh interpreter can load;
and no product module imports a development-only dependency, so a user install with the runtime
dependencies alone works. Each checker also runs on a small made-up project, to show it reports
what it is for.
"""

from __future__ import annotations

import glob
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.helpers import TIMEOUT
from tests.helpers.source_tree import ROOT, imports_of, modules_in, product_sources

# Files the product reads at run time, as (package, path relative to its folder): a folder
# stands for every file under it.
DATA = [("p2pspace", "py.typed"), ("p2pspace.app", "webui")]
# Named here as well as read from the dev extra, so dropping one from the extra does not
# silently let the product import it.
DEV_ONLY = {"pytest", "pytest_trio", "hypothesis", "httpx", "selenium", "mypy", "ruff"}
CONSOLE_SCRIPT = ("p2pspace", "p2pspace.app.cli:entry")


def pyproject(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def package_folder(root: Path, package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools looks for ``package``: its longest mapped prefix, else its dotted path."""
    parts = package.split(".")
    for end in range(len(parts), 0, -1):
        mapped = package_dir.get(".".join(parts[:end]))
        if mapped is not None:
            return root.joinpath(mapped, *parts[end:])
    return root.joinpath(*parts)


def package_problems(root: Path) -> list[str]:
    """Package folders missing from ``[tool.setuptools] packages``, and listed packages (or
    folders of modules) that are not packages, as readable lines."""
    setuptools = pyproject(root)["tool"]["setuptools"]
    listed: set[str] = set(setuptools.get("packages", []))
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    problems: list[str] = []
    for top, folder in product_sources(root).items():
        for path in sorted([folder, *folder.rglob("*")]):
            if not path.is_dir() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root)
            package = ".".join((top, *path.relative_to(folder).parts))
            if (path / "__init__.py").is_file():
                if package not in listed:
                    problems.append(f"{rel}/ ({package}) is not in [tool.setuptools] packages")
            elif any(path.glob("*.py")):
                problems.append(f"{rel}/ holds modules but no __init__.py: they would not install")
    for package in sorted(listed):
        folder = package_folder(root, package, package_dir)
        if not (folder / "__init__.py").is_file():
            problems.append(f"{package} is listed, but {folder.relative_to(root)}/ is no package")
    return problems


def unshipped_data(root: Path) -> list[str]:
    """Files of :data:`DATA` that do not exist or that no package-data pattern ships."""
    setuptools = pyproject(root)["tool"]["setuptools"]
    package_data: dict[str, list[str]] = setuptools.get("package-data", {})
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    problems: list[str] = []
    for package, name in DATA:
        folder = package_folder(root, package, package_dir)
        wanted = folder / name
        if wanted.is_dir():
            files = sorted(p for p in wanted.rglob("*") if p.is_file())
        else:
            files = [wanted] if wanted.is_file() else []
        if not files:
            problems.append(f"{wanted.relative_to(root)} does not exist")
        # As setuptools expands them: globs relative to the package folder ("*" for every one).
        patterns = package_data.get(package, []) + package_data.get("*", [])
        shipped = {
            Path(hit).resolve()
            for pattern in patterns
            for hit in glob.glob(str(folder / pattern), recursive=True)
        }
        problems += [
            f"{path.relative_to(root)} is in no package-data pattern of {package}"
            for path in files
            if path.resolve() not in shipped
        ]
    return problems


def entry_points(root: Path) -> dict[str, str]:
    """Every console script and entry point: ``group:name`` -> ``module:object``."""
    project = pyproject(root)["project"]
    found = {f"console_scripts:{k}": v for k, v in project.get("scripts", {}).items()}
    for group, entries in project.get("entry-points", {}).items():
        found |= {f"{group}:{name}": value for name, value in entries.items()}
    return found


# Loads each value as an installed distribution's entry point is loaded, in an interpreter that
# sees only what is installed (-I: not the working directory, not the environment).
RESOLVE = """
import json, sys
from importlib.metadata import EntryPoint
failed = {}
for key, value in json.loads(sys.argv[1]).items():
    group, _, name = key.partition(":")
    try:
        loaded = EntryPoint(name=name, value=value, group=group).load()
    except Exception as exc:
        failed[key] = f"{value}: {type(exc).__name__}: {exc}"
    else:
        # A tool's entry point names its plugin (a ToolPlugin); every other one a callable.
        if group == "p2pspace.tools":
            from p2pspace.tools.plugin import ToolPlugin
            if not isinstance(loaded, ToolPlugin):
                failed[key] = f"{value}: not a ToolPlugin"
        elif not callable(loaded):
            failed[key] = f"{value}: not callable"
print(json.dumps(failed))
"""


def unresolved(targets: dict[str, str]) -> dict[str, str]:
    """The entries of ``targets`` a fresh interpreter cannot load, each with why."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", RESOLVE, json.dumps(targets)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    failed: dict[str, str] = json.loads(proc.stdout)
    return failed


def requirement_name(requirement: str) -> str:
    """The import-style name of a requirement: ``pytest-trio>=0.8`` -> ``pytest_trio``."""
    name = re.split(r"[\s<>=!~;\[(@]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("-", "_")


def dev_only(root: Path) -> set[str]:
    """The top-level names of what only the dev extra installs (and :data:`DEV_ONLY`)."""
    project = pyproject(root)["project"]
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    dev = {requirement_name(r) for r in project.get("optional-dependencies", {}).get("dev", [])}
    return (dev | DEV_ONLY) - runtime


def dev_only_imports(root: Path) -> list[str]:
    """Imports, anywhere in the product, of a dependency only the dev extra installs."""
    forbidden = dev_only(root)
    modules = modules_in(product_sources(root))
    known = set(modules)
    return [
        f"{path.relative_to(root)}:{imp.line}: {module} imports {imp.target} (dev only)"
        for module, path in modules.items()
        for imp in imports_of(module, path, known)
        if imp.target not in known and imp.target in forbidden
    ]


# Imports modules with some top-level names made unimportable, as if not installed.
WITHOUT = """
import importlib, json, sys
modules, missing = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in missing:
    sys.modules[name] = None  # import raises ImportError, as for a package not installed
failed = {}
for name in modules:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed[name] = str(exc)
print(json.dumps(failed))
"""


def imports_failing_without(modules: list[str], missing: set[str]) -> dict[str, str]:
    """The ``modules`` a fresh interpreter cannot import when ``missing`` are not installed."""
    argv = [sys.executable, "-I", "-c", WITHOUT, json.dumps(modules), json.dumps(sorted(missing))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    failed: dict[str, str] = json.loads(proc.stdout)
    return failed


def product_modules() -> list[str]:
    """Every product module but ``__main__`` (which runs the command line when imported)."""
    return sorted(m for m in modules_in(product_sources()) if not m.endswith(".__main__"))


# -- the real project ---------------------------------------------------------------------------


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    problems = package_problems(ROOT)
    assert problems == [], "\n".join(problems)
    setuptools = pyproject(ROOT)["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"p2pspace.engines": "engines", "p2pspace.tools": "tools"}
    assert {"p2pspace", "p2pspace.engines", "p2pspace.tools"} <= set(setuptools["packages"])


def test_the_web_ui_and_py_typed_are_package_data() -> None:
    assert (ROOT / "p2pspace" / "py.typed").is_file()
    assert (ROOT / "p2pspace" / "app" / "webui" / "index.html").is_file()
    problems = unshipped_data(ROOT)
    assert problems == [], "\n".join(problems)


def test_the_console_script_and_every_entry_point_resolve() -> None:
    targets = entry_points(ROOT)
    name, value = CONSOLE_SCRIPT
    assert targets[f"console_scripts:{name}"] == value
    groups = {key.partition(":")[0] for key in targets}
    assert {"console_scripts", "p2pspace.engines", "p2pspace.tools"} <= groups
    assert unresolved(targets) == {}


def test_no_product_module_imports_a_dev_only_dependency() -> None:
    problems = dev_only_imports(ROOT)
    assert problems == [], "\n".join(problems)
    runtime = {requirement_name(r) for r in pyproject(ROOT)["project"]["dependencies"]}
    assert not runtime & DEV_ONLY, "a dev-only tool became a runtime dependency"


def test_every_product_module_imports_without_the_dev_dependencies() -> None:
    modules = product_modules()
    assert "p2pspace.app.api.server" in modules and "p2pspace.engines.rdb" in modules
    assert imports_failing_without(modules, dev_only(ROOT)) == {}


# -- the checkers catch what they are for -------------------------------------------------------


def _project(root: Path, toml: str, files: list[str]) -> Path:
    (root / "pyproject.toml").write_text(toml)
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def test_an_unlisted_or_missing_package_is_reported(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[tool.setuptools]\npackages = ["p2pspace", "p2pspace.engines", "p2pspace.ghost"]\n'
        '[tool.setuptools.package-dir]\n"p2pspace.engines" = "engines"\n',
        [
            "p2pspace/__init__.py",
            "p2pspace/core/__init__.py",
            "p2pspace/loose/module.py",
            "engines/__init__.py",
            "engines/extra/__init__.py",
            "tools/__init__.py",
        ],
    )
    assert package_problems(root) == [
        "p2pspace/core/ (p2pspace.core) is not in [tool.setuptools] packages",
        "p2pspace/loose/ holds modules but no __init__.py: they would not install",
        "engines/extra/ (p2pspace.engines.extra) is not in [tool.setuptools] packages",
        "tools/ (p2pspace.tools) is not in [tool.setuptools] packages",
        "p2pspace.ghost is listed, but p2pspace/ghost/ is no package",
    ]


def test_a_package_dir_pointing_elsewhere_is_reported(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[tool.setuptools]\npackages = ["p2pspace", "p2pspace.engines"]\n',
        ["p2pspace/__init__.py", "engines/__init__.py"],
    )
    # Without the mapping, setuptools would look for p2pspace/engines/.
    assert package_problems(root) == [
        "p2pspace.engines is listed, but p2pspace/engines/ is no package"
    ]


def test_unshipped_or_missing_data_is_reported(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[tool.setuptools.package-data]\n"p2pspace.app" = ["webui/*.html"]\n',
        ["p2pspace/app/webui/index.html", "p2pspace/app/webui/app.js"],
    )
    assert unshipped_data(root) == [
        "p2pspace/py.typed does not exist",
        "p2pspace/app/webui/app.js is in no package-data pattern of p2pspace.app",
    ]
    (root / "p2pspace" / "py.typed").touch()
    assert unshipped_data(root)[0] == "p2pspace/py.typed is in no package-data pattern of p2pspace"


def test_an_entry_point_that_does_not_load_is_reported() -> None:
    failed = unresolved(
        {
            "console_scripts:good": CONSOLE_SCRIPT[1],
            "console_scripts:gone": "p2pspace.app.cli:no_such_entry",
            "p2pspace.engines:nowhere": "p2pspace.no_such_module:Engine",
            "p2pspace.engines:data": "p2pspace.errors:__doc__",
        }
    )
    assert sorted(failed) == [
        "console_scripts:gone",
        "p2pspace.engines:data",
        "p2pspace.engines:nowhere",
    ]
    assert "AttributeError" in failed["console_scripts:gone"]
    assert "ModuleNotFoundError" in failed["p2pspace.engines:nowhere"]
    assert failed["p2pspace.engines:data"].endswith("not callable")


def test_the_loader_sees_only_what_is_installed(tmp_path: Path) -> None:
    # A module next to the working directory is not importable under -I, as after a user install.
    (tmp_path / "local_only_module.py").write_text("def entry() -> None: ...\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", RESOLVE, json.dumps({"g:n": "local_only_module:entry"})],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ModuleNotFoundError" in json.loads(proc.stdout)["g:n"]


def test_a_dev_only_import_is_reported_wherever_it_sits(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        '[project]\ndependencies = ["trio>=0.25"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8", "pytest-trio>=0.8", "coverage"]\n',
        ["p2pspace/__init__.py", "engines/__init__.py", "tools/__init__.py"],
    )
    (root / "p2pspace" / "node.py").write_text(
        "import trio\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from hypothesis import strategies\n"
        "def probe() -> None:\n    import httpx.client\n"
    )
    (root / "engines" / "rdb.py").write_text("from pytest_trio import trio_fixture\n")
    (root / "tools" / "cover.py").write_text("import coverage\n")
    assert dev_only_imports(root) == [
        "p2pspace/node.py:4: p2pspace.node imports hypothesis (dev only)",
        "p2pspace/node.py:6: p2pspace.node imports httpx (dev only)",
        "engines/rdb.py:1: p2pspace.engines.rdb imports pytest_trio (dev only)",
        "tools/cover.py:1: p2pspace.tools.cover imports coverage (dev only)",
    ]


def test_a_module_needing_a_missing_dependency_is_reported() -> None:
    failed = imports_failing_without(["p2pspace.errors", "p2pspace.node.transport"], {"trio"})
    assert list(failed) == ["p2pspace.node.transport"]
    assert "trio" in failed["p2pspace.node.transport"]


def test_requirement_names_are_import_names() -> None:
    assert requirement_name("pytest-trio>=0.8") == "pytest_trio"
    assert requirement_name("Selenium [extra] ; python_version>'3'") == "selenium"
    assert requirement_name("httpx") == "httpx"
