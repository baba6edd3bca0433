"""``p2pspace tool tasks ...``: the task list on the command line, through the running node."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from p2pspace.app.cli.rendering import one_line  # text from members, made safe for a terminal


def main(argv: list[str], client: Any) -> int:
    """``client.call(method, path, body)`` reaches this tool's API on the running node."""
    parser = argparse.ArgumentParser(prog="p2pspace tool tasks", description="a shared task list")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="the tasks of a space, open ones first")
    listing.add_argument("space")
    add = sub.add_parser("add", help="add a task")
    add.add_argument("space")
    add.add_argument("title")
    for name in ("done", "reopen"):
        one = sub.add_parser(name, help=f"mark a task {name}")
        one.add_argument("space")
        one.add_argument("task")
    assign = sub.add_parser("assign", help="give a task to a member (nobody: '')")
    assign.add_argument("space")
    assign.add_argument("task")
    assign.add_argument("member")
    args = parser.parse_args(argv)
    base = f"/spaces/{quote(args.space)}/tasks"
    if args.command == "list":
        for task in client.call("GET", base)["tasks"]:
            who = f" ({one_line(task['assignee_name'])})" if task["assignee_name"] else ""
            title, task_id = one_line(task["title"]), one_line(task["id"])
            print(f"[{'x' if task['done'] else ' '}] {title}{who}  · {task_id}")
        return 0
    if args.command == "add":
        print(client.call("POST", base, {"title": args.title})["id"])
        client.say(f"Added the task {args.title.strip()!r}")
        return 0
    body = {"change": "reopen" if args.command == "reopen" else args.command}
    if args.command == "assign":
        body["member"] = args.member
    task = client.call("POST", f"{base}/{quote(args.task)}", body)["task"]
    said = {"done": "Marked done", "reopen": "Reopened", "assign": "Assigned"}[args.command]
    client.say(f"{said}: {task['title']!r}")
    return 0
