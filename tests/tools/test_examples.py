"""Examples run as part of the suite: they are what users copy."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from tests.helpers import TIMEOUT

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_shared_records_converges(tmp_path: Path) -> None:
    module = runpy.run_path(str(EXAMPLES / "shared_records.py"))
    result = module["main"](tmp_path)
    # The two edits have the same rank; the creator id breaks the tie, and the later edit in
    # the shared order wins the fields it set (bob's note survives either way).
    alice_last = result["alice"] > result["bob"]
    assert result["milk"] == {"qty": 2 if alice_last else 3, "note": "oat"}


def test_shared_records_runs_as_a_program() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "shared_records.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "milk" in proc.stdout
