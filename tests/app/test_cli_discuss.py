"""``p2pspace discuss`` and ``p2pspace open``: offline on the store, and through a running node.

The commands run in this process (``cli.main``) except the node itself, a ``p2pspace run``
subprocess; waits are on its output, bounded.
"""

from __future__ import annotations

import html
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path

import pytest

from p2pspace.app import cli
from tests.helpers import TIMEOUT
from tests.helpers.cli_inproc import Cli
from tests.helpers.cli_node import running

TOPIC_ID = re.compile(r"^[0-9a-f]{16}~[0-9a-f]{16}$")  # <author namespace>~<16 hex>


LINE = re.compile(
    r"( *)(.+?), (just now|\d+ (?:min|h|days?) ago|on \S+)(?: \[([^]]+)\])?: (.*)  · (\S+)"
)


def shown(run: Cli, *args: str) -> list[tuple[int, str, str, str, str]]:
    """``discuss show`` lines as (depth, id, author, status, text); status is "" where the post
    reached every member (the line shows none)."""
    out = []
    for line in run("discuss", "show", *args).splitlines():
        match = LINE.fullmatch(line)
        assert match is not None, line
        indent, author, _when, status, text, post = match.groups()
        out.append((len(indent) // 2, post, author, status or "", text))
    return out


def test_discuss_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Cli(tmp_path / "a", capsys)
    run("init", "--name", "ann")
    space = run.one("space", "create", "talk")
    run.one("space", "create", "plain", "--tool", "none")
    assert run("discuss", "show", "talk") == "no topics yet\n"
    assert run.json("discuss", "show", "talk") == {"threads": []}

    topic = run.one("discuss", "post", "talk", "Lunch", "Where  shall\nwe go?")
    assert TOPIC_ID.match(topic)
    r1 = run.one("discuss", "reply", "talk", topic, "Noon")
    r2 = run.one("discuss", "reply", space, r1, "1pm")
    assert r1.startswith(topic + ".") and r2.startswith(topic + ".")
    alone = ""  # delivered to 1 of 1: everyone, so no status shown
    assert shown(run, "talk") == [
        (0, topic, "ann", alone, "Lunch -- Where shall"),  # the first line of the body
        (1, r1, "ann", alone, "Noon"),
        (2, r2, "ann", alone, "1pm"),
    ]

    assert run.one("discuss", "edit", "talk", topic, "Where?", "--title", "Lunch!") == topic
    run.fails("discuss", "edit", "talk", r1, "x", "--title", "t", match="only a topic has a title")
    assert run.one("discuss", "delete", "talk", r1) == r1
    run.fails("discuss", "delete", "talk", r1, match="already deleted")
    run.fails("discuss", "reply", "talk", r1, "late", match="was deleted")
    assert shown(run, "talk", topic) == [
        (0, topic, "ann", alone, "Lunch! -- Where? (edited)"),
        (1, r1, "ann", alone, "[deleted]"),
        (2, r2, "ann", alone, "1pm"),
    ]
    assert run.one("discuss", "undo", "talk") == r1
    run.fails("discuss", "undo", "talk", match="nothing to undo")
    assert shown(run, "talk")[1] == (1, r1, "ann", alone, "Noon")

    thread = run.json("discuss", "show", "talk", topic)["thread"]
    assert (thread["id"], thread["title"], thread["body"], thread["parent"]) == (
        topic,
        "Lunch!",
        "Where?",
        None,
    )
    assert thread["author_name"] == "ann" and thread["status"] == "delivered to 1 of 1"
    assert thread["pending"] is False and (thread["delivered"], thread["members"]) == (1, 1)
    [first] = thread["replies"]
    assert (first["id"], first["parent"], first["body"], first["deleted"]) == (
        r1,
        topic,
        "Noon",
        False,
    )
    assert [r["id"] for r in first["replies"]] == [r2]

    other = run.one("discuss", "post", "talk", "Second", "")
    # Text from members is printed defanged: no terminal escapes, no bidirectional overrides.
    odd = run.one("discuss", "post", "talk", "Red\x1b[31m", "a\u202eb\tc")
    threads = run.json("discuss", "show", "talk")["threads"]
    assert sorted(t["id"] for t in threads) == sorted([topic, other, odd])
    titles = {t["id"]: t["title"] for t in threads}
    assert titles[odd] == "Red\x1b[31m"  # --json has the text as it is
    lines = shown(run, "talk")
    assert (0, other, "ann", alone, "Second") in lines
    assert (0, odd, "ann", alone, "Red\ufffd[31m -- a\ufffdb c") in lines

    run.fails("discuss", "post", "nope", "t", "b", match="no space named 'nope'")
    run.fails("discuss", "post", "plain", "t", "b", match="no discussion tool")
    run.fails("discuss", "post", "talk", " ", "b", match="title must not be empty")
    run.fails("discuss", "reply", "talk", "zzz", "b", match="not a post id")
    run.fails("discuss", "reply", "talk", "0123456789abcdef~0123456789abcdef", "b", match="no post")
    run.fails("discuss", "show", "talk", "0123456789abcdef~0123456789abcdef", match="no topic")
    run.fails("discuss", "frobnicate", match="invalid choice")
    run.fails("space", "create", "x", "--tool", "chess", match="no tool named 'chess' is installed")
    run.fails("open", match="no node is running")
    assert len(run.json("discuss", "show", "talk")["threads"]) == 3


def test_discuss_and_open_through_the_running_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "a"
    run = Cli(home, capsys)
    run("init", "--name", "ann")
    space = run.one("space", "create", "talk")
    topic = run.one("discuss", "post", "talk", "Offline", "first")

    with running(home, tmp_path / "a.log") as node:
        # Through the API: the store is locked by the node, so these could not work offline.
        reply = run.one("discuss", "reply", "talk", topic, "online")
        other = run.one("discuss", "post", "talk", "Online", "second")
        assert run.one("discuss", "edit", "talk", reply, "online!") == reply
        lines = shown(run, "talk")
        alone = ""
        assert (0, other, "ann", alone, "Online -- second") in lines
        at = lines.index((0, topic, "ann", alone, "Offline -- first"))
        assert lines[at + 1] == (1, reply, "ann", alone, "online! (edited)")
        thread = run.json("discuss", "show", space, topic)["thread"]
        assert [r["body"] for r in thread["replies"]] == ["online!"]
        run.fails("discuss", "show", "talk", "0123456789abcdef~0123456789abcdef", match="no topic")
        run.fails("discuss", "undo", "nope", match="no space named 'nope'")
        run.one("space", "create", "plain", "--tool", "none")
        run.fails("discuss", "post", "plain", "t", "b", match="no discussion tool")

        token = (home / "api.token").read_text().strip()
        url = run.one("open", "--print-url")
        # A one-time link: no lasting secret on the browser's command line.
        assert url.startswith(f"{node.api_url}/?nonce=") and token not in url
        in_space = run.one("open", "talk", "--print-url")
        assert in_space.startswith(f"{node.api_url}/?nonce=") and in_space.endswith(
            f"&space={space}"
        )
        assert in_space.split("&")[0] != url  # each link is new
        browser = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor()
        )
        with browser.open(url, timeout=TIMEOUT) as page:  # redeemed, then redirected to /
            assert page.status == 200 and page.url.startswith(node.api_url + "/#session=")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for used in (url, node.api_url + "/"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                opener.open(used, timeout=TIMEOUT)  # used once already / no credential
            assert refused.value.code == 401
            refused.value.close()

        opened: list[str] = []
        monkeypatch.setattr(webbrowser, "open", lambda u: opened.append(u) or True)
        printed = run.one("open", space[:8])
        assert printed.endswith(f"&space={space}")
        # The browser gets a private page that forwards to the link, not the link itself: its
        # command line is readable by other users of this computer.
        page = home / "open.html"
        assert opened == [page.resolve().as_uri()] and printed not in opened[0]
        assert stat.S_IMODE(page.stat().st_mode) == 0o600
        assert html.escape(printed, quote=True) in page.read_text()
        # No browser to start: the URL is printed all the same, and the error says why.
        monkeypatch.setattr(webbrowser, "open", lambda u: False)
        assert cli.main(["open", "--home", str(home)]) == 2
        out, err = capsys.readouterr()
        assert out.startswith(f"{node.api_url}/?nonce=") and "cannot start a web browser" in err

        assert node.stop() == 0
        assert "Traceback" not in node.stderr()
    run.fails("open", "--print-url", match="no node is running")
    assert len(run.json("discuss", "show", "talk")["threads"]) == 2
