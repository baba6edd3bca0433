"""W6's ``plugin_load_ms``: a node starting up with its tools, in a fresh interpreter.

Each sample is a new Python process (cold imports, as a user's ``p2pspace run``) that opens a
node on a fresh home and starts its local API, timed from before ``open_node`` until the API
serves: once loading every installed tool (the discussion, and the example task list when this
is a source checkout: it is put on the process's path as an installed distribution, the way
``pip install -e examples/task_list`` would), and once loading no tool at all, the same-run
baseline. What the interpreter itself costs to start is outside both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from p2pspace.app.bench.report import median_ms

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "task_list"

PROBE = """
import json, sys, time
import trio
from p2pspace.app.api import serve_api
from p2pspace.node.config import NodeConfig
from p2pspace.node.runtime import open_node

async def main(home, with_tools):
    config = NodeConfig(listen=None, discovery=False, name="w6")
    started = time.perf_counter()
    async with open_node(home, config, tools=None if with_tools else {}) as node:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_api, node, "127.0.0.1", 0)
            seconds = time.perf_counter() - started
            print(json.dumps({"seconds": seconds, "tools": sorted(node.tools)}))
            nursery.cancel_scope.cancel()

trio.run(main, sys.argv[1], sys.argv[2] == "1")
"""


def _site(root: Path) -> Path | None:
    """A folder holding the example task list's dist-info (None outside a source checkout)."""
    if not (EXAMPLE / "pyproject.toml").is_file():
        return None
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text("utf-8"))["project"]
    info = root / "site" / f"p2pspace_tasks-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info.parent


def plugin_load(root: Path, *, runs: int = 3) -> dict[str, Any]:
    """``plugin_load_ms`` (start-up with every tool) and ``baseline_start_ms`` (no tool), the
    medians of ``runs`` fresh processes each, and the tools loaded."""
    env = dict(os.environ)
    site = _site(root)
    if site is not None:
        paths = [str(site), str(EXAMPLE), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    samples: dict[bool, list[float]] = {True: [], False: []}
    tools: list[str] = []
    for run in range(runs):
        for with_tools in (False, True):
            home = root / f"home-{run}-{int(with_tools)}"
            proc = subprocess.run(
                [sys.executable, "-c", PROBE, str(home), "1" if with_tools else "0"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"W6 start-up probe failed: {proc.stderr[-2000:]}")
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[with_tools].append(float(answer["seconds"]))
            if with_tools:
                tools = list(answer["tools"])
    return {
        "plugin_load_ms": median_ms(samples[True]),
        "baseline_start_ms": median_ms(samples[False]),
        "plugins": tools,
    }


__all__ = ["plugin_load"]
