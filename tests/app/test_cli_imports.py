"""The command line answers like ``git``: its fast path imports no heavy module.

``--help``, a usage error and the commands a running node serves must not load trio, the HTTP
server, cryptography, CBOR, SQLite, zeroconf, the bench, the demo or the simulator. Each check
runs in a fresh interpreter (``-I``: no user site, no environment) that starts clean, so
whatever is loaded came from what the probe imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import TIMEOUT

HEAVY = ["trio", "hypercorn", "starlette", "h11", "cryptography", "cbor2", "sqlite3", "zeroconf"]
OURS_HEAVY = [
    "p2pspace.app.api",
    "p2pspace.app.bench.suite",
    "p2pspace.app.demo",
    "p2pspace.app.cli.offline_backend",
    "p2pspace.core",
    "p2pspace.node.node",
    "p2pspace.node.transport",
    "p2pspace.node.discovery",
    "p2pspace.sync",
    "p2pspace.testing",
]

# Runs ``setup`` (Python source), then reports which of the heavy modules are loaded.
PROBE = """
import json, sys
heavy, ours = json.loads(sys.argv[1]), json.loads(sys.argv[2])
already = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
exec(sys.argv[3])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
loaded += sorted(m for m in sys.modules if any(m == o or m.startswith(o + ".") for o in ours))
print(json.dumps({"already": already, "loaded": loaded}))
"""

# The CLI's own path for a command: the entry point, with the exit argparse or main ends in.
RUN_CLI = """
from p2pspace.app.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
"""


def _probe(setup: str) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, json.dumps(HEAVY), json.dumps(OURS_HEAVY), setup],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout.splitlines()[-1])
    assert result["already"] == []  # the interpreter itself starts clean
    return result


def test_help_imports_nothing_heavy() -> None:
    for argv in (["--help"], ["discuss", "show", "--help"], ["bench", "--workload", "W99"]):
        loaded = _probe(RUN_CLI.format(argv=argv))["loaded"]
        assert loaded == [], f"{argv}: {loaded}"


def test_a_command_through_a_running_node_imports_nothing_heavy(tmp_path: Path) -> None:
    # A node's files in the home, and a fake API answering on loopback in the probe itself
    # (http.server: standard library, so it adds nothing heavy).
    home = tmp_path / "home"
    home.mkdir()
    (home / "api.token").write_text("secret\n")
    setup = f"""
import fcntl, http.server, json, os, pathlib, threading, urllib.parse
from p2pspace.node.home import token_proof
home = pathlib.Path({str(home)!r})
lock = os.open(home / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)  # as a running node holds it
STATUS = {{"display_id": "ABCD", "name": "ann", "listen": [], "api": "x", "spaces": [],
          "peers": []}}

class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/api/proof?"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            challenge = bytes.fromhex(query["challenge"][0])
            answer = {{"proof": token_proof("secret", url, challenge)}}
        else:
            assert self.headers["Authorization"] == "Bearer secret"
            answer = STATUS
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{{server.server_address[1]}}"
(home / "api.json").write_text(json.dumps({{"url": url, "pid": 1}}))
from p2pspace.app.cli import main
assert main(["status", "--home", str(home)]) == 0
server.shutdown()
"""
    assert _probe(setup)["loaded"] == []


def test_the_probe_detects_heavy_imports() -> None:
    # The same probe does see a heavy module when one is imported: trio directly, and the
    # offline path of the CLI (a status with no node running).
    assert "trio" in _probe("import trio")["loaded"]
    loaded = _probe("import p2pspace.app.cli.offline_backend")["loaded"]
    assert "trio" in loaded and "p2pspace.app.cli.offline_backend" in loaded


def test_the_package_names_load_on_first_use() -> None:
    # ``import p2pspace`` is light, yet every name of ``__all__`` is there when asked for.
    setup = """
import p2pspace
assert "p2pspace.sync.endpoint" not in sys.modules
names = {name: getattr(p2pspace, name) for name in p2pspace.__all__}
assert names["Endpoint"].__module__ == "p2pspace.sync.endpoint"
assert set(p2pspace.__all__) <= set(dir(p2pspace))
try:
    p2pspace.NoSuchName
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name resolved")
"""
    assert "cryptography" in _probe(setup)["loaded"]
    assert _probe("import p2pspace")["loaded"] == []
