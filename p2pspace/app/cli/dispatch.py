"""The ``p2pspace`` entry point: parse, run one command, turn a user's error into one line.

Every error a user can cause -- a :class:`~p2pspace.app.cli.backend.CliError`, a
:class:`~p2pspace.errors.P2PSpaceError`, an ``OSError``, a trio timeout, or a group made only of
those -- prints one ``p2pspace: error:`` line on stderr and exits 2, without a traceback. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from p2pspace.app.cli.backend import CliError
from p2pspace.app.cli.commands import ENDPOINT_COMMANDS, PROGRAMS
from p2pspace.app.cli.parser import build_parser
from p2pspace.app.cli.rendering import one_line
from p2pspace.errors import P2PSpaceError


def default_home() -> Path:
    """``$P2PSPACE_HOME``, else ``$XDG_DATA_HOME/p2pspace``, else ``~/.local/share/p2pspace``."""
    env = os.environ.get("P2PSPACE_HOME")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "p2pspace"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); its exit status. A usage error
    exits from inside argparse (``SystemExit(2)``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "tool":
        args.tool_args = extra  # the tool's own arguments, for its parser
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        program = PROGRAMS.get(args.command)
        if program is not None:
            return program(args)
        home = args.home.expanduser() if args.home is not None else default_home()
        return ENDPOINT_COMMANDS[args.command](args, home)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``p2pspace status | head``): stop quietly, like other tools.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return 0
    except BaseException as exc:
        error = _user_error(exc)
        if error is None:
            raise
        # An error can quote a peer (a member's name, a refusal it sent): one line, defanged.
        print(f"p2pspace: error: {one_line(_message(error))}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: :func:`main` on ``sys.argv``, its status as the exit code."""
    sys.exit(main())


def _user_errors() -> tuple[type[BaseException], ...]:
    # A trio error can only exist if trio was imported (the fast path never imports it).
    trio = sys.modules.get("trio")
    extra: tuple[type[BaseException], ...] = () if trio is None else (trio.TooSlowError,)
    return (CliError, P2PSpaceError, OSError, *extra)


def _is_cancelled(exc: BaseException) -> bool:
    trio = sys.modules.get("trio")
    return trio is not None and isinstance(exc, trio.Cancelled)


def _user_error(exc: BaseException) -> BaseException | None:
    """The error to report if ``exc`` (or every error in a group) is one the user caused."""
    user_errors = _user_errors()
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in _leaves(exc) if not _is_cancelled(e)]
        if leaves and all(isinstance(e, user_errors) for e in leaves):
            return leaves[0]
        return None
    return exc if isinstance(exc, user_errors) else None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _message(exc: BaseException) -> str:
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return str(exc) or type(exc).__name__


__all__ = ["default_home", "entry", "main"]
