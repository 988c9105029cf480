"""The ``sim`` provider's own behaviour, beyond the port contract (``tests/contract``).

Image pulls (time from layer sizes and bandwidth, the per-node layer cache, shared downloads),
each injected fault, workload metrics and logs, GPU topology presets, spec and fault
validation, the clock, addresses, threads, and a 2,000-node / 20,000-instance run measured in a
subprocess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from gaia.clock import ManualClock
from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.gpu_links import numa_nodes, nvlink, pcie_two_socket
from gaia.domain.resources import ResourceVector
from gaia.providers.port import (
    ClusterEvent,
    ConfigData,
    ConfigRef,
    FailureCause,
    HealthState,
    ImagePrewarmer,
    Instance,
    InstancePhase,
    InstanceSpec,
    NetworkMode,
    NodeSpec,
    ProbeSpec,
    PullSecret,
    ServiceSpec,
)
from gaia.providers.sim import DEFAULT_SPEC, MAX_SIM_NODES, SimCluster, validate_sim_spec
from gaia.providers.sim._cluster import CREATE_S, SANDBOX_S, START_S, WATCH_S
from gaia.providers.sim._events import EventRing
from gaia.providers.sim._images import UNPACK_S_PER_LAYER, split_ref

NS = "team"
MB = 1_000_000
run = asyncio.run


class World:
    def __init__(self, **spec: Any) -> None:
        self.clock = ManualClock()
        self.sim = SimCluster(
            name="sim", spec={"nodes": 2, "gpus": 4, **spec}, zone="zone-a", clock=self.clock
        )

    @property
    def node(self) -> str:
        return "sim-node-0"

    def create(
        self,
        app: str = "web",
        instance_id: int = 0,
        *,
        node: str | None = None,
        image: str = "registry.local/team/web:v1",
        resources: ResourceVector | None = None,
        **extra: Any,
    ) -> Instance:
        spec = InstanceSpec(
            namespace=NS,
            app=app,
            instance_id=instance_id,
            version="v1",
            image=image,
            node=node or self.node,
            resources=resources or ResourceVector(cpu=1000, memory=1024),
            **extra,
        )
        return run(self.sim.create_instance(spec))

    def get(self, name: str, namespace: str = NS) -> Instance:
        for inst in run(self.sim.list_instances(namespace=namespace)):
            if inst.name == name:
                return inst
        raise AssertionError(f"{name} is not listed")

    def step(self, seconds: float) -> None:
        self.clock.step(seconds)
        self.sim.advance()

    def until(
        self, done: Callable[[], bool], *, limit_s: float = 120.0, step_s: float = 0.1
    ) -> None:
        waited = 0.0
        while not done():
            assert waited < limit_s, "the simulation did not get there"
            self.step(step_s)
            waited += step_s

    def until_running(self, name: str) -> Instance:
        self.until(lambda: self.get(name).phase == InstancePhase.RUNNING)
        return self.get(name)

    def events(self, name: str | None = None, *, since: int = 0) -> list[ClusterEvent]:
        found = run(self.sim.events(since=since, limit=100_000))
        return [e for e in found if name is None or e.object_name == name]

    def last_seq(self) -> int:
        return run(self.sim.events(since=0, limit=100_000))[-1].seq


def one(events: list[ClusterEvent], reason: str) -> ClusterEvent:
    found = [e for e in events if e.reason == reason]
    assert len(found) == 1, [(e.reason, e.message) for e in events]
    return found[0]


def seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


# ---------------------------------------------------------------- image pulls


def test_pull_time_is_missing_bytes_over_bandwidth_plus_unpacking() -> None:
    w = World(bandwidth_mbps=1000)  # 125,000,000 bytes/s
    w.sim.register_image("registry.local/pull/app:v1", [50 * MB, 75 * MB, 125 * MB])
    w.create(image="registry.local/pull/app:v1")
    w.step(0.5)  # the node notices the binding
    pulling = w.get("web-0")
    assert pulling.phase == InstancePhase.PULLING
    assert pulling.pull is not None and pulling.pull.total_bytes == 250 * MB
    w.step(1.0)
    halfway = w.get("web-0").pull
    assert halfway is not None and abs(halfway.done_bytes - 125 * MB) < 1000  # about 1 µs

    w.until_running("web-0")
    events = w.events("web-0")
    took = seconds(one(events, "Pulling").at, one(events, "Pulled").at)
    expected = 250 * MB / 125_000_000 + 3 * UNPACK_S_PER_LAYER
    assert took == pytest.approx(expected, abs=1e-3)
    assert 'Successfully pulled image "registry.local/pull/app:v1" in 2.3s' in (
        one(events, "Pulled").message
    )


def test_layer_cache_makes_the_second_pull_on_a_node_instant() -> None:
    w = World()
    w.create(image="registry.local/team/api:v1")
    w.until_running("web-0")
    w.create(instance_id=1, image="registry.local/team/api:v1")
    w.until_running("web-1")
    events = w.events("web-1")
    assert "Pulling" not in [e.reason for e in events]
    assert "already present on machine" in one(events, "Pulled").message
    # another node has its own cache
    w.create(instance_id=2, image="registry.local/team/api:v1", node="sim-node-1")
    w.until_running("web-2")
    assert "Pulling" in [e.reason for e in w.events("web-2")]


def test_sibling_tags_share_all_but_their_top_layers() -> None:
    sim = World().sim
    for repo in ("nginx", "registry.local:5000/team/ocr", "ubuntu", "a/b/c", "pytorch/serve"):
        v7, v8 = sim.image_layers(f"{repo}:v7"), sim.image_layers(f"{repo}:v8")
        assert 3 <= len(v7) <= 8 and len(v7) == len(v8)
        shared = sum(1 for a, b in zip(v7, v8, strict=True) if a == b)
        assert len(v7) - 2 <= shared <= len(v7) - 1
        assert v7[:shared] == v8[:shared]  # the shared ones are the bottom ones
        assert all(10 * MB <= size <= 300 * MB for _, size in v7)
        assert sim.image_layers(f"{repo}:v7") == v7  # deterministic
    assert split_ref("registry.local:5000/team/ocr:v8") == ("registry.local:5000/team/ocr", "v8")
    assert split_ref("nginx") == ("nginx", "latest")
    assert split_ref("nginx@sha256:abc") == ("nginx", "@sha256:abc")


def test_in_place_upgrade_pulls_only_the_changed_layers() -> None:
    w = World(bandwidth_mbps=1000)
    w.sim.register_image("registry.local/team/ocr:v7", [100 * MB, 150 * MB, 20 * MB])
    w.sim.register_image("registry.local/team/ocr:v8", [100 * MB, 150 * MB, 25 * MB])
    w.create(image="registry.local/team/ocr:v7")
    w.until_running("web-0")
    seq = w.last_seq()
    upgraded = run(
        w.sim.replace_image(
            namespace=NS, name="web-0", image="registry.local/team/ocr:v8", version="v8"
        )
    )
    assert upgraded.phase == InstancePhase.SCHEDULED and not upgraded.ready
    w.step(0.5)
    pull = w.get("web-0").pull
    assert pull is not None and pull.total_bytes == 25 * MB
    w.until(lambda: w.get("web-0").ready)
    events = w.events("web-0", since=seq)
    assert [e.reason for e in events] == ["Killing", "Pulling", "Pulled", "Created", "Started"]
    assert events[0].message == "Container main's hash changed, it will be killed and re-created."
    took = seconds(events[1].at, events[2].at)
    assert took == pytest.approx(25 * MB / 125_000_000 + UNPACK_S_PER_LAYER, abs=1e-3)
    assert (
        w.sim.image_bytes_missing(
            have="registry.local/team/ocr:v7", want="registry.local/team/ocr:v8"
        )
        == 25 * MB
    )


def test_concurrent_pulls_of_one_image_download_each_layer_once() -> None:
    w = World(bandwidth_mbps=1000)
    w.sim.register_image("registry.local/team/big:v1", [200 * MB, 50 * MB])
    w.create(image="registry.local/team/big:v1")
    w.create(instance_id=1, image="registry.local/team/big:v1")
    w.until(lambda: w.get("web-0").ready and w.get("web-1").ready)
    expected = 250 * MB / 125_000_000 + 2 * UNPACK_S_PER_LAYER  # not twice the bytes
    for name in ("web-0", "web-1"):
        events = w.events(name)
        assert seconds(one(events, "Pulling").at, one(events, "Pulled").at) == pytest.approx(
            expected, abs=1e-3
        )


def test_concurrent_pulls_share_the_node_bandwidth() -> None:
    w = World(bandwidth_mbps=1000)
    w.sim.register_image("registry.local/one/a:v1", [100 * MB])
    w.sim.register_image("registry.local/two/b:v1", [100 * MB])
    w.sim.register_image("registry.local/three/c:v1", [300 * MB])
    w.create("a", image="registry.local/one/a:v1")
    w.create("b", image="registry.local/two/b:v1")
    w.create("c", image="registry.local/three/c:v1", node="sim-node-1")  # alone on its node
    w.until(lambda: all(w.get(n).ready for n in ("a-0", "b-0", "c-0")))
    for name, megabytes in (("a-0", 200), ("b-0", 200), ("c-0", 300)):
        events = w.events(name)
        took = seconds(one(events, "Pulling").at, one(events, "Pulled").at)
        assert took == pytest.approx(megabytes * MB / 125_000_000 + UNPACK_S_PER_LAYER, abs=1e-3)


# ---------------------------------------------------------------- pre-pull (prewarm_image)

OCR = "registry.local/team/ocr"


def ocr_world() -> World:
    """Two nodes on 1 Gbit/s; v7 and v8 share 250 MB and differ in a 50 MB top layer."""
    w = World(bandwidth_mbps=1000)
    w.sim.register_image(f"{OCR}:v7", [100 * MB, 150 * MB, 50 * MB])
    w.sim.register_image(f"{OCR}:v8", [100 * MB, 150 * MB, 50 * MB + 1])
    return w


def prewarm(w: World, image: str, *nodes: str, owner: str = "web") -> None:
    run(w.sim.prewarm_image(namespace=NS, owner=owner, image=image, nodes=nodes))


def test_the_sim_is_an_image_prewarmer() -> None:
    assert isinstance(World().sim, ImagePrewarmer)


def test_a_pre_pulled_image_is_already_present_when_the_instance_moves_to_it() -> None:
    w = ocr_world()
    w.create(image=f"{OCR}:v7")
    w.until_running("web-0")
    prewarm(w, f"{OCR}:v8", w.node)
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {w.node: f"{OCR}:v8"}
    # the node hears of the wish a watch later, as of an instance; only the changed top layer
    # then crosses the link: the node's cache is respected
    w.step(WATCH_S - 0.001)
    assert not w.sim.image_present(node=w.node, image=f"{OCR}:v8")
    w.step(0.001 + 50 * MB / 125_000_000 + 0.001)
    assert w.sim.image_present(node=w.node, image=f"{OCR}:v8")
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    seq = w.last_seq()
    run(w.sim.replace_image(namespace=NS, name="web-0", image=f"{OCR}:v8", version="v8"))
    w.until(lambda: w.get("web-0").ready)
    events = w.events("web-0", since=seq)
    assert [e.reason for e in events] == ["Killing", "Pulled", "Created", "Started"]
    assert "already present on machine" in events[1].message
    # the kubelet hears of the change through its watch; then it creates and starts
    assert seconds(events[0].at, events[-1].at) == pytest.approx(
        WATCH_S + CREATE_S + START_S, abs=1e-3
    )


def test_a_node_that_holds_the_image_fetches_nothing() -> None:
    w = ocr_world()
    w.create(image=f"{OCR}:v8")
    w.until_running("web-0")
    prewarm(w, f"{OCR}:v8", w.node, "sim-node-1")
    # the cold node fetches the whole image, the warm one nothing
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {"sim-node-1": f"{OCR}:v8"}
    w.step(WATCH_S + 300 * MB / 125_000_000 - 0.01)
    assert not w.sim.image_present(node="sim-node-1", image=f"{OCR}:v8")
    w.step(0.02)
    assert w.sim.image_present(node="sim-node-1", image=f"{OCR}:v8")


def test_calling_a_pre_pull_off_stops_its_downloads() -> None:
    w = ocr_world()
    prewarm(w, f"{OCR}:v7", w.node, "sim-node-1")
    w.step(0.5)  # a fifth of the way
    prewarm(w, f"{OCR}:v7", "sim-node-1")  # the first node leaves the wish
    w.step(0.5)
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {"sim-node-1": f"{OCR}:v7"}
    prewarm(w, "", "sim-node-1")  # no image: called off everywhere
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    w.step(30)
    for node in (w.node, "sim-node-1"):
        assert not w.sim.image_present(node=node, image=f"{OCR}:v7")
    # a pull started later fetches the whole image: nothing was left half-counted as cached
    w.create(image=f"{OCR}:v7")
    w.until_running("web-0")
    pulling, pulled = one(w.events("web-0"), "Pulling"), one(w.events("web-0"), "Pulled")
    assert seconds(pulling.at, pulled.at) == pytest.approx(
        300 * MB / 125_000_000 + 3 * UNPACK_S_PER_LAYER, abs=1e-3
    )


def test_an_instance_pull_joins_a_pre_pull_in_flight_and_outlives_its_call_off() -> None:
    w = ocr_world()
    prewarm(w, f"{OCR}:v7", w.node)
    w.step(1.0)  # 125 of 300 MB are here
    w.create(image=f"{OCR}:v7")
    w.step(SANDBOX_S)  # the instance's pull begins: it waits for the layers in flight
    prewarm(w, "", w.node)  # called off: the instance still needs every layer
    w.until_running("web-0")
    pulling, pulled = one(w.events("web-0"), "Pulling"), one(w.events("web-0"), "Pulled")
    # the downloads went on where the pre-pull had got to (the unpack of the layers the
    # instance waited for is the instance's own)
    assert seconds(pulling.at, pulled.at) < 300 * MB / 125_000_000 - 0.5


def test_a_pre_pull_skips_lost_nodes_and_refused_images() -> None:
    w = ocr_world()
    w.sim.lose_node("sim-node-1")
    prewarm(w, f"{OCR}:v7", w.node, "sim-node-1", "no-such-node")
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {w.node: f"{OCR}:v7"}
    w.sim.fail_image_pulls(f"{OCR}:v8")
    prewarm(w, f"{OCR}:v8", w.node)
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {}


def test_a_new_instance_waits_for_its_sandbox_and_a_change_only_for_the_watch() -> None:
    w = ocr_world()
    w.create(image=f"{OCR}:v7")
    w.until_running("web-0")
    scheduled, pulling = one(w.events("web-0"), "Scheduled"), one(w.events("web-0"), "Pulling")
    assert seconds(scheduled.at, pulling.at) == pytest.approx(SANDBOX_S, abs=1e-3)
    seq = w.last_seq()
    run(w.sim.replace_image(namespace=NS, name="web-0", image=f"{OCR}:v8", version="v8"))
    w.until(lambda: w.get("web-0").ready)
    killing, pulling = w.events("web-0", since=seq)[:2]
    assert pulling.reason == "Pulling"
    assert seconds(killing.at, pulling.at) == pytest.approx(WATCH_S, abs=1e-3)


# ---------------------------------------------------------------- faults


def test_crash_fails_with_the_exit_code_and_logs_it() -> None:
    w = World()
    w.create()
    w.until_running("web-0")
    w.sim.crash(NS, "web-0", exit_code=3, message="panic: cannot reach the database")
    failed = w.get("web-0")
    assert failed.phase == InstancePhase.FAILED and not failed.ready
    assert failed.last_failure is not None
    assert (failed.last_failure.cause, failed.last_failure.exit_code) == (FailureCause.APP_EXIT, 3)
    crashed = one(w.events("web-0"), "Crashed")
    assert crashed.type == "Warning" and "code 3" in crashed.message
    stderr = [
        ln.text for ln in run(w.sim.logs(namespace=NS, name="web-0")) if ln.stream == "stderr"
    ]
    assert stderr[-2:] == ["panic: cannot reach the database", "exit status 3"]
    with pytest.raises(Conflict):  # a failed container cannot crash again
        w.sim.crash(NS, "web-0")
    # the provider does not restart by itself, not even after a long while
    w.step(600)
    assert w.get("web-0").phase == InstancePhase.FAILED


def test_oom_kill_fails_with_137() -> None:
    w = World()
    w.create()
    w.until_running("web-0")
    w.sim.oom_kill(NS, "web-0")
    failed = w.get("web-0")
    assert failed.last_failure is not None
    assert (failed.last_failure.cause, failed.last_failure.exit_code) == (FailureCause.OOM, 137)
    assert one(w.events("web-0"), "OOMKilled").type == "Warning"
    assert run(w.sim.logs(namespace=NS, name="web-0"))[-1].text == "Killed"


def test_failing_liveness_probe_kills_after_the_threshold() -> None:
    w = World()
    probe = ProbeSpec(path="/healthz", port=8080, period_s=10, failure_threshold=3)
    w.create(liveness=probe)
    w.until_running("web-0")
    w.sim.fail_liveness(NS, "web-0")
    for failures in (1, 2):
        w.step(10)
        unhealthy = [e for e in w.events("web-0") if e.reason == "Unhealthy"]
        assert len(unhealthy) == failures
        assert w.get("web-0").phase == InstancePhase.RUNNING
    assert unhealthy[0].type == "Warning"
    assert unhealthy[0].message.startswith('Liveness probe failed: Get "http://')
    w.step(10)
    failed = w.get("web-0")
    assert failed.phase == InstancePhase.FAILED
    assert failed.last_failure is not None and failed.last_failure.cause == FailureCause.LIVENESS
    assert "failed liveness probe" in w.events("web-0")[-1].message

    # a restarted container is healthy again
    run(w.sim.restart_instance(namespace=NS, name="web-0"))
    w.until_running("web-0")
    w.step(60)
    assert w.get("web-0").phase == InstancePhase.RUNNING

    w.create(instance_id=1)
    w.until_running("web-1")
    with pytest.raises(InvalidRequest, match="no liveness probe"):
        w.sim.fail_liveness(NS, "web-1")


def test_image_pull_failure_and_retry_after_it_clears() -> None:
    w = World()
    image = "registry.local/team/web:v9"
    w.sim.fail_image_pulls(image, message="manifest unknown")
    w.create(image=image)
    w.until(lambda: w.get("web-0").phase == InstancePhase.FAILED)
    failed = w.get("web-0")
    assert failed.last_failure is not None
    assert failed.last_failure.cause == FailureCause.IMAGE_PULL
    warnings = [e.message for e in w.events("web-0") if e.type == "Warning"]
    assert any("manifest unknown" in m for m in warnings)
    assert "Error: ErrImagePull" in warnings

    w.sim.clear_image_failure(image)
    seq = w.last_seq()
    run(w.sim.restart_instance(namespace=NS, name="web-0"))
    w.until_running("web-0")
    assert w.get("web-0").restarts == 1
    assert "Pulling" in [e.reason for e in w.events("web-0", since=seq)]


def test_the_platform_registry_refuses_another_business_s_private_image() -> None:
    """With the platform's pull secret, the sim's pulls from the platform registry follow the
    registry's own rules (gaia.domain.registry): its business's and public images pull,
    another business's do not."""
    w = World()
    pull = PullSecret("registry.gaia:5000", f"pull+{NS}", "secret")
    w.create(image=f"registry.gaia:5000/{NS}/web:v1", pull_secret=pull)
    w.create(instance_id=1, image="registry.gaia:5000/public/base@sha256:" + "a" * 64,
             pull_secret=pull)  # fmt: skip
    w.create(instance_id=2, image="registry.gaia:5000/other/web:v1", pull_secret=pull)
    w.create(instance_id=3, image="elsewhere.io/other/web:v1", pull_secret=pull)
    w.until_running("web-0")
    w.until_running("web-1")
    w.until_running("web-3")  # not the platform's registry: not its rules
    w.until(lambda: w.get("web-2").phase == InstancePhase.FAILED)
    failure = w.get("web-2").last_failure
    assert failure is not None and failure.cause == FailureCause.IMAGE_PULL
    assert "insufficient_scope" in failure.message


def test_lost_node_fails_every_instance_on_it() -> None:
    w = World()
    w.create()
    w.create(instance_id=1)
    w.create(instance_id=2, node="sim-node-1")
    w.until(lambda: all(w.get(f"web-{i}").ready for i in range(3)))
    w.sim.lose_node("sim-node-0")
    for name in ("web-0", "web-1"):
        inst = w.get(name)
        assert inst.phase == InstancePhase.FAILED and not inst.ready
        assert inst.last_failure is not None
        assert inst.last_failure.cause == FailureCause.NODE_LOST
    assert w.get("web-2").phase == InstancePhase.RUNNING
    nodes = {n.name: n for n in run(w.sim.list_nodes())}
    assert not nodes["sim-node-0"].ready
    assert nodes["sim-node-0"].allocated.cpu == 2000  # held until the platform deletes them
    assert one(w.events("sim-node-0"), "NodeNotReady").type == "Warning"
    with pytest.raises(Conflict):
        run(w.sim.restart_instance(namespace=NS, name="web-0"))

    w.sim.restore_node("sim-node-0")
    assert run(w.sim.list_nodes())[0].ready
    assert "NodeReady" in [e.reason for e in w.events("sim-node-0")]
    assert w.get("web-0").phase == InstancePhase.FAILED


def test_restart_after_a_node_lost_mid_pull_pulls_the_image_again() -> None:
    w = World(bandwidth_mbps=1000)
    w.sim.register_image("registry.local/team/slow:v1", [500 * MB])  # 4 s to fetch
    w.create(image="registry.local/team/slow:v1")
    w.step(2.5)
    assert w.get("web-0").phase == InstancePhase.PULLING
    w.sim.lose_node("sim-node-0")
    w.sim.restore_node("sim-node-0")
    seq = w.last_seq()
    run(w.sim.restart_instance(namespace=NS, name="web-0"))
    w.until_running("web-0")
    events = w.events("web-0", since=seq)
    assert [e.reason for e in events] == ["Pulling", "Pulled", "Created", "Started"]
    took = seconds(events[0].at, events[1].at)  # the partial download was lost with the node
    assert took == pytest.approx(4 + UNPACK_S_PER_LAYER, abs=1e-3)


def test_faults_need_a_running_instance_that_exists() -> None:
    w = World()
    w.create()
    with pytest.raises(Conflict):
        w.sim.oom_kill(NS, "web-0")  # still scheduled
    with pytest.raises(NotFound):
        w.sim.crash(NS, "web-7")
    with pytest.raises(NotFound):
        w.sim.lose_node("sim-node-9")
    with pytest.raises(InvalidRequest):
        w.sim.crash(NS, "web-0", exit_code=0)


def test_inject_dispatches_each_kind() -> None:
    w = World()
    w.create()
    w.create(instance_id=1)
    w.until(lambda: w.get("web-0").ready and w.get("web-1").ready)
    w.sim.inject({"kind": "crash", "namespace": NS, "instance": "web-0", "exit_code": 42})
    failure = w.get("web-0").last_failure
    assert failure is not None and failure.exit_code == 42
    w.sim.inject({"kind": "oom", "namespace": NS, "instance": "web-1"})
    failure = w.get("web-1").last_failure
    assert failure is not None and failure.cause == FailureCause.OOM
    w.sim.inject({"kind": "image_pull", "image": "x:1"})
    w.sim.inject({"kind": "clear_image_pull", "image": "x:1"})
    w.sim.inject({"kind": "node_lost", "node": "sim-node-1"})
    assert not run(w.sim.list_nodes())[1].ready
    w.sim.inject({"kind": "node_restored", "node": "sim-node-1"})
    assert run(w.sim.list_nodes())[1].ready


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("crash", "object"),
        ({}, "fault.kind is required"),
        ({"kind": "explode"}, "fault.kind must be one of"),
        ({"kind": 3}, "fault.kind must be one of"),
        ({"kind": "crash", "namespace": NS}, "fault.instance is required"),
        ({"kind": "crash", "instance": "web-0"}, "fault.namespace is required"),
        ({"kind": "crash", "namespace": NS, "instance": ""}, "fault.instance must be"),
        ({"kind": "crash", "namespace": NS, "instance": 7}, "fault.instance must be"),
        ({"kind": "crash", "namespace": NS, "instance": "w", "exit_code": 0}, "fault.exit_code"),
        ({"kind": "crash", "namespace": NS, "instance": "w", "exit_code": "1"}, "fault.exit_code"),
        ({"kind": "crash", "namespace": NS, "instance": "w", "exit_code": True}, "fault.exit_code"),
        ({"kind": "oom", "namespace": NS, "instance": "w", "exit_code": 1}, "exit_code do not"),
        ({"kind": "image_pull"}, "fault.image is required"),
        ({"kind": "image_pull", "image": "x", "message": 5}, "fault.message"),
        ({"kind": "node_lost", "instance": "w"}, "instance do not apply"),
        ({"kind": "node_restored"}, "fault.node is required"),
    ],
)
def test_inject_rejects_bad_faults_naming_the_field(fault: Any, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        World().sim.inject(fault)


# ---------------------------------------------------------------- lifecycle details


def test_nothing_moves_until_the_clock_steps() -> None:
    w = World()
    w.create()
    for _ in range(5):
        w.sim.advance()
        assert w.get("web-0").phase == InstancePhase.SCHEDULED
    assert [e.reason for e in w.events()] == ["Scheduled"]
    w.step(0.5)
    assert w.get("web-0").phase == InstancePhase.PULLING


def test_readiness_waits_for_the_probe_initial_delay() -> None:
    w = World()
    w.create(readiness=ProbeSpec(initial_delay_s=30))
    running = w.until_running("web-0")
    assert not running.ready
    assert running.started_at is not None
    w.step(29)
    assert not w.get("web-0").ready
    w.step(1.5)
    assert w.get("web-0").ready


def test_restart_of_a_running_instance_kills_and_starts_it_in_place() -> None:
    w = World()
    w.create()
    first = w.until_running("web-0")
    seq = w.last_seq()
    restarted = run(w.sim.restart_instance(namespace=NS, name="web-0"))
    assert restarted.restarts == 1 and not restarted.ready
    with pytest.raises(Conflict):  # it is starting already
        run(w.sim.restart_instance(namespace=NS, name="web-0"))
    again = w.until_running("web-0")
    assert [e.reason for e in w.events("web-0", since=seq)] == ["Killing", "Created", "Started"]
    assert again.pod_ip == first.pod_ip and again.started_at != first.started_at


def test_shape_ignores_image_and_version_only() -> None:
    w = World()
    a = w.create(env={"A": "1"})
    b = w.create("api", env={"A": "1"}, image="other/image:v3")
    c = w.create("api", 1, env={"A": "2"})
    assert a.shape == b.shape != c.shape
    upgraded = run(w.sim.replace_image(namespace=NS, name="web-0", image="x:2", version="v2"))
    assert upgraded.shape == a.shape


def test_replace_image_moves_the_version_label() -> None:
    w = World()
    w.create(labels={"gaia.io/version": "v1", "team": "ocr"})
    run(w.sim.replace_image(namespace=NS, name="web-0", image="x:2", version="v2"))
    assert w.get("web-0").labels == {"gaia.io/version": "v2", "team": "ocr"}


def test_failed_instance_holds_its_resources_until_deleted() -> None:
    w = World()
    w.create(resources=ResourceVector(cpu=2000, memory=1024, gpu=100), gpu_ids=(2,))
    w.until_running("web-0")
    w.sim.crash(NS, "web-0")
    node = run(w.sim.list_nodes())[0]
    assert node.allocated.cpu == 2000 and node.gpu_used[2] == 100
    run(w.sim.delete_instance(namespace=NS, name="web-0"))
    node = run(w.sim.list_nodes())[0]
    assert node.allocated.is_zero() and node.gpu_used[2] == 0
    assert w.events("web-0")[-1].reason == "Killing"


def test_cut_off_cluster_is_unreachable() -> None:
    w = World()
    w.sim.reachable = False
    health = run(w.sim.check_health(timeout=1))
    assert health.state == HealthState.UNREACHABLE
    assert health.message == "simulated cluster is cut off"
    with pytest.raises(ConnectionError):
        run(w.sim.list_nodes())
    with pytest.raises(ConnectionError):
        run(w.sim.events())
    w.sim.reachable = True
    assert run(w.sim.check_health(timeout=1)).message == "2 simulated nodes"


# ---------------------------------------------------------------- metrics and logs


def test_metrics_are_deterministic_and_stay_within_the_request() -> None:
    request = ResourceVector(cpu=2000, memory=4096, bandwidth=8, gpu=100, gpu_memory=8192)

    def samples() -> list[tuple[float, ...]]:
        w = World()
        for i, profile in enumerate(("web", "batch", "gpu-inference", "idle")):
            w.create(
                profile,
                resources=request,
                gpu_ids=(i,),
                annotations={"sim.gaia.io/profile": profile},
            )
        w.until(lambda: all(i.ready for i in run(w.sim.list_instances())))
        out = []
        for _ in range(150):
            w.step(37)
            for s in run(w.sim.metrics(namespace=NS)):
                out.append(
                    (
                        s.cpu_milli,
                        s.memory_mib,
                        s.network_rx_bytes_total,
                        s.network_tx_bytes_total,
                        s.gpu_util,
                        s.gpu_memory_mib,
                    )
                )
        return out

    first, second = samples(), samples()
    assert first == second
    per_instance = [first[i::4] for i in range(4)]
    for series in per_instance:
        for prev, cur in itertools.pairwise(series):
            assert cur[2] >= prev[2] and cur[3] >= prev[3]  # counters only increase
            assert (cur[3] - prev[3]) / 37 <= 8 * 125_000  # egress within 8 Mbit/s
        for cpu, memory, _, _, gpu_util, gpu_memory in series:
            assert 0 < cpu <= 2000 and 0 < memory <= 4096
            assert 0 <= gpu_util <= 1 and 0 <= gpu_memory <= 8192
    mean_cpu = [sum(s[0] for s in series) / len(series) for series in per_instance]
    web, batch, inference, idle = mean_cpu
    assert batch > web > idle and inference > idle
    assert max(s[4] for s in per_instance[3]) == 0  # idle leaves its GPU alone


def test_metrics_cover_running_instances_and_nodes() -> None:
    w = World()
    w.create()
    w.create(instance_id=1)
    w.create(instance_id=2)  # stays unstarted: metrics only for running instances
    w.until(lambda: w.get("web-1").ready)
    w.sim.crash(NS, "web-1")
    everything = run(w.sim.metrics())
    assert [(s.kind, s.target) for s in everything] == [
        ("instance", "web-0"),
        ("instance", "web-2"),
        ("node", "sim-node-0"),
        ("node", "sim-node-1"),
    ]
    node0 = everything[2]
    assert node0.cpu_milli > everything[0].cpu_milli + everything[1].cpu_milli  # + overhead
    assert [s.target for s in run(w.sim.metrics(names=["web-2", "nope"]))] == ["web-2"]
    assert run(w.sim.metrics(namespace="other")) == []
    with pytest.raises(InvalidRequest, match="profile"):
        w.create("odd", annotations={"sim.gaia.io/profile": "quantum"})


def test_logs_are_bounded_and_generated_for_the_elapsed_time() -> None:
    w = World()
    w.create(annotations={"sim.gaia.io/profile": "batch"})
    started = w.until_running("web-0").started_at
    assert started is not None
    lines = run(w.sim.logs(namespace=NS, name="web-0"))
    assert lines[0].text == "starting web v1 (image registry.local/team/web:v1)"
    w.step(7 * 24 * 3600)  # a week
    tail = run(w.sim.logs(namespace=NS, name="web-0", tail=100))
    assert len(tail) == 100
    assert all(line.text.startswith("processed batch") for line in tail)
    assert [ln.at for ln in tail] == sorted(ln.at for ln in tail)
    since = w.clock.now() - dt.timedelta(minutes=1)
    recent = run(w.sim.logs(namespace=NS, name="web-0", tail=1000, since=since))
    assert 3 <= len(recent) <= 9 and all(ln.at >= since for ln in recent)
    assert run(w.sim.logs(namespace=NS, name="web-0", tail=100)) == tail  # deterministic
    huge = run(w.sim.logs(namespace=NS, name="web-0", tail=10**9))
    assert len(huge) == 10_000
    with pytest.raises(NotFound):
        run(w.sim.logs(namespace=NS, name="nope"))


# ---------------------------------------------------------------- exec


def test_exec_shell_over_the_instance() -> None:
    w = World()
    run(w.sim.apply_config(ConfigData(NS, "tls", True, {"tls.crt": "CERT"})))
    w.create(
        resources=ResourceVector(cpu=1000, memory=1024, gpu=200),
        gpu_ids=(1, 3),
        env={"MODE": "prod"},
        command=("/bin/server",),
        args=("--port", "8080"),
        configs=(ConfigRef("tls", secret=True, mount_path="/etc/tls/"),),
    )
    w.until_running("web-0")

    def sh(*argv: str) -> tuple[int, str, str]:
        r = run(w.sim.exec(namespace=NS, name="web-0", command=list(argv)))
        return r.exit_code, r.stdout, r.stderr

    assert sh("sh", "-c", "echo $HOSTNAME ${MODE}") == (0, "web-0 prod\n", "")
    assert sh("cat", "/etc/tls/tls.crt") == (0, "CERT", "")
    assert sh("ls", "/etc/tls") == (0, "tls.crt\n", "")
    assert sh("cat", "/etc/nope")[0] == 1
    smi = sh("nvidia-smi", "-L")[1].splitlines()
    assert [line.split(":")[0] for line in smi] == ["GPU 1", "GPU 3"]
    assert "Tesla P40" in smi[0]
    assert "/bin/server --port 8080" in sh("ps")[1]
    assert sh("sh", "-c", "false || echo fallback") == (0, "fallback\n", "")
    code, _, err = sh("sh", "-c", "kubectl get pods")
    assert code == 127 and "command not found" in err
    code, _, err = sh("vim")
    assert code == 127 and "command not found" in err

    w.sim.crash(NS, "web-0")
    with pytest.raises(Conflict):
        run(w.sim.exec(namespace=NS, name="web-0", command=["hostname"]))


# ---------------------------------------------------------------- nodes and topology


def test_pcie_two_socket_matrix_for_eight_cards() -> None:
    m = pcie_two_socket(8)
    assert all(m[i][i] == "X" for i in range(8))
    assert all(m[a][b] == m[b][a] for a in range(8) for b in range(8))
    assert (m[0][1], m[2][3], m[4][5], m[6][7]) == ("PIX",) * 4
    assert (m[0][2], m[1][3], m[5][7]) == ("PXB",) * 3
    assert {m[a][b] for a in range(4) for b in range(4, 8)} == {"SOC"}
    assert numa_nodes(m) == (0, 0, 0, 0, 1, 1, 1, 1)
    sixteen = pcie_two_socket(16)
    assert sixteen[0][4] == "PHB" and sixteen[0][8] == "SOC"
    assert {c for row in nvlink(4) for c in row} == {"X", "NV"}
    assert pcie_two_socket(0) == ()


def test_nodes_follow_the_sim_spec() -> None:
    w = World(
        cpu=48,
        memory_mib=96 * 1024,
        gpus=8,
        gpu_model="Tesla V100",
        gpu_memory_mib=16384,
        gpu_topology="nvlink",
        local_disk_gib=800,
        bandwidth_mbps=25_000,
        labels={"rack": "r7"},
    )
    node = run(w.sim.list_nodes())[0]
    assert node.name == "sim-node-0" and node.zone == "zone-a"
    assert node.capacity == ResourceVector(
        cpu=48_000,
        memory=96 * 1024,
        local_disk=800,
        bandwidth=25_000,
        gpu=800,
        gpu_memory=8 * 16384,
    )
    assert node.labels["rack"] == "r7"
    assert node.labels["topology.kubernetes.io/zone"] == "zone-a"
    assert node.labels["gaia.io/gpu-model"] == "Tesla V100"
    assert node.gpu_links[0][1] == "NV"
    assert {g.model for g in node.gpus} == {"Tesla V100"}
    assert node.gpu_used == dict.fromkeys(range(8), 0)
    assert run(w.sim.list_nodes())[1].host_ip != node.host_ip

    explicit = [["X", "NV2", "NODE"], ["NV2", "X", "SYS"], ["NODE", "SYS", "X"]]
    node = run(World(gpus=3, gpu_topology=explicit, zone="z9").sim.list_nodes())[0]
    # the NVLink count is kept (more links are cheaper to the scheduler); SYS is spelt SOC
    assert node.gpu_links == (("X", "NV2", "NODE"), ("NV2", "X", "SOC"), ("NODE", "SOC", "X"))
    assert node.zone == "z9"
    cpu_only = run(World(gpus=0).sim.list_nodes())[0]
    assert cpu_only.gpus == () and "gaia.io/gpu-model" not in cpu_only.labels


def test_add_node_validates_and_derives_a_pcie_tree() -> None:
    w = World()
    added = run(w.sim.add_node(NodeSpec(name="gpu-big", cpu_milli=96_000, memory_mib=1, gpus=8)))
    assert added.gpu_links == pcie_two_socket(8)
    assert [g.numa_node for g in added.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert added.zone == "zone-a" and added.capacity.gpu_memory == 8 * 24576
    assert [e.reason for e in w.events("gpu-big")] == ["RegisteredNode", "NodeReady"]
    bad = [
        NodeSpec(name="Bad_Name", cpu_milli=1, memory_mib=1),
        NodeSpec(name="n", cpu_milli=-1, memory_mib=1),
        NodeSpec(name="n", cpu_milli=1, memory_mib=1, gpus=99),
        NodeSpec(name="n", cpu_milli=1, memory_mib=1, bandwidth_mbps=0),
        NodeSpec(name="n", cpu_milli=1, memory_mib=1, gpus=2, gpu_links=(("X", "PIX"),)),
        NodeSpec(
            name="n", cpu_milli=1, memory_mib=1, gpus=2, gpu_links=(("X", "PIX"), ("PXB", "X"))
        ),
    ]
    for spec in bad:
        with pytest.raises(InvalidRequest):
            run(w.sim.add_node(spec))
    with pytest.raises(Conflict):
        run(w.sim.add_node(NodeSpec(name="gpu-big", cpu_milli=1, memory_mib=1)))


def test_pod_ips_come_from_the_node_range_and_are_reused() -> None:
    w = World(cpu=1024, memory_mib=1024 * 1024)
    tiny = ResourceVector(cpu=1, memory=1)
    ips = [w.create(instance_id=i, resources=tiny).pod_ip for i in range(253)]
    assert len(set(ips)) == 253
    assert all(ip.startswith("10.128.0.") for ip in ips)
    with pytest.raises(InvalidRequest, match="no free pod IP"):
        w.create(instance_id=300, resources=tiny)
    run(w.sim.delete_instance(namespace=NS, name="web-17"))
    assert w.create(instance_id=300, resources=tiny).pod_ip == ips[17]
    other = w.create(instance_id=400, node="sim-node-1", resources=tiny)
    assert other.pod_ip.startswith("10.128.1.")
    host = w.create("hostnet", node="sim-node-1", network_mode=NetworkMode.HOST, resources=tiny)
    assert host.pod_ip == host.host_ip


def test_services_get_stable_addresses_from_the_service_range() -> None:
    sim = World().sim
    a = run(sim.apply_service(ServiceSpec(NS, "a", "a")))
    b = run(sim.apply_service(ServiceSpec(NS, "b", "b", domain="b.example")))
    assert a.cluster_ip.startswith("10.96.") and a.cluster_ip != b.cluster_ip
    assert run(sim.apply_service(ServiceSpec(NS, "a", "a2"))).cluster_ip == a.cluster_ip
    assert run(sim.get_service(namespace=NS, name="b")).domain == "b.example"
    with pytest.raises(InvalidRequest):
        run(sim.apply_service(ServiceSpec(NS, "", "a")))


def test_event_ring_keeps_the_newest() -> None:
    ring = EventRing(capacity=10)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(25):
        ring.emit(at=at, namespace="", kind="Node", name=f"n{i}", reason="R", message="m")
    kept = ring.since(0, 100)
    assert 10 <= len(kept) <= 11 and kept[-1].seq == 25
    assert [e.seq for e in ring.since(22, 100)] == [23, 24, 25]
    assert [e.seq for e in ring.since(20, 2)] == [21, 22]


# ---------------------------------------------------------------- sim_spec


def test_validate_sim_spec_fills_defaults_and_is_idempotent() -> None:
    spec = validate_sim_spec({"nodes": 4, "gpus": 8})
    assert spec == {**DEFAULT_SPEC, "nodes": 4, "gpus": 8}
    assert validate_sim_spec(spec) == spec
    no_gpus = validate_sim_spec({"gpus": 0})
    assert no_gpus["gpu_model"] == "" and validate_sim_spec(no_gpus) == no_gpus
    matrix = validate_sim_spec({"gpus": 2, "gpu_topology": [["X", "SYS"], ["SYS", "X"]]})
    assert matrix["gpu_topology"] == [["X", "SOC"], ["SOC", "X"]]
    assert validate_sim_spec(matrix) == matrix


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"colour": "red"}, "unknown sim_spec field"),
        ({"nodes": MAX_SIM_NODES + 1}, "sim_spec.nodes"),
        ({"nodes": True}, "sim_spec.nodes"),
        ({"cpu": "32"}, "sim_spec.cpu"),
        ({"gpus": 17}, "sim_spec.gpus"),
        ({"bandwidth_mbps": 0}, "sim_spec.bandwidth_mbps"),
        ({"local_disk_gib": -1}, "sim_spec.local_disk_gib"),
        ({"gpu_memory_mib": 1.5}, "sim_spec.gpu_memory_mib"),
        ({"zone": 5}, "sim_spec.zone"),
        ({"gpu_model": ["P40"]}, "sim_spec.gpu_model"),
        ({"gpu_topology": "ring"}, "sim_spec.gpu_topology"),
        ({"gpus": 2, "gpu_topology": [["X", "PIX"]]}, "sim_spec.gpu_topology"),
        ({"gpus": 2, "gpu_topology": [["X", "PIX"], ["PIX", "PIX"]]}, "diagonal"),
        ({"gpus": 2, "gpu_topology": [["X", "PIX"], ["SOC", "X"]]}, "symmetric"),
        ({"gpus": 2, "gpu_topology": [["X", "QPI"], ["QPI", "X"]]}, r"sim_spec.gpu_topology\[0\]"),
        ({"gpus": 2, "gpu_topology": [["X", "NV19"], ["NV19", "X"]]}, "NV1..NV18"),
        ({"labels": {"rack": 7}}, "sim_spec.labels.rack"),
        ({"labels": ["rack"]}, "sim_spec.labels"),
    ],
)
def test_validate_sim_spec_names_the_bad_field(spec: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        validate_sim_spec(spec)


# ---------------------------------------------------------------- threads and scale


def test_two_threads_can_drive_one_cluster() -> None:
    w = World(cpu=1024, memory_mib=1024 * 1024)
    errors: list[BaseException] = []

    def worker(app: str) -> None:
        try:
            for i in range(150):
                w.create(
                    app, i, node=f"sim-node-{i % 2}", resources=ResourceVector(cpu=10, memory=10)
                )
                if i % 10 == 0:
                    w.step(0.3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(app,)) for app in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    instances = run(w.sim.list_instances(namespace=NS))
    assert len(instances) == 300
    assert len({i.pod_ip for i in instances}) == 300
    nodes = run(w.sim.list_nodes())
    assert sum(n.allocated.cpu for n in nodes) == 3000
    assert sum(n.instance_count for n in nodes) == 300


SCALE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, time
    from gaia.clock import ManualClock
    from gaia.domain.resources import ResourceVector
    from gaia.providers.port import InstancePhase, InstanceSpec, PortSpec, ProbeSpec
    from gaia.providers.sim import SimCluster

    PROFILES = ("web", "batch", "gpu-inference", "idle")

    async def main():
        began = time.perf_counter()
        clock = ManualClock()
        sim = SimCluster(
            name="big",
            spec={"nodes": 2000, "cpu": 64, "memory_mib": 256 * 1024, "gpus": 8},
            clock=clock,
        )
        nodes = await sim.list_nodes()
        for i in range(20_000):
            slot = i // 2000  # the i-th instance on its node
            gpu = slot < 8
            app = f"app{i % 20}"
            await sim.create_instance(InstanceSpec(
                namespace=f"biz{i % 4}", app=app, instance_id=i // 20, version="v1",
                image=f"registry.local/team/{app}:v1", node=nodes[i % 2000].name,
                resources=ResourceVector(
                    cpu=2000, memory=4096, gpu=100 if gpu else 0, gpu_memory=24576 if gpu else 0
                ),
                gpu_ids=(slot,) if gpu else (), env={"APP": app}, ports=(PortSpec(8080),),
                readiness=ProbeSpec(initial_delay_s=5), liveness=ProbeSpec(),
                labels={"gaia.io/app": app, "gaia.io/version": "v1"},
                annotations={"sim.gaia.io/profile": PROFILES[i % 4]},
            ))
        for _ in range(12):
            clock.step(5)
            sim.advance()
        everything = await sim.list_instances()
        indexed = time.perf_counter()
        one_app = await sim.list_instances(namespace="biz1", app="app1")
        indexed = time.perf_counter() - indexed
        samples = await sim.metrics()
        logs = await sim.logs(namespace="biz1", name="app1-0", tail=100)
        nodes = await sim.list_nodes()
        print(json.dumps({
            "instances": len(everything),
            "ready": sum(1 for i in everything if i.phase == InstancePhase.RUNNING and i.ready),
            "one_app": len(one_app),
            "indexed_s": indexed,
            "samples": len(samples),
            "logs": len(logs),
            "gpus_used": sum(sum(n.gpu_used.values()) for n in nodes),
            # VmHWM: this program's own peak. ru_maxrss is not: Linux carries it over exec,
            # so a child forked from a big pytest process starts at the parent's size
            "maxrss_kib": next(
                int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:")
            ),
            "seconds": time.perf_counter() - began,
        }))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_two_thousand_nodes_and_twenty_thousand_instances_fit_in_two_gib() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCALE_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["instances"] == result["ready"] == 20_000
    assert result["one_app"] == 1000
    assert result["samples"] == 20_000 + 2000
    assert result["logs"] > 0
    assert result["gpus_used"] == 16_000 * 100  # 16,000 one-card instances, in hundredths
    assert result["maxrss_kib"] < 2 * 1024 * 1024, result


# ---------------------------------------------------------------- load overrides (alert drills)


def cpu_and_memory(w: World) -> dict[str, tuple[float, float]]:
    return {s.target: (s.cpu_milli, s.memory_mib) for s in run(w.sim.metrics(namespace=NS))}


def test_load_override_drives_an_apps_cpu_and_memory_until_cleared() -> None:
    w = World()
    request = ResourceVector(cpu=2000, memory=4096)
    w.create(resources=request)
    w.create("batch", resources=request)
    w.until(lambda: w.get("web-0").ready and w.get("batch-0").ready)
    w.step(600)
    profile = cpu_and_memory(w)

    w.sim.set_load(NS, "web", cpu_percent=95)
    loaded = cpu_and_memory(w)
    assert 94 <= 100 * loaded["web-0"][0] / 2000 <= 96
    assert loaded["web-0"][1] == profile["web-0"][1]  # memory still follows the profile
    assert loaded["batch-0"] == profile["batch-0"]  # another app is left alone
    # instances started later get it too, and so does the node they are on
    w.create(instance_id=1, resources=request)
    w.until(lambda: w.get("web-1").phase == InstancePhase.RUNNING)
    for _ in range(20):  # jitter changes every 15 s and stays within a point
        w.step(15)
        for name in ("web-0", "web-1"):
            assert 94 <= 100 * cpu_and_memory(w)[name][0] / 2000 <= 96

    w.sim.set_load(NS, "web", cpu_percent=100, memory_percent=0)  # replaces the override
    clamped = cpu_and_memory(w)
    assert 99 <= 100 * clamped["web-0"][0] / 2000 <= 100
    assert 0 <= 100 * clamped["web-0"][1] / 4096 <= 1

    before = cpu_and_memory(w)
    w.sim.clear_load(NS, "web")
    w.sim.clear_load(NS, "web")  # nothing to clear: nothing happens
    after = cpu_and_memory(w)
    assert after["web-0"] != before["web-0"]
    assert 100 * after["web-0"][0] / 2000 < 90  # the web profile idles far below
    w2 = World()  # the same instance with no override ever set: the same figures
    w2.create(resources=request)
    w2.create("batch", resources=request)
    w2.until(lambda: w2.get("web-0").ready and w2.get("batch-0").ready)
    w2.clock.step((w.clock.now() - w2.clock.now()).total_seconds())
    assert cpu_and_memory(w2)["web-0"] == after["web-0"]


def test_load_override_of_an_app_without_a_cpu_request_uses_the_nominal_amount() -> None:
    w = World()
    w.create(resources=ResourceVector(memory=256))
    w.until(lambda: w.get("web-0").ready)
    w.sim.inject({"kind": "load", "namespace": NS, "app": "web", "cpu_percent": 50})
    assert 49 <= cpu_and_memory(w)["web-0"][0] <= 51  # of the nominal 100 millicores
    w.sim.inject({"kind": "clear_load", "namespace": NS, "app": "web"})
    assert cpu_and_memory(w)["web-0"][0] < 49


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ({"kind": "load", "namespace": NS}, "fault.app is required"),
        ({"kind": "load", "app": "web", "cpu_percent": 5}, "fault.namespace is required"),
        ({"kind": "load", "namespace": NS, "app": "web"}, "needs cpu_percent, memory_percent"),
        ({"kind": "load", "namespace": NS, "app": "web", "cpu_percent": 101}, "from 0 to 100"),
        ({"kind": "load", "namespace": NS, "app": "web", "cpu_percent": -1}, "from 0 to 100"),
        ({"kind": "load", "namespace": NS, "app": "web", "cpu_percent": "95"}, "a number"),
        ({"kind": "load", "namespace": NS, "app": "web", "memory_percent": True}, "a number"),
        ({"kind": "load", "namespace": NS, "app": "web", "node": "n"}, "node do not apply"),
        ({"kind": "clear_load", "namespace": NS, "app": "web", "cpu_percent": 5}, "do not apply"),
        ({"kind": "clear_load", "namespace": NS}, "fault.app is required"),
    ],
)
def test_load_faults_are_validated_naming_the_field(fault: Any, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        World().sim.inject(fault)


# ---------------------------------------------------------------- control plane (simulated)


def test_control_plane_figures_follow_the_clusters_objects_and_calls() -> None:
    w = World()

    def figures() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for s in run(w.sim.control_plane_metrics())
        }

    empty = figures()
    assert empty[("gaia_etcd_up", ())] == 1.0
    assert empty[("gaia_etcd_objects", (("resource", "nodes"),))] == 2
    assert empty[("gaia_etcd_objects", (("resource", "pods"),))] == 0
    w.create()
    w.create(instance_id=1)
    run(w.sim.apply_config(ConfigData(NS, "settings", False, {"a": "b"})))
    w.step(60)
    busy = figures()
    assert busy[("gaia_etcd_objects", (("resource", "pods"),))] == 2
    assert busy[("gaia_etcd_objects", (("resource", "configmaps"),))] == 1 + 1 + 4
    assert busy[("gaia_etcd_db_size_bytes", ())] > empty[("gaia_etcd_db_size_bytes", ())]
    requests = ("gaia_apiserver_requests_total", ())
    assert busy[requests] > empty[requests] + 2 * 0.2 * 60  # the nodes' own updates, and ours
    assert 0.001 < busy[("gaia_etcd_request_latency_seconds", ())] < 0.01
    assert busy[("gaia_apiserver_errors_total", ())] == 0.0
    w.sim.reachable = False
    with pytest.raises(ConnectionError):
        run(w.sim.control_plane_metrics())


def test_a_pre_pull_called_off_before_its_node_heard_of_it_fetches_nothing() -> None:
    w = ocr_world()
    prewarm(w, f"{OCR}:v7", w.node)
    # told, not begun: the node hears of it a watch later
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {w.node: f"{OCR}:v7"}
    w.step(WATCH_S / 2)
    prewarm(w, "", w.node)
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    w.step(30)
    assert not w.sim.image_present(node=w.node, image=f"{OCR}:v7")


def test_a_wish_sent_again_keeps_the_turn_of_the_nodes_already_told() -> None:
    # the app controller sends a growing wish pass by pass while an app comes up: a node told
    # at the first call begins a watch after it, not a watch after the latest call
    w = ocr_world()
    prewarm(w, f"{OCR}:v7", w.node)
    w.step(WATCH_S / 2)
    prewarm(w, f"{OCR}:v7", w.node, "sim-node-1")
    w.step(WATCH_S / 2 + 300 * MB / 125_000_000 + 0.001)
    assert w.sim.image_present(node=w.node, image=f"{OCR}:v7")
    assert not w.sim.image_present(node="sim-node-1", image=f"{OCR}:v7")  # told later
    w.step(WATCH_S / 2)
    assert w.sim.image_present(node="sim-node-1", image=f"{OCR}:v7")
    assert w.sim.prewarms_in_flight(namespace=NS, owner="web") == {}
