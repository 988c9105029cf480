"""Floating-IP pools and attachments in the store, on SQLite and the real PostgreSQL server.

The concurrency tests run a hundred ADDs at once, each in its own transaction: on PostgreSQL
they genuinely race (the unique constraint refuses the losers), on SQLite they queue on the
write lock."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gaia.domain.errors import Conflict, InvalidRequest
from gaia.platform import Platform
from gaia.store import network
from gaia.store.models import App, AppTemplate, Business, Cluster, NetworkAttachment


def _setup(platform: Platform, *, range_end: str = "10.9.0.101") -> tuple[int, int]:
    with platform.db.write_session() as s:
        b = Business(name="ocr")
        c = Cluster(name="bj-1", kind="sim", sim_spec={})
        s.add_all([b, c])
        s.flush()
        network.create_pool(
            s,
            cluster=c,
            name="rack-a",
            subnet="10.9.0.0/24",
            range_start="10.9.0.1",
            range_end=range_end,
        )
        network.create_pool(s, cluster=c, name="rack-b", subnet="10.9.1.0/24")
        return b.id, c.id


def _attach(
    platform: Platform,
    ids: tuple[int, int],
    pod: str,
    *,
    subnet: str = "10.9.0.0/24",
    node: str = "n1",
    container: str | None = None,
) -> network.Attached:
    with platform.db.write_session() as s:
        business, cluster = s.get(Business, ids[0]), s.get(Cluster, ids[1])
        assert business is not None and cluster is not None
        return network.attach_floating(
            s,
            cluster=cluster,
            business=business,
            pod=pod,
            subnet=subnet,
            node=node,
            container_id=container or f"c-{pod}",
        )


def _detach(platform: Platform, ids: tuple[int, int], pod: str, container: str) -> bool:
    with platform.db.write_session() as s:
        business, cluster = s.get(Business, ids[0]), s.get(Cluster, ids[1])
        assert business is not None and cluster is not None
        return network.detach(
            s, cluster=cluster, business=business, pod=pod, container_id=container
        )


def _race(platform: Platform, ids: tuple[int, int], count: int) -> tuple[list[str], Counter[str]]:
    barrier = threading.Barrier(count)
    ips: list[str] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        try:
            got = _attach(platform, ids, f"web-{i}")
            with lock:
                ips.append(got.ip)
                outcomes["attached"] += 1
        except network.PoolExhausted:
            with lock:
                outcomes["exhausted"] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return ips, outcomes


def test_a_hundred_concurrent_allocations_never_give_one_ip_twice(platform: Platform) -> None:
    ids = _setup(platform)  # 10.9.0.1-101 less the gateway .1: exactly 100 addresses
    ips, outcomes = _race(platform, ids, 100)
    assert outcomes == Counter(attached=100)
    assert len(set(ips)) == 100, [ip for ip, n in Counter(ips).items() if n > 1]
    assert "10.9.0.1" not in ips  # the gateway
    with platform.db.read_session() as s:
        assert (
            s.scalar(select(NetworkAttachment.id).where(NetworkAttachment.ip == "10.9.0.1")) is None
        )
    with pytest.raises(network.PoolExhausted, match="no free address"):
        _attach(platform, ids, "web-100")


def test_a_race_for_fewer_addresses_than_callers_gives_each_once(platform: Platform) -> None:
    ids = _setup(platform, range_end="10.9.0.61")  # 60 addresses for 100 callers
    ips, outcomes = _race(platform, ids, 100)
    assert outcomes == Counter(attached=60, exhausted=40)
    assert len(set(ips)) == 60


def test_the_database_refuses_one_address_twice(platform: Platform) -> None:
    """The guarantee is the constraint, not the code path: a raw duplicate insert fails."""
    ids = _setup(platform)
    first = _attach(platform, ids, "web-0")
    with pytest.raises(IntegrityError), platform.db.write_session() as s:
        pool_id = s.scalars(select(NetworkAttachment.pool_id)).one()
        s.add(
            NetworkAttachment(
                cluster_id=ids[1], business_id=ids[0], pod="web-9", mode="floating-ip",
                pool_id=pool_id, ip=first.ip,
            )
        )  # fmt: skip
        s.flush()


def test_an_instance_keeps_its_ip_on_another_node_of_its_subnet(platform: Platform) -> None:
    ids = _setup(platform)
    first = _attach(platform, ids, "web-0", node="n1", container="sandbox-1")
    # the node was lost: its DEL never came; the instance starts on n2
    moved = _attach(platform, ids, "web-0", node="n2", container="sandbox-2")
    assert moved.ip == first.ip and moved.reused
    # n1 comes back and deletes its old sandbox late: the address stays with n2's sandbox
    assert not _detach(platform, ids, "web-0", "sandbox-1")
    with platform.db.read_session() as s:
        row = s.scalars(select(NetworkAttachment)).one()
        assert (row.node, row.container_id) == ("n2", "sandbox-2")


def test_an_instance_cannot_take_its_ip_into_another_subnet(platform: Platform) -> None:
    ids = _setup(platform)
    _attach(platform, ids, "web-0")
    with pytest.raises(Conflict, match="only run on nodes of its own subnet"):
        _attach(platform, ids, "web-0", subnet="10.9.1.0/24", node="n7")


def test_a_second_sandbox_on_the_same_node_waits_for_the_first(platform: Platform) -> None:
    ids = _setup(platform)
    _attach(platform, ids, "web-0", container="old")
    with pytest.raises(network.InstanceBusy, match="retry once that sandbox is deleted"):
        _attach(platform, ids, "web-0", container="new")
    assert _detach(platform, ids, "web-0", "old")
    assert not _detach(platform, ids, "web-0", "old")  # DEL twice: nothing more to do


def _app(platform: Platform, ids: tuple[int, int], *, name: str, policy: str, n: int) -> None:
    with platform.db.write_session() as s:
        app = App(
            business_id=ids[0], cluster_id=ids[1], name=name, default_template="v1",
            instances={str(i): "v1" for i in range(n)}, next_instance_id=n,
        )  # fmt: skip
        s.add(app)
        s.flush()
        s.add(
            AppTemplate(
                app_id=app.id, name="v1",
                spec={"network_mode": "floating-ip", "ip_release": policy},
            )
        )  # fmt: skip


def _scale_to(platform: Platform, ids: tuple[int, int], name: str, n: int) -> None:
    with platform.db.write_session() as s:
        app = s.scalars(select(App).where(App.name == name)).one()
        app.instances = {str(i): "v1" for i in range(n)}


def _sweep(platform: Platform) -> set[str]:
    with platform.db.write_session() as s:
        return {r.pod for r in network.sweep(s)}


def test_release_policies_free_addresses_when_their_owner_is_gone(platform: Platform) -> None:
    ids = _setup(platform)
    for name, policy in (("del", "on-delete"), ("keep", "app"), ("pin", "never")):
        _app(platform, ids, name=name, policy=policy, n=2)
        for i in range(2):
            got = _attach(platform, ids, f"{name}-{i}")
            assert got.policy == policy
            _detach(platform, ids, f"{name}-{i}", f"c-{name}-{i}")
    _attach(platform, ids, "stray-pod-x")  # no app: freed at its DEL
    assert _detach(platform, ids, "stray-pod-x", "c-stray-pod-x")
    assert _sweep(platform) == set()  # every app still has both instances
    for name in ("del", "keep", "pin"):
        _scale_to(platform, ids, name, 1)
    assert _sweep(platform) == {"del-1"}  # on-delete: the scaled-away instance
    with platform.db.write_session() as s:
        for app in s.scalars(select(App)):
            app.state = "deleting"
    assert _sweep(platform) == {"del-0", "keep-0", "keep-1"}  # "never" stays
    with platform.db.read_session() as s:
        assert {r.pod for r in s.scalars(select(NetworkAttachment))} == {"pin-0", "pin-1"}


def test_a_held_address_is_never_swept(platform: Platform) -> None:
    ids = _setup(platform)
    _app(platform, ids, name="web", policy="on-delete", n=1)
    _attach(platform, ids, "web-0")
    _scale_to(platform, ids, "web", 0)
    assert _sweep(platform) == set()  # still held by its sandbox
    _detach(platform, ids, "web-0", "c-web-0")
    assert _sweep(platform) == {"web-0"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subnet": "10.9.0.0/33"}, "not an IPv4 network"),
        ({"subnet": "10.9.0.5/24"}, "not an IPv4 network"),
        ({"subnet": "10.9.0.0/31"}, "no room"),
        ({"subnet": "10.9.0.0/24", "gateway": "10.9.1.1"}, "gateway: 10.9.1.1 is not a host"),
        ({"subnet": "10.9.0.0/24", "range_start": "10.9.0.9", "range_end": "10.9.0.8"}, "after"),
        ({"subnet": "10.0.0.0/8"}, "at most 65536"),
    ],
)
def test_bad_pools_are_refused_with_the_field_to_fix(
    platform: Platform, fields: dict[str, str], message: str
) -> None:
    with platform.db.write_session() as s:
        c = Cluster(name="bj-1", kind="sim", sim_spec={})
        s.add(c)
        s.flush()
        with pytest.raises(InvalidRequest, match=message):
            network.create_pool(s, cluster=c, name="p", **fields)


def test_overlapping_pools_are_refused(platform: Platform) -> None:
    _setup(platform)
    with platform.db.write_session() as s:
        c = s.scalars(select(Cluster)).one()
        with pytest.raises(Conflict, match="overlaps pool 'rack-a'"):
            network.create_pool(s, cluster=c, name="wide", subnet="10.9.0.0/23")


def test_placement_subnets_follow_the_instance_or_the_free_pools(platform: Platform) -> None:
    ids = _setup(platform)
    with platform.db.read_session() as s:
        anywhere = network.subnets_for(s, cluster_id=ids[1], business_id=ids[0], pod="web-0")
    assert anywhere == {"10.9.0.0/24", "10.9.1.0/24"}
    _attach(platform, ids, "web-0", subnet="10.9.1.0/24")
    with platform.db.read_session() as s:
        own = network.subnets_for(s, cluster_id=ids[1], business_id=ids[0], pod="web-0")
    assert own == {"10.9.1.0/24"}


def test_an_apps_address_counts_and_pages_come_from_the_database(platform: Platform) -> None:
    """3,000 addresses of one app, 500 of them kept: the counts are the database's (the
    instance map's keys read by ``json_each``/``json_object_keys``), and pages of 500 walk
    every address once, as do pages of the kept ones."""
    ids = _setup(platform)
    wanted = set(range(2500)) | {2999}
    with platform.db.write_session() as s:
        other = Business(name="other")
        s.add(other)
        s.flush()
        app = App(
            business_id=ids[0], cluster_id=ids[1], name="web", default_template="v1",
            instances={str(i): "v1" for i in sorted(wanted)}, next_instance_id=3000,
        )  # fmt: skip
        s.add(app)
        rows = [(ids[0], f"web-{i}") for i in range(3000)]
        # look-alikes: another app's pod, a name the platform never gives, another business
        rows += [(ids[0], "web-api-1"), (ids[0], "web-01"), (other.id, "web-1")]
        s.add_all(
            NetworkAttachment(
                cluster_id=ids[1],
                business_id=business,
                pod=pod,
                mode="nat",
                ip=f"10.77.{n // 250}.{n % 250 + 1}",
                node="n1",
                container_id=f"c{n}",
            )
            for n, (business, pod) in enumerate(rows)
        )
    with platform.db.read_session() as s:
        app = s.scalars(select(App).where(App.name == "web")).one()
        assert network.app_address_counts(s, app=app) == network.AppAddressCounts(
            total=3000, kept=499
        )
        for kept, expected in (
            (None, {f"web-{i}" for i in range(3000)}),
            (True, {f"web-{i}" for i in range(2500, 2999)}),
            (False, {f"web-{i}" for i in sorted(wanted)}),
        ):
            seen: list[str] = []
            cursor = None
            while True:
                page, cursor = network.page_app_addresses(
                    s, app=app, limit=500, cursor=cursor, kept=kept
                )
                assert len(page) <= 500
                seen += [r.pod for r in page]
                if cursor is None:
                    break
            assert seen == sorted(expected) and len(seen) == len(set(seen)), kept
        chosen, _ = network.page_app_addresses(
            s, app=app, limit=10, cursor=None, instance_ids=[5, 2998, 4000]
        )
        assert [r.pod for r in chosen] == ["web-2998", "web-5"]
        # a stopped app wants none (a copy of the row, never written)
        stopped = App(
            id=app.id, business_id=app.business_id, cluster_id=app.cluster_id, name="web",
            instances=app.instances, state="stopped",
        )  # fmt: skip
        assert network.app_address_counts(s, app=stopped).kept == 3000
