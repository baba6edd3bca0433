"""The example task list (examples/task_list), seen as an installed plugin without installing it.

An installed distribution is found by ``importlib.metadata`` as a ``*.dist-info`` folder on the
path; :func:`plugin_site` writes one for ``p2pspace-tasks`` (its ``entry_points.txt`` copied
from the example's ``pyproject.toml``) into a temporary folder. Put that folder and the
example's source on ``PYTHONPATH`` (:func:`plugin_env`) and a ``p2pspace`` process finds the
tool as if it were ``pip install``-ed; :func:`on_path` does the same for this process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "task_list"


def plugin_site(folder: Path) -> Path:
    """``folder`` holding the dist-info of the example's distribution (made once)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text("utf-8"))["project"]
    info = folder / f"p2pspace_tasks-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return folder


def plugin_env(site: Path) -> dict[str, str]:
    """This process's environment, with the example installed (for ``p2pspace`` processes)."""
    env = dict(os.environ)
    paths = [str(site), str(EXAMPLE), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@contextlib.contextmanager
def on_path(site: Path) -> Iterator[None]:
    """The example installed in this process for the block's duration."""
    added = [str(site), str(EXAMPLE)]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for entry in added:
            sys.path.remove(entry)
        for name in [
            m for m in sys.modules if m == "p2pspace_tasks" or m.startswith("p2pspace_tasks.")
        ]:
            del sys.modules[name]
        importlib.invalidate_caches()
