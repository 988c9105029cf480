"""Declared prewarms (``SwarmCoordinator.declare_prewarm``): an owner's whole wish as one job,
replaced by the next wish and withdrawn by an empty one; the form a real cluster's pre-pull
(the port's ``ImagePrewarmer``, through the kubernetes adapter's sink) takes in the coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gaia.controllers.swarm import ClusterKey, ImageRef, SwarmCoordinator, SwarmPrewarms
from tests.controllers.test_swarm import KEY, coordinator, join

WEB_V2 = "registry.local/shop/web:v2"


def heartbeat_jobs(coord: SwarmCoordinator, node: str) -> list[tuple[str, str]]:
    answer = coord.register(KEY, node=node, zone="z1", address=f"{node}:7000", upload_slots=4)
    return list(answer.prewarm)


def run(scenario: Callable[[], None]) -> None:
    async def inside() -> None:  # the coordinator lives on an event loop
        scenario()

    asyncio.run(inside())


def test_a_new_wish_replaces_the_owners_job_and_an_empty_one_withdraws_it() -> None:
    def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a", "b", "c")
        first = coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a", "b"})
        assert first is not None
        assert heartbeat_jobs(coord, "a") == [(first, WEB_V2)]
        # the same wish again keeps the job: agents pulling it are not told of another
        assert coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"b", "a"}) == (
            first
        )
        # other nodes, the same image: the same job, now naming those nodes (a look-ahead
        # moving on, a wish growing while an app comes up: agents are not told of a new job)
        assert coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"c"}) == first
        assert heartbeat_jobs(coord, "a") == []  # called off there
        assert heartbeat_jobs(coord, "c") == [(first, WEB_V2)]
        # another image: another job
        web_v3 = "registry.local/shop/web:v3"
        second = coord.declare_prewarm(KEY, owner="alpha/web", image=web_v3, nodes={"c"})
        assert second not in (None, first)
        assert heartbeat_jobs(coord, "c") == [(second, web_v3)]
        assert coord.declare_prewarm(KEY, owner="alpha/web", image="", nodes=()) is None
        assert heartbeat_jobs(coord, "c") == []

    run(scenario)


def test_a_wish_said_again_keeps_its_job_past_its_day_and_one_not_lapses() -> None:
    def scenario() -> None:
        coord, clock = coordinator(prewarm_ttl_s=100.0)
        join(coord, "a")
        first = coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"})
        clock.step(80)
        join(coord, "a")
        # the controller says the standing wish again (``PREWARM_REPEAT``): the same job
        assert coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"}) == first
        clock.step(80)  # 160 s after it was first said, 80 s after the last time
        coord.sweep()
        assert heartbeat_jobs(coord, "a") == [(first, WEB_V2)]
        clock.step(30)  # not said again: its day has passed
        coord.sweep()
        assert heartbeat_jobs(coord, "a") == []

    run(scenario)


def test_owners_do_not_touch_each_others_jobs_nor_the_apis() -> None:
    def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a")
        base = ImageRef.parse("registry.local/base:1")
        asked = coord.create_prewarm(KEY, image=base, nodes=["a"])  # POST .../p2p/prewarms
        web = coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"})
        api = coord.declare_prewarm(KEY, owner="alpha/api", image=WEB_V2, nodes={"a"})
        assert web is not None and api is not None
        coord.declare_prewarm(KEY, owner="alpha/web", image="", nodes=())
        assert {pid for pid, _ in heartbeat_jobs(coord, "a")} == {asked, api}

    run(scenario)


def test_a_wish_declared_before_any_agent_registered_waits_for_the_first() -> None:
    # after a restart the app controller declares its wishes (once) before the agents' next
    # heartbeat: the wish must not be lost
    def scenario() -> None:
        coord, _ = coordinator()
        assert coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"}) is None
        coord.declare_prewarm(KEY, owner="alpha/api", image=WEB_V2, nodes={"a"})
        coord.declare_prewarm(KEY, owner="alpha/api", image="", nodes=())  # withdrawn meanwhile
        other = ClusterKey(id=2, name="kube-2")
        SwarmPrewarms(coord, other).declare_prewarm(owner="alpha/db", image=WEB_V2, nodes={"a"})
        join(coord, "a")
        ((pid, image),) = heartbeat_jobs(coord, "a")  # web's, not api's nor the other's
        job, _progress = coord.prewarm(KEY, pid)
        assert (image, job.owner, job.nodes) == (WEB_V2, "alpha/web", ["a"])

    run(scenario)


def test_waiting_wishes_are_bounded_per_cluster() -> None:
    def scenario() -> None:
        coord, _ = coordinator()
        coord.max_prewarms = 3
        for i in range(5):
            coord.declare_prewarm(KEY, owner=f"alpha/app-{i}", image=WEB_V2, nodes={"a"})
        join(coord, "a")
        owners = sorted(
            coord.prewarm(KEY, pid)[0].owner or "" for pid, _ in heartbeat_jobs(coord, "a")
        )
        assert owners == ["alpha/app-2", "alpha/app-3", "alpha/app-4"]  # the oldest dropped

    run(scenario)


def test_an_image_that_is_no_reference_withdraws_and_does_not_raise() -> None:
    def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a")
        coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"})
        assert coord.declare_prewarm(KEY, owner="alpha/web", image="Not An Image", nodes={"a"}) is (
            None
        )
        assert heartbeat_jobs(coord, "a") == []

    run(scenario)


def test_cancel_calls_a_job_off() -> None:
    def scenario() -> None:
        coord, _ = coordinator()
        join(coord, "a")
        pid = coord.declare_prewarm(KEY, owner="alpha/web", image=WEB_V2, nodes={"a"})
        assert pid is not None
        assert coord.cancel_prewarm(KEY, pid)
        assert not coord.cancel_prewarm(KEY, pid)
        assert heartbeat_jobs(coord, "a") == []

    run(scenario)
