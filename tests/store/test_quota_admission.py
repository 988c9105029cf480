"""Quota admission under concurrency, reservations, and the admission-check API.

These run on SQLite and on the real PostgreSQL server (the ``database_url`` fixture).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

from sqlalchemy import select

from gaia.domain.errors import Conflict, QuotaExceeded
from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.store import quotas
from gaia.store.models import Business, Cluster, Quota, QuotaReservation, utcnow
from tests.conftest import World


def _setup(platform: Platform, hard: dict[str, float]) -> tuple[int, int]:
    with platform.db.write_session() as s:
        b = Business(name="ocr")
        c = Cluster(name="bj-1", kind="sim", sim_spec={})
        s.add_all([b, c])
        s.flush()
        q = Quota(business_id=b.id, cluster_id=c.id)
        q.set_hard(ResourceVector.from_api(hard))
        q.set_used(ResourceVector())
        s.add(q)
        return b.id, c.id


def _reserve(platform: Platform, ids: tuple[int, int], ask: ResourceVector, owner: str) -> None:
    with platform.db.write_session() as s:
        business = s.get(Business, ids[0])
        cluster = s.get(Cluster, ids[1])
        assert business is not None and cluster is not None
        quotas.reserve(s, business=business, cluster=cluster, request=ask, owner=owner)


def test_fifty_simultaneous_requests_never_overcommit(platform: Platform) -> None:
    # Each request fits alone (1 of 10 cores, 0.3 of 4 GPUs); together they need 50 cores.
    ids = _setup(platform, {"cpu": 10, "gpu": 4, "memory": 100000})
    ask = ResourceVector.from_api({"cpu": 1, "gpu": 0.3, "memory": 1000})
    barrier = threading.Barrier(50)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            _reserve(platform, ids, ask, f"app/ocr/instance/{i}")
            result = "admitted"
        except QuotaExceeded as exc:
            result = "rejected:" + ",".join(v["dimension"] for v in exc.details["violations"])
        with lock:
            outcomes[result] += 1

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # CPU is the tighter limit (10 x 1 core; GPU would allow 13 x 0.3): exactly ten fit.
    assert outcomes["admitted"] == 10
    assert outcomes["rejected:cpu"] == 40
    assert sum(outcomes.values()) == 50
    with platform.db.read_session() as s:
        quota = s.scalars(select(Quota)).one()
        held = s.scalars(select(QuotaReservation)).all()
    assert len(held) == outcomes["admitted"]
    assert quota.used() == ask.scaled(outcomes["admitted"])
    assert quota.used().cpu == quota.hard().cpu


def test_rejection_names_dimension_asked_used_allowed(platform: Platform) -> None:
    ids = _setup(platform, {"cpu": 1, "memory": 1000, "gpu": 1})
    _reserve(platform, ids, ResourceVector.from_api({"cpu": 0.3, "memory": 384}), "a")
    try:
        _reserve(platform, ids, ResourceVector.from_api({"memory": 700}), "b")
    except QuotaExceeded as exc:
        assert exc.details["violations"] == [
            {"dimension": "memory", "unit": "MiB", "requested": 700, "used": 384, "allowed": 1000}
        ]
        assert "memory: asked 700 MiB, 384 MiB used of 1000 MiB allowed" in exc.message
    else:
        raise AssertionError("admission should have refused 700 MiB")


def test_same_owner_cannot_reserve_twice(platform: Platform) -> None:
    ids = _setup(platform, {"cpu": 10})
    ask = ResourceVector.from_api({"cpu": 1})
    _reserve(platform, ids, ask, "app/x/instance/0")
    try:
        _reserve(platform, ids, ask, "app/x/instance/0")
    except Conflict:
        pass
    else:
        raise AssertionError("a second reservation for the same owner must conflict")


def test_release_and_expiry_give_quota_back(platform: Platform) -> None:
    ids = _setup(platform, {"cpu": 2})
    ask = ResourceVector.from_api({"cpu": 1})
    _reserve(platform, ids, ask, "kept")
    _reserve(platform, ids, ask, "abandoned")
    with platform.db.write_session() as s:
        kept = s.scalars(select(QuotaReservation).where(QuotaReservation.owner == "kept")).one()
        quotas.commit(s, kept)
    # The abandoned one is pending; an hour later it has expired and is reclaimed.
    with platform.db.write_session() as s:
        assert quotas.reclaim_expired(s, now=utcnow() + dt.timedelta(hours=1)) == 1
    with platform.db.write_session() as s:
        quota = s.scalars(select(Quota)).one()
        assert quota.used().cpu == 1000
        assert quotas.release_owner(s, quota=quota, owner="kept")
    with platform.db.read_session() as s:
        assert s.scalars(select(Quota)).one().used().is_zero()


def test_quota_get_shows_used_and_total_per_dimension(world: World, platform: Platform) -> None:
    with platform.db.read_session() as s:
        ids = (
            s.scalars(select(Business.id).where(Business.name == "alpha")).one(),
            s.scalars(select(Cluster.id).where(Cluster.name == "sim-1")).one(),
        )
    _reserve(platform, ids, ResourceVector.from_api({"cpu": 0.3, "memory": 384, "gpu": 0.5}), "i0")
    r = world.client.get("/api/v1/businesses/alpha/quotas/sim-1", headers=world.as_("viewer"))
    assert r.status_code == 200, r.text
    dims = {d["dimension"]: d for d in r.json()["dimensions"]}
    assert set(dims) == {
        "cpu",
        "memory",
        "local_disk",
        "cloud_disk",
        "shared_disk",
        "bandwidth",
        "gpu",
        "gpu_memory",
    }
    assert dims["cpu"]["display"] == "0.3/10 cores"
    assert dims["memory"]["used"] == 384 and dims["memory"]["total"] == 10240
    assert dims["gpu"]["used"] == 0.5 and dims["gpu"]["pending"] == 0.5


def test_admission_check_uses_the_same_rule(world: World) -> None:
    c, h = world.client, world.as_("developer")
    ok = c.post(
        "/api/v1/businesses/alpha/quotas/sim-1/admission-check",
        json={"request": {"cpu": 2, "gpu": 1}, "replicas": 4},
        headers=h,
    )
    assert ok.status_code == 200 and ok.json()["admitted"] is True
    too_big = c.post(
        "/api/v1/businesses/alpha/quotas/sim-1/admission-check",
        json={"request": {"cpu": 2, "gpu": 1}, "replicas": 5},
        headers=h,
    )
    body = too_big.json()
    assert body["admitted"] is False
    assert [v["dimension"] for v in body["violations"]] == ["gpu"]
    assert body["violations"][0]["requested"] == 5 and body["violations"][0]["allowed"] == 4


def test_admission_check_by_instance_configuration(world: World) -> None:
    c = world.client
    r = c.post(
        "/api/v1/businesses/alpha/instance-configs",
        json={
            "name": "ocr-gpu",
            "resources": {"cpu": 4, "memory": 10240, "local_disk": 4, "bandwidth": 10, "gpu": 2},
        },
        headers=world.as_("business-admin"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["summary"].startswith("4 cores CPU, 10240 MiB memory")
    r = c.post(
        "/api/v1/businesses/alpha/quotas/sim-1/admission-check",
        json={"request": {}, "instance_config": "ocr-gpu", "replicas": 3},
        headers=world.as_("viewer"),
    )
    assert r.json()["admitted"] is False
    assert {v["dimension"] for v in r.json()["violations"]} == {"cpu", "memory", "gpu"}
