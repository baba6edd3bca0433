"""The command line run in this process (``cli.main``), its output through ``capsys``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2pspace.app import cli


class Cli:
    """Runs ``p2pspace ... --home HOME`` in this process; output through ``capsys``."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys

    def __call__(self, *args: str) -> str:
        code = cli.main([*args, "--home", str(self.home)])
        out, err = self.capsys.readouterr()
        assert code == 0, f"{args}: {err}"
        return out

    def one(self, *args: str) -> str:
        """The one line the command prints."""
        lines = self(*args).splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))

    def fails(self, *args: str, match: str) -> str:
        """Run a command that must fail with one ``p2pspace: error:`` line; that line."""
        try:
            code = cli.main([*args, "--home", str(self.home)])
        except SystemExit as exc:  # a usage error exits from inside argparse
            code = exc.code
        assert code not in (0, None), args
        out, err = self.capsys.readouterr()
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("p2pspace: error: "), err
        assert match in lines[0], err
        assert out == ""
        return lines[0]

    def said(self, *args: str) -> tuple[str, str]:
        """``(stdout, stderr)`` of a command that succeeds: what a script reads, and the words
        for the person at the terminal."""
        code = cli.main([*args, "--home", str(self.home)])
        out, err = self.capsys.readouterr()
        assert code == 0, f"{args}: {err}"
        return out, err
