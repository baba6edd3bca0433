"""Tools as plugins: the example task list found as an installed tool, opened on the spaces that
hold it, its API and page served under /tools/tasks/, its commands on the command line, and the
generic commit route for tools outside the node (nodes on loopback, in process and not)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pspace.app.web import CONTENT_SECURITY_POLICY
from p2pspace.tools import discussion
from p2pspace.tools.plugin import ToolContext, ToolPlugin, installed_plugins
from tests.helpers import TIMEOUT
from tests.helpers.api_client import api_node, client_of
from tests.helpers.cli_node import cli, running
from tests.helpers.task_plugin import on_path, plugin_env, plugin_site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """The example task list installed (for this process, for the test's duration)."""
    folder = plugin_site(tmp_path / "site")
    with on_path(folder):
        yield folder


async def ok(response: Any, status: int = 200) -> Any:
    answer = await response
    assert answer.status_code == status, answer.text
    return answer.json()


def test_the_installed_tools_are_found_by_their_entry_points(site: Path) -> None:
    tools = installed_plugins()
    assert sorted(tools) == ["discussion", "tasks"]
    assert tools["discussion"] is discussion.PLUGIN
    tasks = tools["tasks"]
    assert (tasks.title, dict(tasks.engines), tasks.page) == (
        "Tasks",
        {"tasks": "rdb"},
        "p2pspace_tasks.page",
    )


async def test_a_tool_is_opened_on_spaces_that_hold_it_and_serves_api_and_page(
    site: Path, tmp_path: Path
) -> None:
    async with (
        api_node(tmp_path / "a", name="ann") as a,
        api_node(tmp_path / "b", name="bob") as b,
        client_of(a) as ca,
        client_of(b) as cb,
    ):
        made = await ok(ca.post("/api/spaces", json={"name": "chores", "tool": "tasks"}), 201)
        space = made["id"]
        assert made["tools"] == ["tasks"]  # no discussion in it: a tool is what a space holds
        status = await ok(ca.get("/api/status"))
        assert status["tools"] == {
            "discussion": {"title": "Discussion", "page": False},
            "tasks": {"title": "Tasks", "page": True},
        }
        talk = await ok(ca.post("/api/spaces", json={"name": "talk"}), 201)
        assert talk["tools"] == ["discussion"]
        refused = await ca.post("/api/spaces", json={"name": "x", "tool": "chess"})
        assert refused.status_code == 400 and "no tool named 'chess'" in refused.json()["error"]

        await b.join(a.invite(bytes.fromhex(space)), timeout=TIMEOUT)
        base = f"/tools/tasks/api/spaces/{space}/tasks"
        milk = (await ok(ca.post(base, json={"title": "buy milk"}), 201))["id"]
        await b.wait_until(lambda: bool(b.tool(bytes.fromhex(space), "tasks").tasks()), TIMEOUT)
        done = await ok(cb.post(f"{base}/{milk}", json={"change": "done"}))
        assert done["task"]["done"] is True
        await a.wait_until(lambda: a.tool(bytes.fromhex(space), "tasks").tasks()[0].done, TIMEOUT)
        shown = (await ok(ca.get(base)))["tasks"]
        assert [(t["title"], t["done"]) for t in shown] == [("buy milk", True)]
        # bob may mark it done, not rename it: the title is ann's own record.
        renamed = await cb.post(f"{base}/{milk}", json={"change": "rename", "title": "mine"})
        assert renamed.status_code == 400 and "only the task's creator" in renamed.json()["error"]
        # A space without the tool, a tool not installed.
        missing = await ca.get(f"/tools/tasks/api/spaces/{talk['id']}/tasks")
        assert missing.status_code == 400 and "no tasks tool" in missing.json()["error"]
        assert (await ca.get("/tools/chess/api/spaces/x")).status_code == 404

        # The page: index.html with the node page's policy, its files by name, nothing else.
        page = await ca.get("/tools/tasks/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        script = await ca.get("/tools/tasks/tasks.js")
        assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
        for name in (
            "__init__.py",
            "..%2Ftasks.py",
            "x.exe",
            "index.html",
            ".hidden.js",
            "nope.js",
        ):
            assert (await ca.get(f"/tools/tasks/{name}")).status_code == 404, name
        async with client_of(a, token=None) as anonymous:
            assert (await anonymous.get("/tools/tasks/")).status_code == 401


async def test_the_commit_route_writes_only_what_the_tool_declared(
    site: Path, tmp_path: Path
) -> None:
    async with api_node(tmp_path / "a", name="ann") as a, client_of(a) as c:
        space = (await ok(c.post("/api/spaces", json={"name": "chores", "tool": "tasks"}), 201))[
            "id"
        ]
        me = a.endpoint_id.hex()[:16]
        create = {"engine": "tasks", "name": "create",
                  "args": {"table": "tasks", "record": f"{me}~x1", "fields": {"title": "t"},
                           "owned": True}}  # fmt: skip
        state = {"engine": "tasks", "name": "create",
                 "args": {"table": "state", "record": f"{me}~x1",
                          "fields": {"done": False, "assignee": ""}}}  # fmt: skip
        path = f"/api/spaces/{space}/commit"
        made = await ok(c.post(path, json={"tool": "tasks", "commands": [create, state]}), 201)
        assert made["delta"]["creator"] == a.endpoint_id.hex()
        view = a.tool(bytes.fromhex(space), "tasks").view
        assert view.owner("tasks", f"{me}~x1") == a.endpoint_id
        before = a.replica(bytes.fromhex(space)).state_digest()
        for body, status, words in [
            ({"tool": "tasks", "commands": [{**create, "engine": "db"}]}, 400, "writes only to"),
            ({"tool": "tasks", "commands": [{**create, "engine": "members"}]}, 400, "writes only"),
            ({"tool": "tasks", "commands": []}, 400, "1 to 256 commands"),
            ({"tool": "tasks", "commands": [create] * 257}, 400, "1 to 256 commands"),
            ({"tool": "tasks", "commands": [{"engine": "tasks"}]}, 400, "command 0"),
            ({"tool": "tasks", "commands": [{**create, "name": "explode"}]}, 400, "explode"),
            ({"tool": "tasks", "commands": [{**create, "args": {"table": 5}}]}, 400, ""),
            ({"tool": "tasks", "commands": "create"}, 400, "list"),
            ({"tool": "chess", "commands": [create]}, 404, "no tool named 'chess'"),
            ({"commands": [create]}, 400, "'tool'"),
        ]:
            answer = await c.post(path, json=body)
            assert answer.status_code == status, (body, answer.text)
            assert words in answer.json()["error"]
        talk = (await ok(c.post("/api/spaces", json={"name": "talk"}), 201))["id"]
        other = await c.post(
            f"/api/spaces/{talk}/commit", json={"tool": "tasks", "commands": [create]}
        )
        assert other.status_code == 400 and "no tasks tool" in other.json()["error"]
        assert a.replica(bytes.fromhex(space)).state_digest() == before


def _broken_open(context: ToolContext) -> Any:
    raise RuntimeError("this tool is broken")


async def test_a_tool_that_fails_to_open_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ToolPlugin(name="broken", title="Broken", engines={"db": "rdb"}, open=_broken_open)
    from p2pspace.node.runtime import open_node
    from tests.helpers.nodes import loopback_config

    tools = {"discussion": discussion.PLUGIN, "broken": broken}
    with caplog.at_level(logging.ERROR, logger="p2pspace.node"):
        async with open_node(tmp_path / "a", loopback_config("ann"), tools=tools) as node:
            space = node.create_space("s").space_id
            node.rdb_set(space, "t", "r", {"v": 1})  # the discussion still gets its events
            assert node.discussion(space) is not None
            assert node.space_info(space).tools == ("broken", "discussion")
    assert "the tool 'broken' cannot open space" in caplog.text


def test_tool_commands_through_the_running_node(tmp_path: Path) -> None:
    env = plugin_env(plugin_site(tmp_path / "site"))
    home = tmp_path / "a"
    cli(home, "init", "--name", "ann", env=env)
    space = cli(home, "space", "create", "chores", "--tool", "tasks", env=env).stdout.strip()
    offline = cli(home, "tool", "tasks", "list", "chores", ok=False, env=env)
    assert offline.returncode == 2 and "works through the running node" in offline.stderr
    with running(home, tmp_path / "a.log", env=env):
        added = cli(home, "tool", "tasks", "add", "chores", "buy milk", env=env)
        task = added.stdout.strip()
        assert added.stderr == "Added the task 'buy milk'\n"
        done = cli(home, "tool", "tasks", "done", "chores", task, env=env)
        assert done.stderr == "Marked done: 'buy milk'\n"
        listed = cli(home, "tool", "tasks", "list", "chores", env=env).stdout
        assert listed == f"[x] buy milk  · {task}\n"
        bad = cli(home, "tool", "tasks", "done", "chores", "nope", ok=False, env=env)
        assert bad.returncode == 2 and "no task 'nope'" in bad.stderr
        unknown = cli(home, "tool", "chess", "list", ok=False, env=env)
        assert "no tool named 'chess' is installed" in unknown.stderr
        assert space in cli(home, "space", "list", env=env).stdout
