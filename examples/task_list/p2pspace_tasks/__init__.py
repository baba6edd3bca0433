"""The shared task list as a p2pspace tool: what the node loads (``PLUGIN``, declared in this
package's ``pyproject.toml`` under the ``p2pspace.tools`` entry points)."""

from __future__ import annotations

from p2pspace.tools.plugin import ToolContext, ToolPlugin
from p2pspace_tasks.tasks import INSTANCE, TaskList


def open_tasks(context: ToolContext) -> TaskList:
    """The task list of one space, as the node's own endpoint."""
    return TaskList(context.replica, commit=context.commit, now=context.now)


PLUGIN = ToolPlugin(
    name="tasks",
    title="Tasks",
    engines={INSTANCE: "rdb"},
    open=open_tasks,
    routes="p2pspace_tasks.routes:routes",
    page="p2pspace_tasks.page",
    cli="p2pspace_tasks.cli:main",
    description="a shared task list: add, assign, mark done",
)

__all__ = ["PLUGIN", "TaskList", "open_tasks"]
