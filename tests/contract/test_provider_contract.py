"""The ClusterProvider contract: what every adapter (``sim``, later ``kubernetes``) must do.

Written against ``gaia.providers.port`` only, through the harness of ``conftest.py``. A test
that needs fault injection is marked ``sim_only``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.resources import ResourceVector
from gaia.providers.port import (
    ClusterEvent,
    ClusterHealth,
    ClusterProvider,
    ConfigData,
    ConfigRef,
    FailureCause,
    GpuLink,
    HealthState,
    Instance,
    InstancePhase,
    InstanceSpec,
    InstanceState,
    Node,
    NodeSpec,
    PortSpec,
    ProbeSpec,
    ServiceSpec,
)
from tests.contract.conftest import Harness, contract

SMALL = ResourceVector(cpu=500, memory=512)
LIFECYCLE = ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


# ---------------------------------------------------------------- helpers


def spec_for(
    h: Harness,
    node: str,
    *,
    app: str = "web",
    instance_id: int = 0,
    resources: ResourceVector = SMALL,
    gpu_ids: tuple[int, ...] = (),
    image: str | None = None,
    **extra: object,
) -> InstanceSpec:
    return InstanceSpec(
        namespace=h.namespace,
        app=app,
        instance_id=instance_id,
        version="v1",
        image=image or h.images[0],
        node=node,
        resources=resources,
        gpu_ids=gpu_ids,
        ports=(PortSpec(8080, "http"),),
        labels={"gaia.io/app": app},
        **extra,  # type: ignore[arg-type]
    )


async def instance(h: Harness, name: str) -> Instance | None:
    for inst in await h.provider.list_instances(namespace=h.namespace):
        if inst.name == name:
            return inst
    return None


async def settle_running(h: Harness, name: str, *, image: str | None = None) -> Instance:
    async def running() -> bool:
        inst = await instance(h, name)
        return (
            inst is not None
            and inst.phase == InstancePhase.RUNNING
            and inst.ready
            and (image is None or inst.image == image)
        )

    await h.settle(running)
    found = await instance(h, name)
    assert found is not None
    return found


async def settle_failed(h: Harness, name: str) -> Instance:
    async def failed() -> bool:
        inst = await instance(h, name)
        return inst is not None and inst.phase == InstancePhase.FAILED

    await h.settle(failed)
    found = await instance(h, name)
    assert found is not None
    return found


async def node_named(provider: ClusterProvider, name: str) -> Node:
    for node in await provider.list_nodes():
        if node.name == name:
            return node
    raise AssertionError(f"node {name} is not listed")


async def gpu_node(h: Harness) -> Node:
    for node in await h.provider.list_nodes():
        if node.ready and node.schedulable and node.gpus:
            return node
    raise AssertionError("the harness must offer a ready node with GPUs")


async def any_node(h: Harness) -> Node:
    return await gpu_node(h)


async def reasons_for(
    provider: ClusterProvider, name: str, *, since: int = 0
) -> list[ClusterEvent]:
    return [e for e in await provider.events(since=since, limit=10_000) if e.object_name == name]


def is_subsequence(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


# ---------------------------------------------------------------- health and nodes


@contract
async def test_a_reachable_cluster_reports_healthy(provider_harness: Harness) -> None:
    health = await provider_harness.provider.check_health(timeout=5)
    assert isinstance(health, ClusterHealth)
    assert health.state == HealthState.HEALTHY


@contract
async def test_nodes_are_listed_with_capacity_gpus_and_links(provider_harness: Harness) -> None:
    nodes = await provider_harness.provider.list_nodes()
    assert nodes
    assert len({n.name for n in nodes}) == len(nodes)
    links = {link.value for link in GpuLink}
    for node in nodes:
        assert node.host_ip
        assert node.capacity.cpu > 0 and node.capacity.memory > 0
        assert node.free == node.capacity.minus(node.allocated)
        assert node.capacity.gpu == 100 * len(node.gpus)
        assert [g.index for g in node.gpus] == list(range(len(node.gpus)))
        assert len(node.gpu_links) == len(node.gpus)
        for a, row in enumerate(node.gpu_links):
            assert len(row) == len(node.gpus)
            for b, link in enumerate(row):
                assert link in links
                assert (link == GpuLink.SELF) == (a == b)
                assert link == node.gpu_links[b][a]
        assert set(node.gpu_used) <= {g.index for g in node.gpus}
    assert any(n.gpus for n in nodes)


# ---------------------------------------------------------------- instances


@contract
async def test_created_instance_runs_and_becomes_ready(provider_harness: Harness) -> None:
    h = provider_harness
    node = await gpu_node(h)
    created = await h.provider.create_instance(
        spec_for(h, node.name, resources=ResourceVector(cpu=500, memory=512, gpu=100), gpu_ids=(0,))
    )
    assert created.name == "web-0" and created.node == node.name
    assert created.phase in (InstancePhase.SCHEDULED, InstancePhase.PULLING)
    assert not created.ready

    inst = await settle_running(h, "web-0")
    assert (inst.namespace, inst.app, inst.instance_id) == (h.namespace, "web", 0)
    assert (inst.version, inst.image) == ("v1", h.images[0])
    assert inst.node == node.name and inst.host_ip == node.host_ip
    assert inst.pod_ip and inst.gpu_ids == (0,)
    assert inst.resources == ResourceVector(cpu=500, memory=512, gpu=100)
    assert inst.restarts == 0 and inst.last_failure is None
    assert inst.created_at is not None and inst.started_at is not None
    assert inst.started_at >= inst.created_at
    assert inst.shape
    assert inst.labels["gaia.io/app"] == "web"
    events = await reasons_for(h.provider, "web-0")
    assert all(e.namespace == h.namespace and e.object_kind == "Instance" for e in events)
    assert is_subsequence(LIFECYCLE, [e.reason for e in events]), [e.reason for e in events]
    assert [e.seq for e in events] == sorted(e.seq for e in events)

    listed = await h.provider.list_instances(namespace=h.namespace, app="web")
    assert [i.name for i in listed] == ["web-0"]
    assert await h.provider.list_instances(namespace=h.namespace, app="other") == []


@contract
async def test_a_page_of_instances_is_listed_by_id(provider_harness: Harness) -> None:
    """A long list pages over ``instance_ids`` and builds views only for the page's ids
    (``list_instances(ids=...)``): both answer about the same instances."""
    h = provider_harness
    node = await gpu_node(h)
    for iid in (0, 1, 2):
        await h.provider.create_instance(spec_for(h, node.name, instance_id=iid))
    assert await h.provider.instance_ids(namespace=h.namespace, app="web") == {0, 1, 2}
    assert await h.provider.instance_ids(namespace=h.namespace, app="other") == set()
    page = await h.provider.list_instances(namespace=h.namespace, app="web", ids=[2, 0, 7])
    assert [i.name for i in page] == ["web-0", "web-2"]
    assert await h.provider.list_instances(namespace=h.namespace, app="web", ids=[]) == []


@contract
async def test_instance_states_say_what_the_views_say(provider_harness: Harness) -> None:
    """A long list filters and counts over ``instance_states`` (phase, node, version and
    readiness per id) and lists only its page in full: the two agree about every instance,
    once it is settled, and another app's instances are not among them."""
    h = provider_harness
    node = await gpu_node(h)
    for iid in (0, 1):
        await h.provider.create_instance(spec_for(h, node.name, instance_id=iid))
    await settle_running(h, "web-0")
    await settle_running(h, "web-1")
    states = await h.provider.instance_states(namespace=h.namespace, app="web")
    views = await h.provider.list_instances(namespace=h.namespace, app="web")
    assert states == {
        i.instance_id: InstanceState(phase=i.phase, node=i.node, version=i.version, ready=i.ready)
        for i in views
    }
    assert {s.phase for s in states.values()} == {InstancePhase.RUNNING}
    assert {s.node for s in states.values()} == {node.name}
    assert await h.provider.instance_states(namespace=h.namespace, app="other") == {}


@contract
async def test_instance_name_is_unique_in_its_namespace(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    with pytest.raises(Conflict):
        await h.provider.create_instance(spec_for(h, node.name))


@contract
async def test_node_refuses_what_it_cannot_hold(provider_harness: Harness) -> None:
    h = provider_harness
    node = await gpu_node(h)
    too_big = ResourceVector(cpu=node.free.cpu + 1000, memory=512)
    with pytest.raises(InvalidRequest):
        await h.provider.create_instance(spec_for(h, node.name, resources=too_big))
    with pytest.raises(InvalidRequest):
        await h.provider.create_instance(spec_for(h, "no-such-node"))

    whole = ResourceVector(cpu=500, memory=512, gpu=100)
    await h.provider.create_instance(spec_for(h, node.name, resources=whole, gpu_ids=(0,)))
    with pytest.raises(InvalidRequest):  # the card is taken
        await h.provider.create_instance(
            spec_for(h, node.name, instance_id=1, resources=whole, gpu_ids=(0,))
        )
    with pytest.raises(InvalidRequest):  # a card the node does not have
        await h.provider.create_instance(
            spec_for(h, node.name, instance_id=1, resources=whole, gpu_ids=(len(node.gpus),))
        )
    half = ResourceVector(cpu=500, memory=512, gpu=50)
    await h.provider.create_instance(
        spec_for(h, node.name, instance_id=2, resources=half, gpu_ids=(1,))
    )
    await h.provider.create_instance(
        spec_for(h, node.name, instance_id=3, resources=half, gpu_ids=(1,))
    )
    with pytest.raises(InvalidRequest):  # two halves fill the card
        await h.provider.create_instance(
            spec_for(h, node.name, instance_id=4, resources=half, gpu_ids=(1,))
        )
    after = await node_named(h.provider, node.name)
    assert after.gpu_used[0] == 100 and after.gpu_used[1] == 100
    assert after.allocated.cpu == node.allocated.cpu + 1500


@contract
async def test_replace_image_keeps_node_ip_and_gpus(provider_harness: Harness) -> None:
    h = provider_harness
    node = await gpu_node(h)
    resources = ResourceVector(cpu=500, memory=512, gpu=100)
    await h.provider.create_instance(spec_for(h, node.name, resources=resources, gpu_ids=(1,)))
    before = await settle_running(h, "web-0")
    seq = (await h.provider.events(since=0, limit=10_000))[-1].seq

    replaced = await h.provider.replace_image(
        namespace=h.namespace, name="web-0", image=h.images[1], version="v2"
    )
    assert replaced.version == "v2" and replaced.image == h.images[1]
    after = await settle_running(h, "web-0", image=h.images[1])
    assert (after.node, after.pod_ip, after.gpu_ids) == (before.node, before.pod_ip, (1,))
    assert after.version == "v2"
    assert after.restarts == before.restarts + 1
    assert after.shape == before.shape
    reasons = [e.reason for e in await reasons_for(h.provider, "web-0", since=seq)]
    assert is_subsequence(["Killing", "Pulled", "Created", "Started"], reasons), reasons


@contract
async def test_restart_starts_the_container_again(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    before = await settle_running(h, "web-0")
    seq = (await h.provider.events(since=0, limit=10_000))[-1].seq

    await h.provider.restart_instance(namespace=h.namespace, name="web-0")
    after = await settle_running(h, "web-0")
    assert after.restarts == before.restarts + 1
    assert (after.node, after.pod_ip) == (before.node, before.pod_ip)
    reasons = [e.reason for e in await reasons_for(h.provider, "web-0", since=seq)]
    assert is_subsequence(["Started"], reasons), reasons
    with pytest.raises(NotFound):
        await h.provider.restart_instance(namespace=h.namespace, name="web-99")


@contract
async def test_delete_is_idempotent_and_frees_resources(provider_harness: Harness) -> None:
    h = provider_harness
    node = await gpu_node(h)
    resources = ResourceVector(cpu=1000, memory=1024, gpu=200)
    await h.provider.create_instance(spec_for(h, node.name, resources=resources, gpu_ids=(2, 3)))
    await settle_running(h, "web-0")
    held = await node_named(h.provider, node.name)
    assert held.allocated.cpu == node.allocated.cpu + 1000
    assert (held.gpu_used[2], held.gpu_used[3]) == (100, 100)

    await h.provider.delete_instance(namespace=h.namespace, name="web-0")
    await h.provider.delete_instance(namespace=h.namespace, name="web-0")
    await h.provider.delete_instance(namespace=h.namespace, name="never-existed")

    async def gone() -> bool:
        return await instance(h, "web-0") is None

    await h.settle(gone)
    freed = await node_named(h.provider, node.name)
    assert freed.allocated == node.allocated
    assert freed.gpu_used.get(2, 0) == 0 and freed.gpu_used.get(3, 0) == 0
    # the name and the cards can be used again
    await h.provider.create_instance(spec_for(h, node.name, resources=resources, gpu_ids=(2, 3)))


# ---------------------------------------------------------------- services


@contract
async def test_service_lists_only_ready_endpoints(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    service = ServiceSpec(
        namespace=h.namespace,
        name="web",
        app="web",
        ports=(PortSpec(80, "http"),),
        domain="web.example.test",
    )
    applied = await h.provider.apply_service(service)
    assert applied.cluster_ip and applied.domain == "web.example.test"
    assert applied.endpoints == ()

    await h.provider.create_instance(spec_for(h, node.name))
    slow = ProbeSpec(path="/ready", port=8080, initial_delay_s=3600)
    await h.provider.create_instance(spec_for(h, node.name, instance_id=1, readiness=slow))
    ready = await settle_running(h, "web-0")

    async def both_running() -> bool:
        inst = await instance(h, "web-1")
        return inst is not None and inst.phase == InstancePhase.RUNNING

    await h.settle(both_running)
    got = await h.provider.get_service(namespace=h.namespace, name="web")
    assert got.cluster_ip == applied.cluster_ip
    assert got.ports == (PortSpec(80, "http"),)
    assert [(e.instance, e.ip, e.node) for e in got.ready_endpoints] == [
        ("web-0", ready.pod_ip, node.name)
    ]
    assert all(e.ready for e in got.ready_endpoints)
    assert "web-1" not in {e.instance for e in got.ready_endpoints}

    reapplied = await h.provider.apply_service(service)
    assert reapplied.cluster_ip == applied.cluster_ip
    await h.provider.delete_service(namespace=h.namespace, name="web")
    await h.provider.delete_service(namespace=h.namespace, name="web")
    with pytest.raises(NotFound):
        await h.provider.get_service(namespace=h.namespace, name="web")


# ---------------------------------------------------------------- configs and secrets


@contract
async def test_configs_and_secrets_round_trip(provider_harness: Harness) -> None:
    h = provider_harness
    ns = h.namespace
    await h.provider.apply_config(ConfigData(ns, "app", secret=False, data={"mode": "fast"}))
    await h.provider.apply_config(ConfigData(ns, "app", secret=True, data={"token": "s3cr3t"}))
    listed = await h.provider.list_configs(namespace=ns)
    assert {(c.name, c.secret): c.data for c in listed} == {
        ("app", False): {"mode": "fast"},
        ("app", True): {"token": "s3cr3t"},
    }
    await h.provider.apply_config(ConfigData(ns, "app", secret=False, data={"mode": "slow"}))
    await h.provider.delete_config(namespace=ns, name="app", secret=True)
    await h.provider.delete_config(namespace=ns, name="app", secret=True)
    listed = await h.provider.list_configs(namespace=ns)
    assert [(c.name, c.secret, c.data) for c in listed] == [("app", False, {"mode": "slow"})]


@contract
async def test_configs_are_visible_inside_the_instance(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.apply_config(ConfigData(h.namespace, "settings", False, {"LEVEL": "debug"}))
    await h.provider.apply_config(ConfigData(h.namespace, "creds", True, {"password": "pw-1"}))
    refs = (ConfigRef("settings"), ConfigRef("creds", secret=True, mount_path="/etc/creds"))
    await h.provider.create_instance(spec_for(h, node.name, configs=refs, env={"FOO": "bar"}))
    await settle_running(h, "web-0")

    env = await h.provider.exec(namespace=h.namespace, name="web-0", command=["env"])
    assert env.exit_code == 0
    assert "FOO=bar" in env.stdout.splitlines()
    assert "LEVEL=debug" in env.stdout.splitlines()
    cat = await h.provider.exec(
        namespace=h.namespace, name="web-0", command=["cat", "/etc/creds/password"]
    )
    assert (cat.exit_code, cat.stdout.strip()) == (0, "pw-1")


@contract
async def test_missing_config_fails_the_instance(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    refs = (ConfigRef("absent", mount_path="/etc/absent"),)
    await h.provider.create_instance(spec_for(h, node.name, configs=refs))
    failed = await settle_failed(h, "web-0")
    assert failed.last_failure is not None
    assert failed.last_failure.cause == FailureCause.CONFIG
    warnings = [e for e in await reasons_for(h.provider, "web-0") if e.type == "Warning"]
    assert any("absent" in e.message for e in warnings)

    # once the config exists, a restart runs it
    await h.provider.apply_config(ConfigData(h.namespace, "absent", False, {"k": "v"}))
    await h.provider.restart_instance(namespace=h.namespace, name="web-0")
    await settle_running(h, "web-0")


# ---------------------------------------------------------------- observation


@contract
async def test_running_instance_has_metrics_and_logs(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    await settle_running(h, "web-0")

    async def has_logs() -> bool:
        return bool(await h.provider.logs(namespace=h.namespace, name="web-0", tail=10))

    await h.settle(has_logs)
    samples = await h.provider.metrics(namespace=h.namespace, names=["web-0"])
    assert [(s.target, s.kind, s.namespace) for s in samples] == [
        ("web-0", "instance", h.namespace)
    ]
    assert samples[0].cpu_milli >= 0 and samples[0].memory_mib > 0
    everything = await h.provider.metrics()
    assert {s.target for s in everything if s.kind == "node"} >= {node.name}
    assert "web-0" in {s.target for s in everything if s.kind == "instance"}

    lines = await h.provider.logs(namespace=h.namespace, name="web-0", tail=10)
    assert 0 < len(lines) <= 10
    assert [line.at for line in lines] == sorted(line.at for line in lines)
    with pytest.raises(NotFound):
        await h.provider.logs(namespace=h.namespace, name="web-99")


@contract
async def test_exec_runs_in_the_instance(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name, env={"GREETING": "hello"}))
    await settle_running(h, "web-0")
    hostname = await h.provider.exec(namespace=h.namespace, name="web-0", command=["hostname"])
    assert (hostname.exit_code, hostname.stdout.strip()) == (0, "web-0")
    env = await h.provider.exec(namespace=h.namespace, name="web-0", command=["env"])
    assert "GREETING=hello" in env.stdout.splitlines()
    missing = await h.provider.exec(
        namespace=h.namespace, name="web-0", command=["no-such-command"]
    )
    assert missing.exit_code != 0


@contract
async def test_events_resume_after_a_seq(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    first = await h.provider.events(since=0, limit=10_000)
    assert first
    last = first[-1].seq
    await h.provider.create_instance(spec_for(h, node.name, instance_id=1))
    later = await h.provider.events(since=last, limit=10_000)
    assert later and all(e.seq > last for e in later)
    assert any(e.object_name == "web-1" for e in later)
    assert len(await h.provider.events(since=0, limit=1)) == 1


# ---------------------------------------------------------------- scale out and in


@contract
async def test_cordon_drain_and_remove_a_node(provider_harness: Harness) -> None:
    h = provider_harness
    added = await h.provider.add_node(
        NodeSpec(name="contract-extra", cpu_milli=8000, memory_mib=16384, gpus=2)
    )
    assert added.ready and added.schedulable and len(added.gpus) == 2
    assert added.gpu_links[0][0] == GpuLink.SELF
    with pytest.raises(Conflict):
        await h.provider.add_node(NodeSpec(name="contract-extra", cpu_milli=1, memory_mib=1))

    cordoned = await h.provider.set_schedulable("contract-extra", False)
    assert not cordoned.schedulable
    with pytest.raises(InvalidRequest):
        await h.provider.create_instance(spec_for(h, "contract-extra"))
    assert (await h.provider.set_schedulable("contract-extra", True)).schedulable

    await h.provider.create_instance(spec_for(h, "contract-extra"))
    await h.provider.create_instance(spec_for(h, "contract-extra", instance_id=1))
    with pytest.raises(Conflict):
        await h.provider.remove_node("contract-extra")

    evicted = await h.provider.drain("contract-extra")
    assert sorted(evicted) == ["web-0", "web-1"]
    drained = await node_named(h.provider, "contract-extra")
    assert not drained.schedulable

    async def empty() -> bool:
        return (await node_named(h.provider, "contract-extra")).instance_count == 0

    await h.settle(empty)
    assert await h.provider.list_instances(namespace=h.namespace) == []
    await h.provider.remove_node("contract-extra")
    assert "contract-extra" not in {n.name for n in await h.provider.list_nodes()}
    with pytest.raises(NotFound):
        await h.provider.remove_node("contract-extra")


# ---------------------------------------------------------------- failures (sim only)


@pytest.mark.sim_only
@contract
async def test_a_crash_is_reported_with_its_exit_code(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    await settle_running(h, "web-0")
    h.fault("crash", namespace=h.namespace, instance="web-0", exit_code=3)
    failed = await settle_failed(h, "web-0")
    assert failed.last_failure is not None
    assert (failed.last_failure.cause, failed.last_failure.exit_code) == (
        FailureCause.APP_EXIT,
        3,
    )
    assert not failed.ready
    # the provider does not restart on its own; the platform does
    await h.provider.restart_instance(namespace=h.namespace, name="web-0")
    assert (await settle_running(h, "web-0")).restarts == 1


@pytest.mark.sim_only
@contract
async def test_a_lost_node_fails_its_instances(provider_harness: Harness) -> None:
    h = provider_harness
    node = await any_node(h)
    await h.provider.create_instance(spec_for(h, node.name))
    await settle_running(h, "web-0")
    h.fault("node_lost", node=node.name)
    lost = await node_named(h.provider, node.name)
    assert not lost.ready
    failed = await settle_failed(h, "web-0")
    assert failed.last_failure is not None
    assert failed.last_failure.cause == FailureCause.NODE_LOST
    with pytest.raises(InvalidRequest):
        await h.provider.create_instance(spec_for(h, node.name, instance_id=1))
    h.fault("node_restored", node=node.name)
    assert (await node_named(h.provider, node.name)).ready
