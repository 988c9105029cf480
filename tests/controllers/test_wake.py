"""Event-driven reconcile (issue 22): the providers tell the platform of every instance change
(the sim's transitions here; the kubernetes provider's pod watch likewise), and the platform
wakes the app controller with them, as with API writes to apps. On the simulated cluster."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gaia.app import create_app
from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.waiting import eventually


def test_instance_changes_reach_the_registrys_listeners(world: World, platform: Platform) -> None:
    heard: list[int] = []
    platform.providers.watch_changes(lambda _heard: heard.append(1))
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    body = {"name": "web", "cluster": "sim-1", "templates": [template("v1", "shop/web:1")]}
    h.post(f"{BIZ}/apps", {**body, "replicas": 2}, status=201)
    h.tick()  # the controller places and creates: the sim schedules the instances' lives
    created = len(heard)
    assert created > 0
    h.settle(h.ready("web", 2))
    assert len(heard) > created  # pulled, created, started, ready: each is heard


def test_the_running_platform_wakes_the_app_controller(world: World, platform: Platform) -> None:
    with TestClient(create_app(platform, run_loops=True), base_url="https://localhost") as live:
        apps = platform._services["apps"]  # the running loop: its wakes
        before = apps.wakes
        body = {"name": "web", "cluster": "sim-1", "templates": [template("v1", "shop/web:1")]}
        r = live.post(f"{BIZ}/apps", json={**body, "replicas": 1}, headers=world.as_("developer"))
        assert r.status_code == 201, r.text
        assert apps.wakes > before  # the API write woke it
        after_write = apps.wakes
        provider = AppsHarness(platform=platform, client=live, headers={}).sim("sim-1")

        def woken_by_the_sim() -> bool:
            # simulated time moves; the sim's transitions (the instance the woken pass
            # created being pulled, started...) are heard, and each wakes the controller
            platform.clock.step(0.5)  # type: ignore[attr-defined] (the fixture's ManualClock)
            provider.advance()
            return apps.wakes > after_write

        eventually(woken_by_the_sim, "a sim transition wakes the controller", timeout_s=10)
