"""W7 CLI latency: whole ``p2pspace`` processes against a running node.

A node runs as ``p2pspace run`` in its own process on a temporary home (peers on 127.0.0.1, the
API on 127.0.0.1, no mDNS); the home holds a space ``w7`` with a discussion of a few threads.
The figures are medians over several whole processes -- interpreter start, imports, the API
requests, the output -- of ``p2pspace --help``, ``p2pspace status`` and ``p2pspace discuss show
w7``, each started as ``python -m p2pspace``. Baseline: ``python -c pass``, the bare interpreter
start; ``target_ms`` is that plus 120 ms, the bound each command should stay under ("answers
like git"). One untimed run of each command comes first (it writes byte code and warms the page
cache) and its output is checked: ``status`` must have gone through the node's API, ``discuss
show`` must list every post.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import trio

from p2pspace.app.bench.report import median_ms
from p2pspace.node.config import NodeConfig
from p2pspace.node.runtime import open_node

TARGET_OVER_BASELINE_MS = 120.0
START_TIMEOUT = 60.0  # generous: the bench shares the machine; a hang still ends
PROCESS_TIMEOUT = 60.0
SPACE = "w7"


async def _prepare(home: Path, topics: int, replies: int) -> int:
    """The home's space ``w7``: ``topics`` threads of ``replies`` nested replies each. Returns
    how many posts it holds."""
    async with open_node(home, NodeConfig(listen=None, discovery=False, name=SPACE)) as node:
        space = node.create_space(SPACE).space_id
        tool = node.discussion(space)
        assert tool is not None  # required=True raises instead
        for t in range(topics):
            parent = tool.post(f"Topic {t}", f"what shall we do about {t}?")
            for r in range(replies):
                parent = tool.reply(parent, f"reply {r} in thread {t}")
    return topics * (1 + replies)


def _read_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@contextlib.contextmanager
def _running_node(home: Path, log: Path) -> Iterator[str]:
    """``p2pspace run`` on ``home`` in its own process until the block ends; yields its API URL.

    Raises RuntimeError if the node exits or does not serve its API within ``START_TIMEOUT``.
    """
    argv = [sys.executable, "-m", "p2pspace", "run", "--home", str(home)]
    argv += ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--no-discovery"]
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"W7: no node API within {START_TIMEOUT:g} s") from None
                if line is None:
                    raise RuntimeError(f"W7: the node exited: {log.read_text()[-2000:]}")
                if line.startswith("api "):
                    break
            yield line.removeprefix("api ")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def _time_process(
    argv: Sequence[str], processes: int, check: Callable[[str], str | None] = lambda out: None
) -> float:
    """The median wall time (ms) of ``processes`` runs of ``argv``, after one untimed run whose
    output ``check`` inspects (it returns what is wrong, or None). Raises RuntimeError if a run
    fails or the check does."""
    samples = []
    for run in range(processes + 1):
        started = time.perf_counter()
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"W7: {' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr}")
        if run == 0:
            wrong = check(proc.stdout)
            if wrong is not None:
                raise RuntimeError(f"W7: {' '.join(argv[1:])}: {wrong}")
        else:
            samples.append(elapsed)
    return median_ms(samples)


def w7(root: Path, *, processes: int = 9, topics: int = 3, replies: int = 3) -> dict[str, Any]:
    home = root / "w7"
    posts = trio.run(_prepare, home, topics, replies)
    cli = [sys.executable, "-m", "p2pspace"]
    homed = ["--home", str(home)]
    baseline = _time_process([sys.executable, "-c", "pass"], processes)
    with _running_node(home, root / "w7-node.log") as api_url:

        def online(out: str) -> str | None:
            answered = "your node is running" in out
            return None if answered else f"not answered by the node at {api_url}: {out!r}"

        def every_post(out: str) -> str | None:
            shown = len(out.splitlines())
            return None if shown == posts else f"{shown} lines for {posts} posts: {out!r}"

        help_ms = _time_process([*cli, "--help"], processes)
        status_ms = _time_process([*cli, "status", *homed], processes, online)
        show_ms = _time_process([*cli, "discuss", "show", SPACE, *homed], processes, every_post)
    return {
        "workload": "W7",
        "posts": posts,
        "processes": processes,
        "help_ms": help_ms,
        "status_ms": status_ms,
        "discuss_show_ms": show_ms,
        "baseline_python_ms": baseline,
        "target_ms": round(baseline + TARGET_OVER_BASELINE_MS, 3),
    }


__all__ = ["w7"]
