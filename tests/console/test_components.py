"""The platform components page (gaia/console/pages/components.py): platform admins only; this
replica with its loops from its heartbeat, the leaders, the stores, the clusters' control
planes; a loop's restart asked from the page; a component's recent log lines."""

from __future__ import annotations

import asyncio

from gaia.monitor.logs.store import SYSTEM_SOURCE, LogEntry
from gaia.platform import Platform
from tests.conftest import World
from tests.console.test_clusters import html, post


def _beat(platform: Platform) -> None:
    """One heartbeat of this replica, reporting the loops ``gaia up`` would run."""
    services = platform.loops()
    asyncio.run(platform.replica_heartbeat(services).run_once())


def test_only_platform_admins_see_the_components(world: World) -> None:
    assert 'href="/console/components"' in html(world, "platform-admin", "/console")
    for who in ("business-admin", "developer", "viewer"):
        assert 'href="/console/components"' not in html(world, who, "/console")
        html(world, who, "/console/components", status=403)
        r = post(world, who, "/console/components/restart", {"replica": "r", "loop": "apps"})
        assert r.status_code == 303 and "error=" in r.headers["location"]


def test_the_page_shows_replicas_loops_stores_and_control_planes(
    world: World, platform: Platform
) -> None:
    assert "No replica has reported yet." in html(world, "platform-admin", "/console/components")
    _beat(platform)
    page = html(world, "platform-admin", "/console/components")
    assert platform.replica_id in page and "this one" in page
    for loop in ("apps", "cluster-health", "alert-delivery", "replica-heartbeat"):
        assert f'<th scope="row">{loop}</th>' in page
    assert ("sqlite" in page or "postgresql" in page) and "embedded" in page
    assert '<a href="/console/clusters/sim-1">sim-1</a>' in page  # the world's sim cluster
    assert 'href="/console/components/logs?logger=gaia.controllers.apps"' in page

    r = post(
        world,
        "platform-admin",
        "/console/components/restart",
        {"replica": platform.replica_id, "loop": "apps"},
    )
    assert r.status_code == 303 and "ok=" in r.headers["location"], r.headers["location"]
    assert "Restarts asked, not yet taken: apps" in html(
        world, "platform-admin", "/console/components"
    )
    r = post(
        world,
        "platform-admin",
        "/console/components/restart",
        {"replica": platform.replica_id, "loop": "no-such-loop"},
    )
    assert "error=" in r.headers["location"] and "runs+no+loop" in r.headers["location"]


def test_the_app_controllers_work_queue_is_shown(world: World, platform: Platform) -> None:
    services = platform.loops()
    apps = next(s for s in services if s.name == "apps")
    controller = getattr(apps, "inner", apps)  # the loop runs under leader election
    for app_id in (1, 2, 3):
        controller.queue.waiting(("app", app_id), now=platform.clock.now())
    asyncio.run(platform.replica_heartbeat(services).run_once())
    page = html(world, "platform-admin", "/console/components")
    assert "3 in its work queue" in page
    assert page.count("in its work queue") == 1  # no other loop has one
    r = world.client.get("/api/v1/platform/components", headers=world.as_("platform-admin"))
    assert r.status_code == 200, r.text
    loops = {lp["name"]: lp for lp in r.json()["replicas"][0]["loops"]}
    assert loops["apps"]["queued"] == 3 and loops["cluster-health"]["queued"] is None


def test_a_components_recent_log_lines(world: World, platform: Platform) -> None:
    now = platform.clock.now()
    platform.log_store.append(
        [
            LogEntry(
                SYSTEM_SOURCE,
                now,
                "apps: one pass took long",
                "stderr",
                30,
                "gaia.controllers.apps",
            ),
            LogEntry(
                SYSTEM_SOURCE, now, "logs: collected", "stderr", 20, "gaia.monitor.logs.collector"
            ),
        ]
    )
    page = html(world, "platform-admin", "/console/components/logs?logger=gaia.controllers.apps")
    assert "Logs of gaia.controllers.apps" in page
    assert "apps: one pass took long" in page and "logs: collected" not in page
    html(world, "viewer", "/console/components/logs?logger=gaia", status=403)


def test_the_page_reads_in_chinese(world: World, platform: Platform) -> None:
    _beat(platform)
    r = world.client.patch("/api/v1/users/admin", json={"language": "zh-CN"}, headers=world.admin)
    assert r.status_code == 200, r.text
    page = html(world, "platform-admin", "/console/components")
    assert "平台组件" in page and "循环组领导者" in page and "本副本" in page
