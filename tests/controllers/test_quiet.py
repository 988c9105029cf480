"""A quiet platform's app controller (issue 22): after a pass that found every app as wished and
nothing to wait for, a tick makes a full pass only when something changed since (an instance,
heard from the provider; an API write on any replica, read from the store's change mark) or
the slow resync is due. An app not yet as wished is held in the controller's work queue and
looked at alone, at the next tick when the last look acted, else after a growing delay or when
its restart back-off ends. On the simulated cluster, with the platform's ``ManualClock``."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.controllers import apps as controller_module
from gaia.controllers.access import AccessGateway, Dnsmasq, Haproxy
from gaia.controllers.leadership import LeaderElected
from gaia.domain.access import AppKey
from gaia.loop import LoopService
from gaia.platform import Platform
from gaia.store import apps as store_apps
from gaia.store import leases
from gaia.store.apps import AppWritten
from gaia.store.models import AppTemplate, Business, OperationRecord, utcnow
from tests.conftest import World, missing_component
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.kube import free_port

RESYNC_S = 10.0


def quiet(world: World, platform: Platform, resync: float = RESYNC_S) -> AppsHarness:
    """A harness whose controller runs as the platform runs it: quiet ticks skipped, told of
    every instance change by the providers."""
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    h.controller = platform.app_controller(resync=resync)
    platform.providers.watch_changes(h.controller.changed)
    return h


def settled_web(h: AppsHarness, replicas: int = 2) -> None:
    body = {"name": "web", "cluster": "sim-1", "templates": [template("v1", "shop/web:1")]}
    h.post(f"{BIZ}/apps", {**body, "replicas": replicas}, status=201)
    h.settle(h.ready("web", replicas))
    h.controller.changed()  # something heard that is no one app's: a full pass
    h.tick()  # which finds everything as wished (the resync counts from it)
    assert h.controller.last.settled and not h.controller.last.partial, h.controller.last


def full_passes(h: AppsHarness, ticks: int) -> int:
    """Full passes in the next ``ticks`` ticks of one second."""
    before = h.controller.passes
    for _ in range(ticks):
        h.tick()
    return h.controller.passes - before


def test_a_settled_platforms_ticks_make_no_pass_until_the_resync(
    world: World, platform: Platform
) -> None:
    h = quiet(world, platform)
    settled_web(h)
    skipped = h.controller.quiet_ticks
    told: list[int] = []
    h.controller.on_quiet = lambda: told.append(1)  # the platform counts them as a metric
    assert full_passes(h, int(RESYNC_S) - 2) == 0
    assert h.controller.quiet_ticks == skipped + int(RESYNC_S) - 2 == skipped + len(told)
    # the resync: a full pass however quiet it is, then quiet again
    assert full_passes(h, 3) == 1


def test_without_a_resync_every_tick_is_a_pass(world: World, platform: Platform) -> None:
    """Tests and benchmarks drive the controller by hand: each ``run_once`` is a pass."""
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    settled_web(h)
    assert full_passes(h, 3) == 3
    assert h.controller.quiet_ticks == 0


def test_an_instance_that_dies_is_restarted_at_the_next_tick(
    world: World, platform: Platform
) -> None:
    h = quiet(world, platform, resync=60)
    settled_web(h)
    assert full_passes(h, 2) == 0
    victim = next(iter(h.instances("web").values()))
    h.sim("sim-1").crash("alpha", victim["name"], exit_code=137, message="killed")
    # the crash was heard: the restart comes when its back-off ends (10 s), not at the resync
    took = h.settle(lambda: h.instances("web")[victim["id"]]["restarts"] == 1, limit_s=90)
    assert took <= 15, took
    h.settle(h.ready("web", 2), limit_s=30)


def test_an_api_write_not_heard_here_is_seen_at_the_next_tick(
    world: World, platform: Platform
) -> None:
    """No loop runs in this process, so the API write wakes nothing here, as a write served by
    another replica would not: the store's change mark says it, and its operation record says
    whose it is, so that app alone is looked at."""
    h = quiet(world, platform)
    two_apps(h)
    assert full_passes(h, 2) == 0
    h.post(f"{BIZ}/apps/web/scale-out", {"count": 1})
    assert passes_by_kind(h, 1)[:2] == (0, 1)
    assert h.controller.last.apps == 1 and h.controller.last.actions["create"] == 1
    h.settle(h.ready("web", 3), limit_s=30)


def test_a_failed_write_changes_nothing_and_a_write_no_apps_makes_a_full_pass(
    world: World, platform: Platform
) -> None:
    """A call that failed is recorded but changed nothing: no look at all (a tenant's failing
    calls cost the controller nothing). A change that is no one app's (a quota) is read by a
    full pass."""
    h = quiet(world, platform)
    two_apps(h)
    r = h.client.post(f"{BIZ}/apps/web/scale-in", json={"instance_ids": [999]}, headers=h.headers)
    assert r.status_code >= 400, r.text
    latest = h.client.get("/api/v1/records?limit=1", headers=world.admin).json()["items"][0]
    assert latest["result"] == "failure"  # recorded: the store's change mark moved
    assert passes_by_kind(h, 2)[:2] == (0, 0)
    quota = h.client.get(f"{BIZ}/quotas/sim-1", headers=world.admin).json()
    r = h.client.put(f"{BIZ}/quotas/sim-1", json={"hard": quota["hard"]}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert passes_by_kind(h, 1)[:2] == (1, 0)


def test_a_write_that_changes_nothing_the_controller_reads_makes_no_pass(
    world: World, platform: Platform
) -> None:
    """A login, a token, a new user, a member, a new business: recorded (the store's change
    mark moves), and the API's record says they touch no app (``OperationRecord.touches``), so
    the quiet controller makes no pass for them (before, each made a full one)."""
    h = quiet(world, platform)
    two_apps(h)
    admin = world.admin
    calls = [
        ("POST", "/api/v1/auth/login", {"username": "dev", "password": "dev-password"}, None),
        ("POST", "/api/v1/tokens", {"name": "ci"}, h.headers),
        ("POST", "/api/v1/users", {"username": "newbie", "password": "newbie-password"}, admin),
        ("PUT", f"{BIZ}/members/newbie", {"role": "viewer"}, admin),
        ("POST", "/api/v1/businesses", {"name": "gamma"}, admin),
    ]
    for method, path, body, headers in calls:
        r = h.client.request(method, path, json=body, headers=headers)
        assert r.status_code < 300, (path, r.text)
        latest = h.client.get("/api/v1/records?limit=1", headers=admin).json()["items"][0]
        assert (latest["path"], latest["result"]) == (path, "success")
        assert passes_by_kind(h, 1)[:2] == (0, 0), path
    with platform.db.read_session() as session:
        touched = session.scalars(
            select(OperationRecord.touches).order_by(OperationRecord.id.desc()).limit(len(calls))
        ).all()
    assert touched == [""] * len(calls)


def test_a_deploy_without_a_record_is_seen_as_its_apps(world: World, platform: Platform) -> None:
    """A pipeline's deploy writes a new version and an upgrade and no operation record: the
    store's change mark moves with them, and they name their app."""
    h = quiet(world, platform)
    two_apps(h)
    with platform.db.write_session() as session:
        business = session.scalars(select(Business).where(Business.name == "alpha")).one()
        app = store_apps.find_app(session, business=business, name="web", lock=True)
        base = session.scalars(
            select(AppTemplate).where(AppTemplate.app_id == app.id, AppTemplate.name == "v1")
        ).one()
        session.add(
            AppTemplate(
                app_id=app.id,
                name="v2",
                spec={**base.spec, "image": "shop/web:2"},
                created_by="pipeline/test",
                created_at=utcnow(),
            )
        )
        session.flush()
        store_apps.create_upgrade(
            session,
            business=business,
            app=app,
            target="v2",
            instance_ids=None,
            max_unavailable=1,
            created_by="pipeline/test",
        )
    full, partial, _ = passes_by_kind(h, 1)
    assert (full, partial) == (0, 1) and h.controller.last.apps == 1
    assert h.controller.last.actions["replace-image"] == 1  # the first batch, in place


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_another_replicas_write_that_commits_late_is_seen_at_the_next_tick(
    world: World, platform: Platform
) -> None:
    """On PostgreSQL another replica's scale-out may commit after a write with a higher record
    id (here api's) was seen: the next tick looks at web all the same, well before the resync
    (``store.apps.ChangeMark.missing``)."""
    h = quiet(world, platform)
    two_apps(h)
    assert full_passes(h, 2) == 0
    slow = Session(platform.db.engine)  # another replica's request, in flight
    try:
        business = slow.scalars(select(Business).where(Business.name == "alpha")).one()
        web = store_apps.find_app(slow, business=business, name="web", lock=True)
        store_apps.scale_out(slow, business=business, app=web, template=None, count=1)
        slow.add(app_record("web", "scale-out"))
        slow.flush()
        with platform.db.write_session() as session:
            session.add(app_record("api", "restart"))
        assert passes_by_kind(h, 1)[:2] == (0, 1)  # api's write, looked at alone
        assert h.controller.last.apps == 1 and not any(h.controller.last.actions.values())
        slow.commit()
    finally:
        slow.close()
    assert passes_by_kind(h, 1)[:2] == (0, 1)
    assert h.controller.last.actions["create"] == 1
    h.settle(h.ready("web", 3), limit_s=30)


def app_record(app: str, verb: str) -> OperationRecord:
    """The record of a successful call on one of alpha's apps, as the API writes it."""
    return OperationRecord(
        actor="dev",
        action=verb,
        method="POST",
        path=f"{BIZ}/apps/{app}/{verb}",
        result="success",
        status_code=200,
        touches=store_apps.touches_app("alpha", app),
    )


def test_the_apis_own_write_is_heard_with_its_app(world: World, platform: Platform) -> None:
    """The running platform's API tells the controller which app it changed (``AppWritten``):
    looked at at once, without waiting for the tick to read the store's change mark; an app the
    controller has not seen makes a full pass."""
    h = quiet(world, platform)
    two_apps(h)
    h.controller.changed(AppWritten("alpha", "api"))
    assert passes_by_kind(h, 1)[:2] == (0, 1) and h.controller.last.apps == 1
    h.controller.changed(AppWritten("alpha", "nobody"))
    assert passes_by_kind(h, 1)[:2] == (1, 0)


def passes_by_kind(h: AppsHarness, ticks: int) -> tuple[int, int, list[int]]:
    """(full passes, partial passes, the ticks (1-based) that made a pass) in ``ticks`` ticks."""
    full = partial = 0
    at: list[int] = []
    for n in range(1, ticks + 1):
        before = h.controller.passes
        h.tick()
        if h.controller.passes > before:
            at.append(n)
            if h.controller.last.partial:
                partial += 1
            else:
                full += 1
    return full, partial, at


def cordon_all(h: AppsHarness) -> None:
    sim = h.sim("sim-1")
    for node in asyncio.run(sim.list_nodes()):
        asyncio.run(sim.set_schedulable(node.name, False))


def test_an_app_that_cannot_be_placed_is_looked_at_less_and_less_often(
    world: World, platform: Platform
) -> None:
    """Before the work queue, one app not as wished made every tick a full pass of the whole
    platform. Now it alone is looked at, after 1, 2, 4, 8 s, and the resync looks at all."""
    h = quiet(world, platform)
    settled_web(h)
    body = {"name": "api", "cluster": "sim-1", "templates": [template("v1", "shop/api:1")]}
    h.post(f"{BIZ}/apps", {**body, "replicas": 1}, status=201)
    h.settle(h.ready("api", 1))
    cordon_all(h)
    h.controller.changed()
    assert passes_by_kind(h, 1)[:2] == (1, 0)  # a full pass, the resync's start
    h.post(f"{BIZ}/apps/api/scale-out", {"count": 1})
    full, partial, at = passes_by_kind(h, 1)
    # the write (its record names the app): api looked at alone, which cannot place the new one
    assert (full, partial) == (0, 1) and h.controller.last.apps == 1
    assert h.controller.last.actions["unschedulable"] == 1
    webs = {i["name"] for i in h.instances("web").values()}

    told: list[tuple[bool, int]] = []
    h.controller.on_pass = lambda partial, queued: told.append((partial, queued))  # metrics
    full, partial, at = passes_by_kind(h, 8)
    # (the full pass was at 0): the api app alone at +1, +3, +7 (back-off 1, 2, 4 s)
    assert (full, partial, at) == (0, 3, [1, 3, 7]), (full, partial, at)
    assert told == [(True, 1)] * 3
    assert h.controller.last.apps == 1 and h.controller.last.actions["unschedulable"] == 1
    assert h.controller.quiet_ticks >= 5
    # the other app's instances were left alone (a partial pass deletes no "orphans")
    assert {i["name"] for i in h.instances("web").values()} == webs
    # the resync (10 s after the full pass) looks at everything; the delays are capped by it
    full, partial, at = passes_by_kind(h, 9)
    assert (full, partial, at) == (1, 0, [1]), (full, partial, at)

    # the node is opened: the next look places it (an uncordon in a real cluster is an event
    # too; here nothing is heard, so the queue's next look does it)
    sim = h.sim("sim-1")
    asyncio.run(sim.set_schedulable(asyncio.run(sim.list_nodes())[0].name, True))
    took = h.settle(h.ready("api", 2), limit_s=30)
    assert took <= 15, took


def two_apps(h: AppsHarness) -> None:
    settled_web(h)
    body = {"name": "api", "cluster": "sim-1", "templates": [template("v1", "shop/api:1")]}
    h.post(f"{BIZ}/apps", {**body, "replicas": 1}, status=201)
    h.settle(h.ready("api", 1))
    h.controller.changed()
    h.tick()
    assert h.controller.last.settled and not h.controller.last.partial


def count_whole_listings(sim: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sim's whole-cluster reads from now on (its nodes, every instance), by name."""
    seen: list[str] = []
    nodes, instances = sim.list_nodes, sim.list_instances

    async def list_nodes() -> Any:
        seen.append("nodes")
        return await nodes()

    async def list_instances(**kw: Any) -> Any:
        if not kw.get("app"):
            seen.append("instances")
        return await instances(**kw)

    monkeypatch.setattr(sim, "list_nodes", list_nodes)
    monkeypatch.setattr(sim, "list_instances", list_instances)
    return seen


def test_an_instance_heard_of_is_looked_at_with_its_app_alone(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change a provider reports names the instance's app: the next tick looks at that app,
    not at the platform (before: every instance change made a full pass)."""
    h = quiet(world, platform, resync=60)
    two_apps(h)
    victim = next(iter(h.instances("web").values()))
    sim = h.sim("sim-1")
    whole = count_whole_listings(sim, monkeypatch)
    sim.crash("alpha", victim["name"], exit_code=137, message="killed")
    full, partial, _at = passes_by_kind(h, 1)
    assert (full, partial) == (0, 1) and h.controller.last.apps == 1, h.controller.last
    # and it read web's instances only: nothing is placed, so the cluster is not listed whole
    assert whole == [], whole
    took = h.settle(lambda: h.instances("web")[victim["id"]]["restarts"] == 1, limit_s=30)
    assert took <= 15, took
    h.settle(h.ready("web", 2), limit_s=30)
    full, partial, _ = passes_by_kind(h, 3)
    assert full == 0 and h.controller.last.settled  # no full pass until the resync
    assert h.controller.last.apps == 1  # web's last look, api never looked at


def test_a_pass_reads_the_nodes_only_to_place(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full pass lists every instance (orphans, every app's own) but reads the nodes and
    builds the scheduler's view only when an app places an instance; an instance deleted
    before that in the pass makes it list the instances again (the first listing no longer
    says what holds the nodes)."""
    h = quiet(world, platform)
    two_apps(h)
    sim = h.sim("sim-1")
    whole = count_whole_listings(sim, monkeypatch)
    h.controller.changed()
    assert passes_by_kind(h, 1)[:2] == (1, 0)
    assert whole == ["instances"]  # nothing to place: no node read
    whole.clear()
    h.post(f"{BIZ}/apps/web/scale-in", {"instance_ids": [1]})
    h.post(f"{BIZ}/apps/api/scale-out", {"count": 1})
    h.controller.changed()  # (the writes alone would look at web and api only)
    assert passes_by_kind(h, 1)[:2] == (1, 0)
    assert h.controller.last.actions["delete"] == 1 and h.controller.last.actions["create"] == 1
    assert whole == ["instances", "nodes", "instances"], whole


def test_a_change_of_an_app_the_controller_does_not_know_makes_a_full_pass(
    world: World, platform: Platform
) -> None:
    """Only a full pass can tell whose an unknown instance is (an app created on another
    replica, an orphan to delete)."""
    h = quiet(world, platform)
    two_apps(h)
    assert passes_by_kind(h, 2)[:2] == (0, 0)
    cluster_id = next(iter(h.controller._cluster_of.values()))
    h.controller.changed((cluster_id, "alpha", "nobody"))
    assert passes_by_kind(h, 1)[:2] == (1, 0)
    h.controller.changed((cluster_id, "alpha", "web"))
    assert passes_by_kind(h, 1)[:2] == (0, 1)
    assert h.controller.last.apps == 1


def test_an_app_waiting_for_room_is_looked_at_when_its_cluster_is_heard_of(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room may come with any instance change in the app's cluster (one deleted there): the
    apps that wait for room there are looked at with the app heard of, not after their
    delay."""
    h = quiet(world, platform, resync=60)
    two_apps(h)
    cordon_all(h)
    h.post(f"{BIZ}/apps/api/scale-out", {"count": 1})
    full, partial, at = passes_by_kind(h, 5)  # the write's look at api, then api at +1 and +3
    assert (full, partial, at) == (0, 3, [1, 2, 4]), (full, partial, at)
    assert h.controller.last.actions["unschedulable"] == 1
    # a node opens, unheard (nothing tells the controller); then one of web's instances
    # goes, which is heard: api, next due at +7, is looked at with web at once (+5)
    sim = h.sim("sim-1")
    asyncio.run(sim.set_schedulable(asyncio.run(sim.list_nodes())[0].name, True))
    victim = next(iter(h.instances("web").values()))
    asyncio.run(sim.delete_instance(namespace="alpha", name=victim["name"]))
    whole = count_whole_listings(sim, monkeypatch)
    full, partial, at = passes_by_kind(h, 1)
    assert (full, partial) == (0, 1), (full, partial)
    assert h.controller.last.apps == 2 and h.controller.last.actions["create"] == 2
    assert whole == ["nodes", "instances"]  # placing reads the cluster whole, once a pass


def test_a_quiet_controller_hears_the_sims_own_changes_at_each_tick(
    world: World, platform: Platform
) -> None:
    """The sim moves only when called; the controller catches it up at each tick, so an
    instance that starts meanwhile (after a 10 s pull) is heard then, as an informer's event
    would be, and not at the work queue's next look (after 1, 2, 4, 8 s of waiting)."""
    took = {}
    sim = platform_sim(world, platform)
    for name, resync in (("every", None), ("quiet", 60.0)):
        h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
        h.controller = platform.app_controller(resync=resync)
        platform.providers.watch_changes(h.controller.changed)
        image = f"shop/{name}:1"
        sim.register_image(image, [12_500_000_000])  # 10 s on the nodes' 10 Gbit/s
        body = {"name": name, "cluster": "sim-1", "templates": [template("v1", image)]}
        h.post(f"{BIZ}/apps", {**body, "replicas": 2}, status=201)
        h.tick()  # the write's pass: the instances are placed and their pulls begin

        def heard(c: Any = h.controller) -> bool:
            # the controller's own word, not the API's: a read through the API would move
            # the sim (and tell the controller) by itself
            return c.last.settled and len(c.queue) == 0

        took[name] = h.settle(heard, limit_s=60)
        assert h.ready(name, 2)()
    assert took["quiet"] <= took["every"], took


def platform_sim(world: World, platform: Platform) -> Any:
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    return h.sim("sim-1")


def test_a_restart_back_off_is_waited_out_to_the_second(world: World, platform: Platform) -> None:
    """A crash-looping instance: the queue looks at its app when the back-off ends, not at the
    next step of its own back-off, and not every tick either."""
    h = quiet(world, platform, resync=3600)
    settled_web(h, replicas=1)
    victim = next(iter(h.instances("web").values()))
    sim = h.sim("sim-1")
    sim.crash("alpha", victim["name"], exit_code=1, message="boom")
    h.settle(lambda: h.instances("web")[victim["id"]]["restarts"] == 1, limit_s=30)
    h.settle(h.ready("web", 1), limit_s=30)
    sim.crash("alpha", victim["name"], exit_code=1, message="boom again")
    passes = h.controller.passes
    # the second failure in the policy's memory: a 20 s back-off
    took = h.settle(lambda: h.instances("web")[victim["id"]]["restarts"] == 2, limit_s=60)
    assert 19 <= took <= 22, took
    assert h.controller.passes - passes < took / 2  # most ticks were quiet


def test_a_cluster_out_of_reach_is_tried_again_after_doubling_delays(
    world: World, platform: Platform
) -> None:
    h = quiet(world, platform)
    settled_web(h)
    sim = h.sim("sim-1")
    sim.reachable = False
    try:
        h.controller.changed()  # something heard: a full pass, which cannot reach the cluster
        full, partial, at = passes_by_kind(h, 9)
        assert (full, partial, at) == (4, 0, [1, 2, 4, 8]), (full, partial, at)
    finally:
        sim.reachable = True
    full, _, at = passes_by_kind(h, 9)
    assert at == [7] and h.controller.last.settled, at  # reached at its next try, 8 s later
    assert full_passes(h, 5) == 0


def test_an_app_whose_look_fails_backs_off_and_leaves_the_others_quiet(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = quiet(world, platform)
    settled_web(h)
    real = h.controller._reconcile_app

    async def failing(**kw: Any) -> Any:
        if kw["app"].name == "web":
            raise ValueError("a bad template")
        return await real(**kw)

    monkeypatch.setattr(h.controller, "_reconcile_app", failing)
    h.controller.changed()  # something heard: a full pass, which fails for web
    full, _, at = passes_by_kind(h, 9)
    assert full == 1 and h.controller.last.errors == 1
    assert at == [1, 2, 4, 8], at  # then web alone after 1, 2, 4 s, each failing
    events = [e for e in h.event_rows("web") if e["reason"] == "ReconcileError"]
    assert events


def test_a_cluster_with_more_events_than_a_pass_takes_is_not_quiet(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = quiet(world, platform)
    settled_web(h)
    monkeypatch.setattr(controller_module, "EVENTS_PER_PASS", 3)
    # a new controller (a restart) starts from the first event the sim holds: 2 instances'
    # scheduling, pulls, creation and start, 3 a pass
    h.restart_controller()
    h.controller.resync = RESYNC_S
    first = len(h.event_rows("web-0")) + len(h.event_rows("web-1"))
    h.tick()
    assert not h.controller.last.settled
    passes = 1 + full_passes(h, 10)
    assert 3 <= passes < 11  # one a tick until the cluster's events are all written
    assert h.controller.last.settled
    assert len(h.event_rows("web-0")) + len(h.event_rows("web-1")) >= first


class _Recorder(LoopService):
    name = "recorder"

    def __init__(self) -> None:
        super().__init__(interval=1.0)
        self.ran = 0
        self.forgotten = 0

    async def run_once(self) -> None:
        self.ran += 1

    def forget(self) -> None:
        self.forgotten += 1


class _Leadership:
    def __init__(self) -> None:
        self.held: leases.Held | None = None

    def leads(self) -> leases.Held | None:
        return self.held


def test_a_new_term_as_leader_forgets_what_the_last_one_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica that leads again after another did must not trust its quiet state: the other
    leader may have acted on the clusters meanwhile."""
    monkeypatch.setattr(leases, "fenced_by", lambda held: nullcontext())
    inner, lead = _Recorder(), _Leadership()
    loop = LeaderElected(inner, lead)  # type: ignore[arg-type]

    def tick() -> Any:
        import asyncio

        asyncio.run(loop.run_once())

    lead.held = leases.Held("controllers", "me", 1)
    tick()
    tick()
    assert (inner.ran, inner.forgotten) == (2, 1)  # the first term begins once
    lead.held = None
    tick()  # another replica leads
    lead.held = leases.Held("controllers", "me", 3)
    tick()
    assert (inner.ran, inner.forgotten) == (3, 2)


def patch_web(h: AppsHarness, body: dict[str, Any]) -> None:
    r = h.client.patch(f"{BIZ}/apps/web", json=body, headers=h.headers)
    assert r.status_code == 200, r.text


def test_a_domain_taken_away_leaves_the_balancer_at_the_apps_own_look(
    world: World, platform: Platform, tmp_path: Path
) -> None:
    """The access layer (real HAProxy and dnsmasq) learns of a change to one app from the
    partial pass that looks at it: a domain given serves the app, a domain taken away stops
    serving it, without waiting for the resync's full pass."""
    for tool in ("haproxy", "dnsmasq"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            missing_component(tool, "scripts/test.sh installs it (Debian)")
    gateway = AccessGateway(
        haproxy=Haproxy(
            binary="haproxy", folder=tmp_path / "access", bind=f"127.0.0.1:{free_port()}"
        ),
        dns=Dnsmasq(
            binary="dnsmasq", folder=tmp_path / "access", listen=f"127.0.0.1:{free_port()}"
        ),
        address="192.0.2.10",
    )
    gateway.start()
    try:
        h = quiet(world, platform, resync=3600)
        h.controller.access = gateway
        two_apps(h)
        key = AppKey("sim-1", "alpha", "web")
        assert not gateway.serves(key)
        patch_web(h, {"domain": "shop.example.com"})
        assert passes_by_kind(h, 1)[:2] == (0, 1)
        assert gateway.serves(key)
        assert [b.domain for b in gateway.backends()] == ["shop.example.com"]
        patch_web(h, {"domain": ""})
        assert passes_by_kind(h, 1)[:2] == (0, 1)
        assert not gateway.serves(key) and gateway.backends() == []
    finally:
        gateway.stop()
