"""The alerting API: ownership and credentials, policy validation, built-in rules, and the
Prometheus rule-file export checked by Debian's real ``promtool``."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.models import AlertChannel
from tests.conftest import World, missing_component
from tests.support.apps_harness import BIZ, AppsHarness, template

A = "/api/v1/alerts"


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    harness = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1", cpu=1, memory=512)],
        "replicas": 2,
    }
    harness.post(f"{BIZ}/apps", body, status=201)
    return harness


def post(world: World, who: str, path: str, body: dict[str, Any], status: int = 201) -> Any:
    r = world.client.post(path, json=body, headers=world.as_(who))
    assert r.status_code == status, r.text
    return r.json()


def webhook_channel(world: World, who: str = "business-admin", **config: Any) -> dict[str, Any]:
    body = {
        "business": "alpha",
        "name": "ops-hook",
        "kind": "webhook",
        "config": {
            "url": "https://hooks.example.com/gaia",
            "hmac_secret": "s3cret-hmac-0123456789",
            **config,
        },
    }
    return post(world, who, f"{A}/channels", body)  # type: ignore[no-any-return]


def app_policy(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "business": "alpha",
        "name": "web cpu",
        "scope": {"kind": "app", "app": "web"},
        "metric": "gaia_instance_cpu_usage_percent",
        "comparison": ">",
        "threshold": 80,
        "for_seconds": 60,
        "severity": "critical",
    }
    body.update(kw)
    return body


def test_channel_credentials_are_encrypted_masked_and_for_business_admins_only(
    world: World, platform: Platform
) -> None:
    ch = webhook_channel(world)
    assert ch["config"]["hmac_secret"] == "********"
    # chat webhooks carry their token in the URL: only its origin is shown
    assert ch["config"]["url"] == "https://hooks.example.com/********"
    with platform.db.read_session() as session:
        raw = session.scalars(select(AlertChannel.config_encrypted)).one()
    assert b"s3cret-hmac-0123456789" not in raw and b"hooks.example.com" not in raw

    # a developer sees that the channel exists, not its config; cannot create or edit one
    seen = world.client.get(f"{A}/channels/{ch['id']}", headers=world.as_("developer")).json()
    assert seen["name"] == "ops-hook" and seen["config"] is None
    r = world.client.post(
        f"{A}/channels",
        json={"business": "alpha", "name": "x", "kind": "webhook", "config": {"url": "https://a"}},
        headers=world.as_("developer"),
    )
    assert r.status_code == 403, r.text
    r = world.client.patch(
        f"{A}/channels/{ch['id']}", json={"enabled": False}, headers=world.as_("developer")
    )
    assert r.status_code == 403
    # another business does not see it at all
    r = world.client.get(f"{A}/channels/{ch['id']}", headers=world.as_("outsider"))
    assert r.status_code == 404
    listed = world.client.get(f"{A}/channels", headers=world.as_("outsider")).json()
    assert listed["items"] == []

    # an update that sends the mask back (or leaves the secret out) keeps the stored secret
    r = world.client.patch(
        f"{A}/channels/{ch['id']}",
        json={"config": {"url": "https://hooks.example.com/********", "hmac_secret": "********"}},
        headers=world.as_("business-admin"),
    )
    assert r.status_code == 200, r.text
    with platform.db.read_session() as session:
        row = session.scalars(select(AlertChannel)).one()
        stored = json.loads(platform.secrets.decrypt(row.config_encrypted))
    assert stored["hmac_secret"] == "s3cret-hmac-0123456789"
    assert stored["url"] == "https://hooks.example.com/gaia"
    r = world.client.patch(
        f"{A}/channels/{ch['id']}",
        json={"config": {"url": "https://hooks.example.com/v2"}},
        headers=world.as_("business-admin"),
    )
    assert r.status_code == 200, r.text
    with platform.db.read_session() as session:
        row = session.scalars(select(AlertChannel)).one()
        assert json.loads(platform.secrets.decrypt(row.config_encrypted))["url"].endswith("/v2")

    # the secret never reaches the operation records
    records = world.client.get("/api/v1/records", headers=world.admin, params={"limit": 100})
    assert "s3cret-hmac-0123456789" not in records.text


def test_channel_config_is_validated_with_the_field_named(world: World) -> None:
    r = world.client.post(
        f"{A}/channels",
        json={"business": "alpha", "name": "mail", "kind": "email", "config": {"host": "smtp"}},
        headers=world.as_("business-admin"),
    )
    assert r.status_code == 422, r.text
    assert "sender" in r.text


def test_policy_is_validated_against_the_catalogue_scope_and_owner(
    h: AppsHarness, world: World
) -> None:
    dev = "developer"
    r = world.client.post(
        f"{A}/policies", json=app_policy(metric="gaia_cpu"), headers=world.as_(dev)
    )
    assert r.status_code == 422 and "not in the catalogue" in r.text
    r = world.client.post(
        f"{A}/policies",
        json=app_policy(metric="gaia_node_cpu_usage_percent"),
        headers=world.as_(dev),
    )
    assert r.status_code == 422 and "cannot be scoped to a app" in r.text
    r = world.client.post(
        f"{A}/policies",
        json=app_policy(scope={"kind": "app", "app": "nope"}),
        headers=world.as_(dev),
    )
    assert r.status_code == 422 and "app 'nope' not found" in r.text
    r = world.client.post(f"{A}/policies", json=app_policy(threshold="NaN"), headers=world.as_(dev))
    assert r.status_code == 422
    r = world.client.post(
        f"{A}/policies",
        json=app_policy(templates={"email": {"subject": "{{ oops", "body": ""}}),
        headers=world.as_(dev),
    )
    assert r.status_code == 422 and "templates.email.subject" in r.text

    # channels of another business cannot be used
    other = post(
        world,
        "outsider",
        f"{A}/channels",
        {"business": "beta", "name": "b", "kind": "webhook", "config": {"url": "https://b"}},
    )
    r = world.client.post(
        f"{A}/policies", json=app_policy(channel_ids=[other["id"]]), headers=world.as_(dev)
    )
    assert r.status_code == 422 and "does not belong" in r.text

    # viewers read, developers write; cluster policies are the platform admins'
    r = world.client.post(f"{A}/policies", json=app_policy(), headers=world.as_("viewer"))
    assert r.status_code == 403
    created = post(world, dev, f"{A}/policies", app_policy())
    assert created["matchers"] == {"business": "alpha", "app": "web"}
    r = world.client.post(
        f"{A}/policies",
        json=app_policy(
            business=None, scope={"kind": "cluster", "cluster": "sim-1"}, metric="gaia_cluster_up"
        ),
        headers=world.as_(dev),
    )
    assert r.status_code == 403
    seen = world.client.get(f"{A}/policies", headers=world.as_("viewer")).json()["items"]
    assert [p["name"] for p in seen] == ["web cpu"]
    assert world.client.get(f"{A}/policies", headers=world.as_("outsider")).json()["items"] == []


def test_builtin_rules_enable_once_per_cluster(world: World) -> None:
    listed = world.client.get(f"{A}/builtin-rules", params={"limit": 500}, headers=world.admin)
    rules = listed.json()["items"]
    assert len(rules) >= 20
    assert {r["area"] for r in rules} >= {"cluster", "node", "app", "gpu", "storage", "etcd"}
    first = post(world, "platform-admin", "/api/v1/clusters/sim-1/alert-rules", {})
    assert len(first["created"]) == len(rules)
    assert all(p["matchers"]["cluster"] == "sim-1" for p in first["created"])
    again = post(world, "platform-admin", "/api/v1/clusters/sim-1/alert-rules", {})
    assert again["created"] == [] and len(again["already_enabled"]) == len(rules)
    r = world.client.post(
        "/api/v1/clusters/sim-1/alert-rules", json={"rules": ["nope"]}, headers=world.admin
    )
    assert r.status_code == 422 and "unknown built-in rules nope" in r.text
    r = world.client.post(
        "/api/v1/clusters/sim-1/alert-rules", json={}, headers=world.as_("business-admin")
    )
    assert r.status_code == 403


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_component("promtool", "apt-get install prometheus")
    assert path is not None
    return path


def test_exported_rules_pass_promtool_and_mean_what_the_policy_says(
    h: AppsHarness, world: World, tmp_path: Path
) -> None:
    promtool = _promtool()
    policy = post(world, "developer", f"{A}/policies", app_policy(for_seconds=120))
    post(
        world,
        "developer",
        f"{A}/policies",
        app_policy(
            name='odd "name" / ünïcode',
            metric="gaia_app_instances_ready",
            comparison="<",
            threshold=1,
            for_seconds=0,
            matchers={"cluster": 'sim-"1"'},
        ),
    )
    post(
        world, "platform-admin", "/api/v1/clusters/sim-1/alert-rules", {"rules": ["node-not-ready"]}
    )
    r = world.client.get(f"{A}/rules.yaml", headers=world.admin)
    assert r.status_code == 200, r.text
    rules = tmp_path / "gaia-rules.yaml"
    rules.write_text(r.text)
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 3 rules found" in check.stdout

    # promtool's rule unit test: the load breaches from 30 s on; the exported rule fires once it
    # has breached for its for-duration (2 min), as the platform's evaluator does
    labels = 'business="alpha",app="web",instance="web-0",cluster="sim-1"'
    (tmp_path / "test.yaml").write_text(
        textwrap.dedent(
            f"""\
            rule_files: [gaia-rules.yaml]
            evaluation_interval: 15s
            tests:
              - interval: 15s
                input_series:
                  - series: 'gaia_instance_cpu_usage_percent{{{labels}}}'
                    values: '50 50 95x20'
                alert_rule_test:
                  - eval_time: 1m
                    alertname: web_cpu
                    exp_alerts: []
                  - eval_time: 2m15s
                    alertname: web_cpu
                    exp_alerts: []
                  - eval_time: 2m30s
                    alertname: web_cpu
                    exp_alerts:
                      - exp_labels:
                          severity: critical
                          gaia_policy_id: "{policy["id"]}"
                          business: alpha
                          app: web
                          instance: web-0
                          cluster: sim-1
                        exp_annotations:
                          summary: "web cpu: gaia_instance_cpu_usage_percent > 80"
                          gaia_policy: web cpu
                          value: "95"
            """
        )
    )
    unit = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr

    # a viewer's export holds only their business's rules
    mine = world.client.get(f"{A}/rules.yaml", headers=world.as_("viewer")).text
    assert "gaia-business-alpha" in mine and "gaia-platform" not in mine


def test_a_receiver_or_channel_in_use_cannot_be_deleted_and_pages_filter_by_app(
    h: AppsHarness, world: World
) -> None:
    # platform-owned objects (business omitted) follow the same rules as a business's
    rec = post(
        world, "platform-admin", f"{A}/receivers", {"name": "duty", "phone": "+8613800000000"}
    )
    post(
        world,
        "platform-admin",
        f"{A}/receiver-groups",
        {"name": "ops", "receiver_ids": [rec["id"]]},
    )
    r = world.client.delete(f"{A}/receivers/{rec['id']}", headers=world.admin)
    assert r.status_code == 409 and "groups ['ops']" in r.text

    ch = webhook_channel(world)
    for i in range(5):
        app = "web" if i % 2 == 0 else "other"
        body = app_policy(name=f"p{i}", channel_ids=[ch["id"]])
        if app == "other":
            body["scope"] = {"kind": "business"}
            body["matchers"] = {"app": "other"}
        post(world, "developer", f"{A}/policies", body)
    r = world.client.delete(f"{A}/channels/{ch['id']}", headers=world.as_("business-admin"))
    assert r.status_code == 409 and "p0, p1, p2, p3, p4" in r.text
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"app": "web", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = world.client.get(f"{A}/policies", headers=world.as_("viewer"), params=params).json()
        assert len(page["items"]) <= 2
        seen += [p["name"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["p0", "p2", "p4"]


def test_an_id_past_the_largest_row_id_is_not_found_on_both_databases(
    h: AppsHarness, world: World
) -> None:
    """2**31 passes the published bound but no INTEGER row can have it: PostgreSQL used to
    answer 500 ("integer out of range") where SQLite answered 404."""
    past = 2**31
    admin = world.as_("business-admin")
    for kind in ("channels", "policies", "records"):
        r = world.client.get(f"{A}/{kind}/{past}", headers=admin)
        assert r.status_code == 404, (kind, r.text)
    for kind in ("channels", "receivers", "receiver-groups", "policies", "silences"):
        r = world.client.delete(f"{A}/{kind}/{past}", headers=admin)
        assert r.status_code == 404, (kind, r.text)
    r = world.client.post(
        f"{A}/policies", json=app_policy(receiver_ids=[past]), headers=world.as_("developer")
    )
    assert r.status_code == 422 and f"receiver {past} does not exist" in r.text
    r = world.client.get(f"{A}/records", params={"policy_id": past}, headers=admin)
    assert r.status_code == 200 and r.json()["items"] == []
