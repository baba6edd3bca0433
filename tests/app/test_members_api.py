"""The members routes of the local API: list, remove, role, leave, and their errors as statuses.

Two in-process nodes on loopback, each serving its API; waits are on node state, bounded.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from p2pspace.core.identity import short_id
from tests.helpers import TIMEOUT
from tests.helpers.api_client import api_node, client_of


async def test_members_routes_and_their_errors(tmp_path: Path) -> None:
    async with (
        api_node(tmp_path / "a", name="ann") as a,
        api_node(tmp_path / "b", name="bob") as b,
        client_of(a) as ca,
        client_of(b) as cb,
    ):
        space = a.create_space("notes").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        bob = b.endpoint_id.hex()

        listed = await ca.get("/api/spaces/notes/members")
        assert listed.status_code == 200
        members = {m["name"]: m for m in listed.json()["members"]}
        assert listed.json()["space"] == space.hex()
        assert {n: (m["role"], m["me"], m["current"]) for n, m in members.items()} == {
            "ann": ("manager", True, True),
            "bob": ("participant", False, True),
        }
        assert members["bob"]["short_id"] == short_id(b.endpoint_id)
        assert members["bob"]["display_name"] == "bob"

        async def expect(client: httpx.AsyncClient, path: str, body: object, status: int) -> str:
            response = await client.post(f"/api/spaces/notes{path}", json=body)
            assert response.status_code == status, response.text
            error: str = response.json().get("error", "")
            return error

        # A participant manages nothing (403), whatever it names.
        assert "only a manager" in await expect(cb, "/members/remove", {"member": "ann"}, 403)
        assert "only a manager" in await expect(
            cb, "/members/role", {"member": "bob", "role": "manager"}, 403
        )
        # The last manager can neither step down nor leave (403).
        assert "last manager" in await expect(
            ca, "/members/role", {"member": "ann", "role": "guest"}, 403
        )
        assert "last manager" in await expect(ca, "/leave", None, 403)
        assert "no member 'zed'" in await expect(ca, "/members/remove", {"member": "zed"}, 404)
        assert "already" in await expect(
            ca, "/members/role", {"member": "bob", "role": "participant"}, 409
        )
        await expect(ca, "/members/role", {"member": "bob", "role": "emperor"}, 400)
        await expect(ca, "/members/remove", {}, 400)
        await expect(ca, "/members/role", {"member": "bob"}, 400)
        assert (await ca.get("/api/spaces/nope/members")).status_code == 404

        promoted = await ca.post(
            "/api/spaces/notes/members/role",
            json={"member": short_id(b.endpoint_id), "role": "manager"},
        )
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["member"]["role"] == "manager"
        assert promoted.json()["delta"]["creator"] == a.endpoint_id.hex()

        await b.wait_until(lambda: b.space_info(space).role == "manager", timeout=TIMEOUT)
        left = await cb.post("/api/spaces/notes/leave")
        assert left.status_code == 200, left.text
        info = left.json()["space"]
        assert (info["member"], info["role"], info["removed_by"]) == (False, None, bob)
        assert info["removed_by_name"] == "bob"
        # Read-only now: writes are refused with the reason.
        put = await cb.put("/api/spaces/notes/rdb/t/r", json={"fields": {"v": 1}})
        assert put.status_code == 403 and "you left it" in put.json()["error"]

        await a.wait_until(
            lambda: not next(m for m in a.members(space) if m.name == "bob").current,
            timeout=TIMEOUT,
        )
        gone = next(m for m in (await ca.get("/api/spaces/notes/members")).json()["members"]
                    if m["name"] == "bob")  # fmt: skip
        assert (gone["current"], gone["left"], gone["removed_by_name"]) == (False, True, "bob")
        assert "no longer a member" in await expect(ca, "/members/remove", {"member": "bob"}, 409)


async def test_rename_invitation_and_last_seen(tmp_path: Path) -> None:
    async with api_node(tmp_path / "a", name="ann") as a, client_of(a) as ca:
        space = a.create_space("notes").space_id
        a.create_space("other")

        made = await ca.post("/api/spaces/notes/invitations", json={"role": "guest", "ttl_s": 60})
        assert made.status_code == 201, made.text
        invitation = made.json()
        assert invitation["role"] == "guest"
        now = a.clock.now_ms()
        assert now < invitation["expires"] <= now + 60_000
        # The QR code is an SVG element with nothing in it that could run or style the page.
        svg = invitation["qr_svg"]
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert "<script" not in svg and "style=" not in svg and "href" not in svg

        async with api_node(tmp_path / "b", name="bob") as b, client_of(b) as cb:
            await b.join(invitation["code"], timeout=TIMEOUT)
            await b.wait_until(lambda: b.space_info(space).role == "guest", timeout=TIMEOUT)

            renamed = await ca.post("/api/spaces/notes/rename", json={"name": "  Team notes "})
            assert renamed.status_code == 200, renamed.text
            assert renamed.json()["old_name"] == "notes"
            assert renamed.json()["space"]["name"] == "Team notes"
            await b.wait_until(lambda: b.space_info(space).name == "Team notes", timeout=TIMEOUT)
            assert (await cb.get(f"/api/spaces/{space.hex()}")).json()["name"] == "Team notes"
            # The new name names the space in paths from now on, on both nodes.
            assert (await cb.get("/api/spaces/Team%20notes/members")).status_code == 200

            refused = await cb.post(f"/api/spaces/{space.hex()}/rename", json={"name": "bob's"})
            assert refused.status_code == 403
            assert "only a manager can rename" in refused.json()["error"]
            for body, status in (
                ({"name": "other"}, 409),  # another space here has it
                ({"name": "Team notes"}, 409),  # the name it has
                ({"name": "   "}, 400),
                ({"name": "x" * 201}, 400),
                ({}, 400),
            ):
                answer = await ca.post("/api/spaces/Team%20notes/rename", json=body)
                assert answer.status_code == status, (body, answer.text)
            assert a.space_info(space).name == "Team notes"

            # Online: no last-seen time shown yet, but the node keeps noting it.
            await a.wait_until(lambda: a.last_seen.get(b.endpoint_id) > 0, timeout=TIMEOUT)
            bob_id = b.endpoint_id
        # bob stopped: ann's list says when it last saw bob, and its own entry has none.
        listed = (await ca.get("/api/spaces/Team%20notes/members")).json()["members"]
        entries = {m["name"]: m for m in listed}
        assert entries["ann"]["last_seen"] == 0
        assert 0 < entries["bob"]["last_seen"] <= a.clock.now_ms()
        assert entries["bob"]["last_seen"] == a.last_seen.get(bob_id)
