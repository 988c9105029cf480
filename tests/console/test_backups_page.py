"""The backups page (gaia/console/pages/backups.py): platform admins only; it lists the
backups with their state, starts one now (then shows it pending, the button disabled while it
is taken) and speaks Chinese to a zh-CN user."""

from __future__ import annotations

import asyncio

from gaia.controllers.backups import ScheduledBackups
from gaia.platform import Platform
from tests.conftest import World
from tests.console.test_clusters import html, post


def test_only_platform_admins_see_and_reach_backups(world: World) -> None:
    assert 'href="/console/backups"' in html(world, "platform-admin", "/console")
    for who in ("business-admin", "developer", "viewer"):
        assert 'href="/console/backups"' not in html(world, who, "/console")
        html(world, who, "/console/backups", status=403)
        assert post(world, who, "/console/backups", {}).status_code == 403
    listed = world.client.get("/api/v1/backups", headers=world.admin).json()
    assert listed["items"] == []


def test_an_admin_starts_a_backup_and_sees_it_taken(world: World, platform: Platform) -> None:
    assert "No backup has been taken yet." in html(world, "platform-admin", "/console/backups")
    r = post(world, "platform-admin", "/console/backups", {})
    assert r.status_code == 303 and "backup+1+asked+for" in r.headers["location"]
    page = html(world, "platform-admin", "/console/backups")
    assert "Pending" in page and '<button type="submit" disabled>' in page

    loop = ScheduledBackups(
        db=platform.db,
        settings=platform.settings.model_copy(update={"backup_every_seconds": 0}),
        secrets=platform.secrets,
        clock=platform.clock,
    )
    asyncio.run(loop.start(loops=1))
    page = html(world, "platform-admin", "/console/backups")
    taken = world.client.get("/api/v1/backups/1", headers=world.admin).json()
    assert taken["state"] == "Succeeded"
    assert "Succeeded" in page and taken["file_name"] in page
    assert '<button type="submit">' in page

    r = world.client.patch("/api/v1/users/admin", json={"language": "zh-CN"}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert "立即备份" in html(world, "platform-admin", "/console/backups")
