"""``p2pspace demo``: three endpoints on loopback share a discussion.

Three real nodes run in this process, each with its own home folder, TLS listener, local API and
web UI, discovering each other by mDNS bound to 127.0.0.1. Ann creates a space and invites Bob
and Cy; everyone posts and replies at once -- Bob and Cy before they have found each other, so
their concurrent deltas reach the three replicas in different orders and are reordered by
undo/redo. The demo then waits until the three threads are identical and prints them.

``--once`` exits (0 if identical) after that; otherwise the nodes keep running, with their web UI
addresses printed, until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shlex
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2pspace.app.api import serve_api
from p2pspace.core.identity import short_id
from p2pspace.errors import LocalProtocolError
from p2pspace.node.config import NodeConfig
from p2pspace.node.node import Node
from p2pspace.node.runtime import open_node
from p2pspace.tools.discussion import Discussion

NAMES = ("ann", "bob", "cy")
SETTLE_TIMEOUT = 60.0


@contextlib.asynccontextmanager
async def _open(home: Path, name: str) -> AsyncIterator[Node]:
    """A node on loopback with its local API (and web UI) beside it."""
    async with (
        open_node(
            home,
            NodeConfig(
                listen=("127.0.0.1", 0), interfaces=("127.0.0.1",), discovery=True, name=name
            ),
        ) as node,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(serve_api, node, "127.0.0.1", 0)
        yield node
        nursery.cancel_scope.cancel()


def ui_url(node: Node, space: bytes) -> str:
    """The command that opens ``node``'s web UI on ``space`` (a one-time link each time)."""
    return f"p2pspace open --home {shlex.quote(str(node.home))} {space.hex()}"


def thread_lines(tool: Discussion) -> list[str]:
    lines = []
    for topic in sorted(tool.topics(), key=lambda t: (t.post.created, t.post.id)):
        for depth, post in tool.walk(topic.post.id):
            text = "[deleted]" if post.deleted else (post.title or post.body)
            if post.is_topic and not post.deleted and post.body:
                text = f"{post.title}: {post.body}"
            edited = " (edited)" if post.edited and not post.deleted else ""
            status = post.status.describe()
            lines.append(f"{'    ' * depth}- {post.author_name}: {text}{edited}  [{status}]")
    return lines


def tree(tool: Discussion) -> list[tuple[int, str, str, str, bool]]:
    out = []
    for topic in sorted(tool.topics(), key=lambda t: t.post.id):
        out += [(d, p.id, p.title, p.body, p.deleted) for d, p in tool.walk(topic.post.id)]
    return out


def state_line(node: Node, space: bytes) -> str:
    replica = node.replica(space)
    peers = []
    for member in node.presence(space):
        if not member.me and member.sync is not None:
            peers.append(f"{member.name}:{member.sync.value}")
    return (
        f"{node.name:>4} {short_id(node.endpoint_id)}  {replica.executed_count():3d} deltas, "
        f"{replica.stats.undone} undone / {replica.stats.redone} redone, "
        f"peers {' '.join(peers) or '-'}"
    )


def _tool(node: Node, space: bytes) -> Discussion:
    tool = node.discussion(space)
    assert tool is not None  # required=True raises instead of returning None
    return tool


async def _seen(node: Node, tools: list[Discussion], posts: list[str]) -> None:
    """Wait until every tool shows every post in ``posts``."""

    def shown() -> bool:
        for tool in tools:
            for post in posts:
                try:
                    tool.get(post)
                except LocalProtocolError:
                    return False
        return True

    await node.wait_until(shown, timeout=SETTLE_TIMEOUT)


@contextlib.asynccontextmanager
async def _homes(base: Path | None) -> AsyncIterator[Path]:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
        yield base
        return
    with tempfile.TemporaryDirectory(prefix="p2pspace-demo-") as tmp:
        yield Path(tmp)


async def run(*, once: bool, seed: int, home: Path | None, out: Callable[[str], None]) -> int:
    """Run the demo; returns the exit status. ``home``: keep the three homes there."""
    # The demo prints its own story; the nodes' routine connection log lines would drown it.
    logging.getLogger("p2pspace").setLevel(logging.ERROR)
    rng = random.Random(seed)
    async with _homes(home) as base, AsyncExitStack() as stack:
        nodes: list[Node] = []
        for name in NAMES:
            nodes.append(await stack.enter_async_context(_open(base / name, name)))
        ann, bob, cy = nodes
        out("p2pspace demo: three endpoints on loopback (mDNS on 127.0.0.1, TLS between them)")
        space = ann.create_space("demo").space_id
        a_tool = _tool(ann, space)
        welcome = a_tool.post("Welcome to the LAN", "Say hello; every post is a signed delta.")
        await bob.join(ann.invite(space), timeout=SETTLE_TIMEOUT)
        await cy.join(ann.invite(space), timeout=SETTLE_TIMEOUT)
        b_tool, c_tool = _tool(bob, space), _tool(cy, space)
        out(f"ann created space {space.hex()[:8]}; bob and cy joined with invitation codes")

        # Everyone writes at once, before bob and cy have found each other by mDNS: their
        # deltas cross on the way, and each replica reorders what arrives out of order.
        picnic = b_tool.post("Picnic on Friday?", "Park by the river, noon.")
        agenda = c_tool.post("Agenda for Monday", "1. Demo  2. Release")
        replies = [
            (a_tool, "Ann here. Hi all!"),
            (b_tool, "Bob says hi."),
            (c_tool, "Cy, reading along."),
        ]
        rng.shuffle(replies)
        made = [tool.reply(welcome, text) for tool, text in replies]
        await _seen(ann, [a_tool, b_tool, c_tool], [picnic, agenda, *made])

        # Second round, again all at once: replies to each other's posts, an edit, a
        # mistake deleted (its place in the thread stays), and an undo.
        c_tool.reply(picnic, "Count me in.")
        a_tool.reply(agenda, "Add: retro.")
        b_tool.reply(made[-1], "Welcome!")
        b_tool.edit(picnic, "Park by the river, noon. Bring a blanket.")
        mistake = c_tool.reply(made[0], "Typo'd reply")
        c_tool.delete(mistake)
        a_tool.edit(
            welcome, "Say hello; every post is a signed delta, ordered the same everywhere."
        )
        a_tool.undo_last()  # ann changes her mind: the original text comes back

        def identical() -> bool:
            trees = [tree(t) for t in (a_tool, b_tool, c_tool)]
            digests = {n.replica(space).order_digest() for n in nodes}
            return trees[0] == trees[1] == trees[2] and len(digests) == 1

        try:
            await ann.wait_until(identical, timeout=SETTLE_TIMEOUT)
        except trio.TooSlowError:
            out("the three threads did not converge in time:")
            for node in nodes:
                out("  " + state_line(node, space))
            return 1
        with contextlib.suppress(trio.TooSlowError):
            # Let acknowledgements flow so every post shows "delivered to 3 of 3".
            await ann.wait_until(
                lambda: all(
                    not p.status.pending and p.status.delivered == 3
                    for t in (a_tool, b_tool, c_tool)
                    for topic in t.topics()
                    for _d, p in t.walk(topic.post.id)
                ),
                timeout=10,
            )
        out("")
        for line in thread_lines(a_tool):
            out(line)
        out("")
        for node in nodes:
            out(state_line(node, space))
        out("")
        out("all three threads are identical (same order, same state)")
        if once:
            return 0
        out("")
        out("web UI of each endpoint (run in another terminal; it opens a browser):")
        for node in nodes:
            out(f"  {node.name:>4}  {ui_url(node, space)}")
        out("running; press Ctrl-C to stop")
        shown = ""

        def changed() -> bool:
            return " | ".join(state_line(n, space) for n in nodes) != shown

        while True:
            await ann.wait_until(changed)
            shown = " | ".join(state_line(n, space) for n in nodes)
            for node in nodes:
                out(state_line(node, space))
            await trio.sleep(1)  # at most one status block a second on a busy LAN


__all__ = ["run", "state_line", "thread_lines", "tree", "ui_url"]
