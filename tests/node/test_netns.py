"""Three real hosts on a private LAN made of Linux network namespaces.

The fixture builds, and always tears down, one namespace holding a bridge and three "host"
namespaces, each joined to the bridge by a veth pair created directly between the two namespaces
(nothing is created in, or moved through, the host's own network namespace). The hosts use
addresses of ``SUBNET``, a private /24 that exists only inside these namespaces. Each host runs a
node process (``tests/helpers/node_script.py`` under ``ip netns exec``) listening on its address,
with mDNS bound to that address only.

The nodes find each other by mDNS, share a space by invite/join, write, then one host is cut off
(the bridge side of its veth goes down) while both sides keep writing -- including conflicting
edits of one record -- and after the link comes back up all three converge to the same order
and state. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2pspace.sync import invitations
from tests.helpers import TIMEOUT
from tests.helpers.nodeproc import NodeProcess, converge

SUBNET = "10.199.7"  # used only inside the namespaces made here
PORT = 7455
HOSTS = 3
NAMES = ["ann", "bob", "cy"]


def ip(*args: str) -> str:
    """Run ``ip ARGS``; RuntimeError with its message if it fails."""
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


@dataclass(frozen=True, kw_only=True)
class Lan:
    bridge: str  # the namespace holding the bridge
    hosts: list[str]  # one namespace per host
    addresses: list[str]

    def cable(self, host: int) -> str:
        """The bridge-side end of ``host``'s veth (in the bridge namespace)."""
        return f"port{host}"

    def run_in(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host]]


def _flags(namespace: str, device: str) -> set[str]:
    line = ip("-n", namespace, "-o", "link", "show", "dev", device)
    return set(line.split("<", 1)[1].split(">", 1)[0].split(","))


@pytest.fixture
def lan() -> Iterator[Lan]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    prefix = f"p2ps{os.getpid()}"
    bridge = f"{prefix}-br"
    hosts = [f"{prefix}-h{i}" for i in range(HOSTS)]
    made: list[str] = []
    try:
        try:
            ip("netns", "add", bridge)
        except RuntimeError as exc:
            pytest.skip(f"cannot create a network namespace ({exc})")
        made.append(bridge)
        try:
            subprocess.run(["ip", "netns", "exec", bridge, "true"], check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"`ip netns exec` does not work here ({exc.stderr.decode().strip()})")
        ip("-n", bridge, "link", "set", "lo", "up")
        # Snooping off: the bridge floods multicast (mDNS) to every port, querier or not.
        ip("-n", bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", bridge, "link", "set", "br0", "up")
        lan = Lan(bridge=bridge, hosts=hosts, addresses=[f"{SUBNET}.{i + 1}" for i in range(HOSTS)])
        for i, host in enumerate(hosts):
            ip("netns", "add", host)
            made.append(host)
            ip("-n", host, "link", "set", "lo", "up")
            cable = lan.cable(i)
            peer = ["peer", "name", "lan0", "netns", host]
            ip("-n", bridge, "link", "add", cable, "type", "veth", *peer)
            ip("-n", bridge, "link", "set", cable, "master", "br0")
            ip("-n", bridge, "link", "set", cable, "up")
            ip("-n", host, "addr", "add", f"{lan.addresses[i]}/24", "dev", "lan0")
            ip("-n", host, "link", "set", "lan0", "up")
            assert {"MULTICAST", "UP"} <= _flags(host, "lan0")
            assert "MULTICAST" in _flags(bridge, cable)
        assert {"MULTICAST", "UP"} <= _flags(bridge, "br0")
        yield lan
    finally:
        for namespace in reversed(made):
            # Deleting a namespace deletes its devices, and with a veth end its peer.
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


async def test_three_hosts_discover_share_partition_heal_and_converge(
    lan: Lan, tmp_path: Path
) -> None:
    nodes: list[NodeProcess] = []

    async def start(i: int) -> None:
        address = lan.addresses[i]
        nodes.append(
            await NodeProcess.start(
                tmp_path / f"host{i}",
                listen=f"{address}:{PORT}",
                name=NAMES[i],
                interfaces=[address],
                discovery=True,
                prefix=lan.run_in(i),
            )
        )

    try:
        async with trio.open_nursery() as nursery:
            for i in range(HOSTS):
                nursery.start_soon(start, i)
        nodes.sort(key=lambda n: n.listen)
        a, b, c = nodes
        assert [n.listen for n in nodes] == [f"{address}:{PORT}" for address in lan.addresses]

        # Strangers: the announcements carry no id, so nobody recognises anybody yet.
        for node in nodes:
            assert (await node.call("status"))["peers"] == []

        # Share a space: B and C join with codes from A (the codes carry A's address only).
        space = (await a.call("create", name="lan"))["space"]
        for joiner in (b, c):
            code = (await a.call("invite", space=space))["code"]
            assert invitations.decode_code(code).addresses == (a.listen,)
            assert (await joiner.call("join", code=code, timeout=TIMEOUT))["space"] == space
        # Discovery: members recognise each other's announcements, at their namespace
        # addresses -- B and C learnt each other's address by mDNS alone.
        for node in nodes:
            await node.call("wait", discovered=HOSTS - 1, timeout=TIMEOUT)
        for node in nodes:
            seen = {p["id"]: p["addresses"] for p in (await node.call("status"))["peers"]}
            others = {n.id: [n.listen] for n in nodes if n is not node}
            assert {k: v for k, v in seen.items() if v} == others
        for node in nodes:
            await node.call("wait", connected=HOSTS - 1, timeout=TIMEOUT)
        for i, node in enumerate(nodes):
            await node.call("storm", space=space, count=10, prefix=f"before-{i}")
        before = await converge(nodes, space, timeout=TIMEOUT)
        assert len({(d["order"], d["state"]) for d in before}) == 1

        # Partition: C's cable goes down. Both sides write, and edit one record differently.
        ip("-n", lan.bridge, "link", "set", lan.cable(2), "down")
        try:
            await a.call("storm", space=space, count=20, prefix="split-a")
            await b.call("set", space=space, table="t", record="split-b", fields={"side": "ab"})
            await c.call("storm", space=space, count=20, prefix="split-c")
            for node in (a, c):
                edit = {"table": "t", "record": "before-1-000000"}
                await node.call("set", space=space, fields={"edited_by": node.listen}, **edit)
            # A and B still reach each other; C, cut off, has none of their new writes.
            await converge([a, b], space, timeout=TIMEOUT)
            on_c = (await c.call("get", space=space))["records"]
            assert "split-b" not in on_c
            assert not [r for r in on_c if r.startswith("split-a")]
            on_b = (await b.call("get", space=space))["records"]
            assert not [r for r in on_b if r.startswith("split-c")]
        finally:
            ip("-n", lan.bridge, "link", "set", lan.cable(2), "up")

        # Healed: all three converge on one order and one state.
        after = await converge(nodes, space, timeout=TIMEOUT)
        assert len({(d["order"], d["state"]) for d in after}) == 1, after
        assert after[0]["executed"] > before[0]["executed"]
        records = [(await n.call("get", space=space))["records"] for n in nodes]
        assert records[0] == records[1] == records[2]
        names = set(records[0])
        assert {f"split-a-{i:06d}" for i in range(20)} <= names
        assert {f"split-c-{i:06d}" for i in range(20)} <= names
        assert "split-b" in names
        assert records[0]["before-1-000000"]["edited_by"] in (a.listen, c.listen)
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                await node.aclose()
