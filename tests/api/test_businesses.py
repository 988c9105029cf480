"""Businesses, members, quotas and the overview, through the API."""

from __future__ import annotations

from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.store import quotas
from gaia.store.models import Business, Cluster
from tests.conftest import QUOTA, World


def _hold(
    platform: Platform, amounts: dict[str, float], *, owner: str, commit: bool = False
) -> None:
    """Reserve resources of business alpha in sim-1, as an app would."""
    with platform.db.write_session() as s:
        biz = s.query(Business).filter_by(name="alpha").one()
        cluster = s.query(Cluster).filter_by(name="sim-1").one()
        quotas.reserve(
            s,
            business=biz,
            cluster=cluster,
            request=ResourceVector.from_api(amounts),
            owner=owner,
            commit=commit,
        )


def test_create_business_with_admins_and_manage_members(world: World, make_user) -> None:
    c, admin = world.client, world.admin
    make_user("zoe")
    r = c.post("/api/v1/businesses", json={"name": "ocr", "admins": ["zoe"]}, headers=admin)
    assert r.status_code == 201 and r.json()["role"] == "platform-admin"
    dup = c.post("/api/v1/businesses", json={"name": "ocr"}, headers=admin)
    assert dup.status_code == 409 and dup.json()["code"] == "conflict"
    missing = c.post("/api/v1/businesses", json={"name": "x", "admins": ["nobody"]}, headers=admin)
    assert missing.status_code == 422 and "nobody" in missing.json()["message"]
    members = c.get("/api/v1/businesses/ocr/members", headers=admin).json()["items"]
    assert [(m["username"], m["role"]) for m in members] == [("zoe", "business-admin")]


def test_last_business_admin_cannot_leave_or_be_demoted(world: World) -> None:
    c, ba = world.client, world.as_("business-admin")
    r = c.put("/api/v1/businesses/alpha/members/ba", json={"role": "viewer"}, headers=ba)
    assert r.status_code == 409 and "last business-admin" in r.json()["message"]
    assert c.delete("/api/v1/businesses/alpha/members/ba", headers=ba).status_code == 409
    # Promote someone else first, then stepping down works.
    assert (
        c.put(
            "/api/v1/businesses/alpha/members/dev", json={"role": "business-admin"}, headers=ba
        ).status_code
        == 200
    )
    assert (
        c.put(
            "/api/v1/businesses/alpha/members/ba", json={"role": "viewer"}, headers=ba
        ).status_code
        == 200
    )


def test_business_holding_resources_cannot_be_deleted(world: World, platform: Platform) -> None:
    _hold(platform, {"cpu": 1}, owner="app/a/0", commit=True)
    r = world.client.delete("/api/v1/businesses/alpha", headers=world.admin)
    assert r.status_code == 409 and "still holds resources" in r.json()["message"]
    assert world.client.delete("/api/v1/businesses/beta", headers=world.admin).status_code == 204


def test_quota_validation_errors_are_clear(world: World) -> None:
    c, admin = world.client, world.admin
    r = c.put("/api/v1/businesses/alpha/quotas/sim-1", json={"hard": {"gpu": 0.333}}, headers=admin)
    assert r.status_code == 422 and "steps of 0.01" in r.json()["message"]
    r = c.put("/api/v1/businesses/alpha/quotas/sim-1", json={"hard": {"disk": 1}}, headers=admin)
    assert r.status_code == 422 and r.json()["details"]["errors"][0]["loc"][-1] == "disk"
    r = c.put("/api/v1/businesses/alpha/quotas/nowhere", json={"hard": QUOTA}, headers=admin)
    assert r.status_code == 404 and "cluster 'nowhere'" in r.json()["message"]


def test_lowering_a_quota_below_use_warns_and_blocks_growth(
    world: World, platform: Platform
) -> None:
    _hold(platform, {"cpu": 4}, owner="app/a/0", commit=True)
    r = world.client.put(
        "/api/v1/businesses/alpha/quotas/sim-1",
        json={"hard": {**QUOTA, "cpu": 2}},
        headers=world.admin,
    )
    assert r.status_code == 200
    cpu = next(d for d in r.json()["dimensions"] if d["dimension"] == "cpu")
    assert cpu["display"] == "4/2 cores"
    warnings = world.client.get(
        "/api/v1/events", params={"reason": "QuotaBelowUsage"}, headers=world.admin
    ).json()["items"]
    assert warnings and "cpu" in warnings[0]["message"]
    check = world.client.post(
        "/api/v1/businesses/alpha/quotas/sim-1/admission-check",
        json={"request": {"cpu": 0.5}},
        headers=world.as_("viewer"),
    )
    assert check.json()["admitted"] is False


def test_overview_counts_and_usage_are_scoped(world: World, platform: Platform) -> None:
    _hold(platform, {"cpu": 1.5, "gpu": 0.5}, owner="x")
    full = world.client.get("/api/v1/overview", headers=world.admin).json()
    assert full["totals"]["businesses"] == 2 and full["totals"]["users"] == 5
    sim = full["clusters"][0]
    assert sim["name"] == "sim-1" and sim["businesses"] == 2
    usage = {u["dimension"]: u for u in sim["usage"]}
    assert usage["cpu"] == {"dimension": "cpu", "unit": "cores", "used": 1.5, "total": 20}
    mine = world.client.get("/api/v1/overview", headers=world.as_("viewer")).json()
    assert [b["name"] for b in mine["businesses"]] == ["alpha"]
    assert "users" not in mine["totals"]
    alpha = mine["businesses"][0]
    assert alpha["members"] == 3
    assert {u["dimension"]: u["used"] for u in alpha["usage"]}["gpu"] == 0.5
    assert mine["clusters"][0]["businesses"] == 1  # beta's quota is not the viewer's to see


def test_instance_configs_business_shape_overrides_platform(world: World) -> None:
    c = world.client
    c.post(
        "/api/v1/instance-configs",
        json={"name": "std", "resources": {"cpu": 1}},
        headers=world.admin,
    )
    c.post(
        "/api/v1/businesses/alpha/instance-configs",
        json={"name": "std", "resources": {"cpu": 2}},
        headers=world.as_("business-admin"),
    )
    r = c.post(
        "/api/v1/businesses/alpha/quotas/sim-1/admission-check",
        json={"request": {}, "instance_config": "std", "replicas": 6},
        headers=world.as_("viewer"),
    )
    assert r.json()["violations"][0]["requested"] == 12  # the business's 2-core shape
    r = c.post(
        "/api/v1/businesses/beta/quotas/sim-1/admission-check",
        json={"request": {}, "instance_config": "std", "replicas": 6},
        headers=world.as_("outsider"),
    )
    assert r.json()["admitted"] is True  # beta sees only the platform's 1-core shape
