"""The alerting console pages (gaia/console/pages/alerts.py): alert records, one record's
notifications per receiver and channel, silencing from a record; policies, channels, receivers
and groups, silences.

The evaluator does not run here: a test writes records and notifications through the store, as
the evaluator and the notifier would (tests/monitor/alerting drives them for real)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.models import AlertNotification, AlertRecord, Business
from tests.conftest import World
from tests.console.test_clusters import html, post
from tests.console.test_records import older_link

RECEIPT = "250 2.0.0 queued as ABC123"


def seed_record(platform: Platform, *, business: str = "alpha", **fields: Any) -> int:
    """A firing record of ``business`` with three notifications: sent, retrying, failed."""
    now = dt.datetime.now(dt.UTC)
    with platform.db.write_session() as session:
        owner = session.scalars(select(Business.id).where(Business.name == business)).one()
        record = AlertRecord(
            business_id=owner,
            policy_id=None,
            policy_name=fields.pop("policy_name", "web-cpu-high"),
            fingerprint=f"fp-{business}-{now.timestamp()}",
            severity=fields.pop("severity", "critical"),
            labels={"app": "web", "business": business},
            summary="CPU above 90% for 5 minutes",
            status=fields.pop("status", "firing"),
            metric=fields.pop("metric", "gaia_app_cpu_usage_ratio"),
            comparison=">",
            threshold=fields.pop("threshold", 0.9),
            value=fields.pop("value", 0.97),
            started_at=now,
            fired_at=now,
            **fields,
        )
        session.add(record)
        session.flush()
        for i, (receiver, channel, state, extra) in enumerate(
            [
                (
                    "dev",
                    "mail-ops",
                    "sent",
                    {"receipt": "250 2.0.0 queued as ABC123", "sent_at": now},
                ),
                ("dev", "sms-ops", "retrying", {"last_error": "gateway timeout"}),
                ("ba", "hook-ops", "failed", {"last_error": "HTTP 410 Gone from the webhook"}),
            ]
        ):
            session.add(
                AlertNotification(
                    record_id=record.id,
                    business_id=owner,
                    event="firing",
                    channel_name=channel,
                    channel_kind=channel.split("-")[0].replace("mail", "email"),
                    receiver=receiver,
                    recipients=[],
                    state=state,
                    attempts=1 + i,
                    next_attempt_at=now + dt.timedelta(minutes=5),
                    idempotency_key=f"k-{record.id}-{i}",
                    **extra,
                )
            )
        return record.id


def silences_of(world: World) -> list[dict[str, Any]]:
    answer = world.client.get("/api/v1/alerts/silences", headers=world.admin)
    return list(answer.json()["items"])


def test_the_alerts_list_shows_firing_and_resolved_with_filters(
    world: World, platform: Platform
) -> None:
    seed_record(platform)
    seed_record(platform, policy_name="disk-full", status="resolved", severity="warning")
    seed_record(platform, business="beta", policy_name="beta-secret-policy")
    page = html(world, "viewer", "/console/alerts")
    assert 'href="/console/alerts" aria-current="page"' in page  # in the navigation
    assert "web-cpu-high" in page and "disk-full" in page
    assert "beta-secret-policy" not in page  # another business's alerts
    page = html(world, "viewer", "/console/alerts?status=firing")
    assert "web-cpu-high" in page and "disk-full" not in page
    page = html(world, "viewer", "/console/alerts?severity=warning")
    assert "web-cpu-high" not in page and "disk-full" in page
    assert "beta-secret-policy" in html(world, "platform-admin", "/console/alerts")


def test_the_alerts_list_pages_by_cursor(world: World, platform: Platform) -> None:
    for n in range(55):
        seed_record(platform, policy_name=f"policy-{n:02d}")
    page = html(world, "viewer", "/console/alerts")
    assert "policy-54" in page and "policy-04" not in page
    older = older_link(page)
    assert "cursor=" in older
    page = html(world, "viewer", "/console/alerts" + older)
    assert "policy-04" in page and "policy-54" not in page and 'rel="first"' in page


def test_a_record_shows_each_notification_state_per_receiver_and_channel(
    world: World, platform: Platform
) -> None:
    record = seed_record(platform)
    page = html(world, "viewer", f"/console/alerts/{record}")
    assert "mail-ops" in page and RECEIPT in page
    assert "sms-ops" in page and "gateway timeout" in page and "next attempt at" in page
    assert "hook-ops" in page and "HTTP 410 Gone from the webhook" in page
    assert "gaia_app_cpu_usage_ratio" in page
    # a viewer may not silence: no form that would be refused
    assert "/silence" not in page
    assert "/silence" in html(world, "developer", f"/console/alerts/{record}")


def test_values_are_rounded_in_their_metrics_unit(world: World, platform: Platform) -> None:
    """Issue 20: a value the evaluator computed (an average: 87.3333333333) is shown as people
    read it, in the unit the metric catalogue gives (percent here), and a metric the catalogue
    does not know keeps three significant digits, not ten."""
    percent = seed_record(
        platform,
        policy_name="cpu-percent",
        metric="gaia_instance_cpu_usage_percent",
        threshold=80.0,
        value=87.3333333333,
        resolved_value=31.6666666667,
    )
    seed_record(platform, policy_name="unknown-metric", value=0.8733333333)
    listed = html(world, "viewer", "/console/alerts")
    assert "87%" in listed and "0.873" in listed
    assert "87.333" not in listed and "0.8733" not in listed
    page = html(world, "viewer", f"/console/alerts/{percent}")
    assert "87% → 32%" in page and "gaia_instance_cpu_usage_percent &gt; 80%" in page


def test_a_notification_to_a_whole_channel_is_not_called_a_group(
    world: World, platform: Platform
) -> None:
    """A policy's own channel (``channel_ids``) notifies the channel itself, with no receiver:
    the page names it a whole channel; a receiver group's members are named each."""
    record = seed_record(platform)
    with platform.db.write_session() as session:
        session.add(
            AlertNotification(
                record_id=record,
                event="firing",
                channel_name="ops-hook",
                channel_kind="webhook",
                receiver="",
                recipients=[],
                state="pending",
                next_attempt_at=dt.datetime.now(dt.UTC),
                idempotency_key=f"k-{record}-channel",
            )
        )
    page = html(world, "viewer", f"/console/alerts/{record}")
    assert ">whole channel</span></th>" in page and ">group<" not in page
    assert '<th scope="row">dev</th>' in page  # a receiver is named


def test_another_business_record_is_not_found(world: World, platform: Platform) -> None:
    record = seed_record(platform, business="beta", policy_name="beta-secret-policy")
    page = html(world, "developer", f"/console/alerts/{record}", status=404)
    assert "beta-secret-policy" not in page
    r = post(world, "developer", f"/console/alerts/{record}/silence", {"hours": "2"})
    assert r.status_code == 404
    assert silences_of(world) == []


def test_a_developer_silences_a_record_and_a_viewer_is_refused(
    world: World, platform: Platform
) -> None:
    record = seed_record(platform)
    r = post(world, "developer", f"/console/alerts/{record}/silence", {"hours": "abc"})
    assert r.status_code == 422
    assert 'id="err-hours"' in r.text and 'aria-invalid="true"' in r.text
    r = post(
        world, "developer", f"/console/alerts/{record}/silence", {"hours": "2", "comment": "deploy"}
    )
    assert r.status_code == 303, r.text[:2000]
    silences = silences_of(world)
    assert len(silences) == 1
    assert silences[0]["matchers"] == {"app": "web", "business": "alpha"}
    assert silences[0]["business"] == "alpha" and silences[0]["comment"] == "deploy"
    r = post(world, "viewer", f"/console/alerts/{record}/silence", {"hours": "2"})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert (
        len(world.client.get("/api/v1/alerts/silences", headers=world.admin).json()["items"]) == 1
    )


def test_alert_pages_are_translated(world: World, platform: Platform) -> None:
    record = seed_record(platform)
    world.client.patch(
        "/api/v1/users/dev", json={"language": "zh-CN"}, headers=world.users["developer"]
    )
    page = html(world, "developer", "/console/alerts")
    assert "告警" in page and ">Alerts<" not in page
    page = html(world, "developer", f"/console/alerts/{record}")
    assert "通知" in page and ">Notifications<" not in page
    # each notification state in its own words: sent is 已发送, not the bytes "sent" (发送)
    states = re.findall(r'<td><span class="(?:ok|bad|)">([^<]+)</span></td>', page)
    assert states == ["已发送", "重试中", "发送失败"]


# ---------------------------------------------------------------- policies

POLICY_FORM = {
    "business": "alpha",
    "name": "web-cpu",
    "scope": "business",
    "cluster": "",
    "node": "",
    "app": "",
    "metric": "gaia_instance_cpu_usage_percent",
    "comparison": ">",
    "threshold": "80",
    "for_seconds": "120",
    "severity": "critical",
    "repeat_seconds": "0",
    "summary": "web is busy",
}


def make_receiver(world: World, name: str = "oncall", business: str = "alpha") -> int:
    r = world.client.post(
        "/api/v1/alerts/receivers",
        json={"business": business, "name": name, "email": f"{name}@example.com"},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def policies_of(world: World) -> list[dict[str, Any]]:
    return list(world.client.get("/api/v1/alerts/policies", headers=world.admin).json()["items"])


def test_a_developer_creates_a_policy_from_the_catalogue(world: World) -> None:
    receiver = make_receiver(world)
    page = html(world, "developer", "/console/alerts/policies/new")
    assert '<option value="gaia_instance_cpu_usage_percent"' in page  # from the catalogue
    assert "oncall" in page and 'name="receiver_ids"' in page
    r = post(
        world,
        "developer",
        "/console/alerts/policies/new",
        {**POLICY_FORM, "receiver_ids": str(receiver)},
    )
    assert r.status_code == 303, r.text[:3000]
    (policy,) = policies_of(world)
    assert policy["business"] == "alpha" and policy["scope"] == "business"
    assert policy["threshold"] == 80 and policy["for_seconds"] == 120
    assert policy["severity"] == "critical" and policy["receiver_ids"] == [receiver]
    page = html(world, "viewer", "/console/alerts/policies")
    assert "web-cpu" in page and "gaia_instance_cpu_usage_percent" in page
    # a viewer sees the policy but no button that the API would refuse
    assert "/enabled" not in page and 'href="/console/alerts/policies/new"' not in page
    page = html(world, "viewer", f"/console/alerts/policies/{policy['id']}")
    assert "web-cpu" in page and "/delete" not in page and "Create policy" not in page
    assert "Save" not in page


def test_policy_form_errors_land_on_their_fields(world: World) -> None:
    r = post(world, "developer", "/console/alerts/policies/new", {**POLICY_FORM, "threshold": "x"})
    assert r.status_code == 422
    assert 'id="err-threshold"' in r.text and 'value="web-cpu"' in r.text  # kept what was typed
    # a metric without the labels the scope needs: the API's message beside the metric
    wrong = {**POLICY_FORM, "metric": "gaia_node_cpu_usage_percent"}
    r = post(world, "developer", "/console/alerts/policies/new", wrong)
    assert r.status_code == 422 and 'id="err-metric"' in r.text
    r = post(world, "developer", "/console/alerts/policies/new", {**POLICY_FORM, "name": ""})
    assert r.status_code == 422 and 'id="err-name"' in r.text
    no_app = {**POLICY_FORM, "scope": "app", "app": "nothing-here"}
    r = post(world, "developer", "/console/alerts/policies/new", no_app)
    assert r.status_code == 422 and 'id="err-app"' in r.text
    assert policies_of(world) == []


def test_a_policy_is_edited_disabled_and_deleted(world: World) -> None:
    assert post(world, "developer", "/console/alerts/policies/new", POLICY_FORM).status_code == 303
    (policy,) = policies_of(world)
    url = f"/console/alerts/policies/{policy['id']}"
    r = post(world, "developer", url, {**POLICY_FORM, "threshold": "95", "severity": "warning"})
    assert r.status_code == 303, r.text[:3000]
    (policy,) = policies_of(world)
    assert policy["threshold"] == 95 and policy["severity"] == "warning"
    assert policy["metric"] == "gaia_instance_cpu_usage_percent"  # fixed after creation
    r = post(world, "viewer", f"{url}/enabled", {"enabled": "false"})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert policies_of(world)[0]["enabled"] is True
    r = post(world, "developer", f"{url}/enabled", {"enabled": "false"})
    assert r.status_code == 303 and policies_of(world)[0]["enabled"] is False
    assert "disabled" in html(world, "developer", "/console/alerts/policies")
    assert post(world, "developer", f"{url}/delete", {}).status_code == 303
    assert policies_of(world) == []


def test_another_business_policy_is_not_found(world: World) -> None:
    created = post(
        world, "outsider", "/console/alerts/policies/new", {**POLICY_FORM, "business": "beta"}
    )
    assert created.status_code == 303, created.text[:3000]
    (policy,) = policies_of(world)
    url = f"/console/alerts/policies/{policy['id']}"
    assert "web-cpu" not in html(world, "developer", "/console/alerts/policies")
    html(world, "developer", url, status=404)
    r = post(world, "developer", url, POLICY_FORM)
    assert r.status_code == 404
    post(world, "developer", f"{url}/delete", {})
    assert len(policies_of(world)) == 1


def test_builtin_rules_are_listed_and_a_platform_admin_enables_them_on_a_cluster(
    world: World,
) -> None:
    page = html(world, "viewer", "/console/alerts/builtin")
    assert 'name="rules"' not in page and 'action="/console/alerts/builtin"' not in page
    page = html(world, "platform-admin", "/console/alerts/builtin")
    assert 'name="rules"' in page and "<option>sim-1</option>" in page
    r = post(world, "platform-admin", "/console/alerts/builtin", {"cluster": "sim-1"})
    assert r.status_code == 303 and "ok=" in r.headers["location"], r.headers["location"]
    policies = policies_of(world)
    assert policies and all(p["builtin_key"] and p["business"] is None for p in policies)
    r = post(world, "developer", "/console/alerts/builtin", {"cluster": "sim-1"})
    assert "error=" in r.headers["location"]


# ---------------------------------------------------------------- channels, receivers, silences

HOOK_TOKEN = "T0KEN-in-the-path"
HMAC = "hmac-SECRET-value-123456"
CHANNEL_FORM = {
    "business": "alpha",
    "name": "ops-hook",
    "kind": "webhook",
    "rate_limit_per_minute": "60",
    "cfg_url": f"https://hooks.example.com/{HOOK_TOKEN}?key=q-SECRET",
    "cfg_hmac_secret": HMAC,
    "cfg_headers": "X-Api-Key: header-SECRET-value",
}


def channels_of(world: World) -> list[dict[str, Any]]:
    return list(world.client.get("/api/v1/alerts/channels", headers=world.admin).json()["items"])


def test_a_business_admin_creates_a_channel_whose_credentials_never_come_back(
    world: World,
) -> None:
    r = post(world, "business-admin", "/console/alerts/channels", CHANNEL_FORM)
    assert r.status_code == 303, r.text[:3000]
    (channel,) = channels_of(world)
    assert channel["kind"] == "webhook" and channel["business"] == "alpha"
    for who in ("business-admin", "developer", "viewer", "platform-admin"):
        page = html(world, who, "/console/alerts/channels")
        page += html(world, who, f"/console/alerts/channels?edit={channel['id']}")
        assert "ops-hook" in page
        for secret in (HOOK_TOKEN, HMAC, "q-SECRET", "header-SECRET-value"):
            assert secret not in page, (who, secret)
    admin_page = html(world, "business-admin", "/console/alerts/channels")
    assert "Send a test" in admin_page and "hooks.example.com" in admin_page
    dev_page = html(world, "developer", "/console/alerts/channels")
    assert "Send a test" not in dev_page and 'id="channel-form"' not in dev_page
    # an edit that leaves the credentials empty keeps them
    url = f"/console/alerts/channels/{channel['id']}"
    r = post(world, "business-admin", url, {"name": "ops-hook-2", "enabled": "true"})
    assert r.status_code == 303, r.text[:3000]
    assert channels_of(world)[0]["name"] == "ops-hook-2"
    r = post(world, "developer", f"{url}/delete", {})
    assert "error=" in r.headers["location"] and len(channels_of(world)) == 1


def test_channel_form_errors_land_on_their_fields_and_keep_no_secret(world: World) -> None:
    bad = {**CHANNEL_FORM, "cfg_hmac_secret": "short-SECRET", "rate_limit_per_minute": "x"}
    r = post(world, "business-admin", "/console/alerts/channels", bad)
    assert r.status_code == 422 and 'id="err-rate_limit_per_minute"' in r.text
    assert "short-SECRET" not in r.text and "header-SECRET-value" not in r.text
    bad = {**CHANNEL_FORM, "cfg_hmac_secret": "short-SECRET"}
    r = post(world, "business-admin", "/console/alerts/channels", bad)
    assert r.status_code == 422 and 'id="err-cfg_hmac_secret"' in r.text, r.text[-3000:]
    assert "short-SECRET" not in r.text and 'value="ops-hook"' in r.text
    assert channels_of(world) == []


def test_another_business_channel_cannot_be_changed(world: World) -> None:
    r = post(world, "outsider", "/console/alerts/channels", {**CHANNEL_FORM, "business": "beta"})
    assert r.status_code == 303
    (channel,) = channels_of(world)
    assert "ops-hook" not in html(world, "business-admin", "/console/alerts/channels")
    r = post(world, "business-admin", f"/console/alerts/channels/{channel['id']}/test", {})
    assert "error=" in r.headers["location"] and "not+found" in r.headers["location"].lower()
    r = post(world, "business-admin", f"/console/alerts/channels/{channel['id']}/delete", {})
    assert "error=" in r.headers["location"] and len(channels_of(world)) == 1


def test_receivers_and_groups_by_role(world: World) -> None:
    form = {"business": "alpha", "name": "oncall", "email": "not-an-address", "phone": ""}
    r = post(world, "developer", "/console/alerts/receivers", form)
    assert r.status_code == 422 and 'id="err-email"' in r.text
    form["email"] = "oncall@example.com"
    assert post(world, "developer", "/console/alerts/receivers", form).status_code == 303
    receiver = world.client.get("/api/v1/alerts/receivers", headers=world.admin).json()["items"]
    group = {"business": "alpha", "group_name": "sre", "receiver_ids": str(receiver[0]["id"])}
    assert post(world, "developer", "/console/alerts/groups", group).status_code == 303
    page = html(world, "viewer", "/console/alerts/receivers")
    assert "oncall@example.com" in page and "sre" in page
    assert "/delete" not in page and 'id="receiver-form"' not in page
    assert "oncall" not in html(world, "outsider", "/console/alerts/receivers")


def test_receivers_and_groups_are_edited_with_errors_on_their_fields(world: World) -> None:
    def receivers() -> dict[str, dict[str, Any]]:
        rows = world.client.get("/api/v1/alerts/receivers", headers=world.admin).json()["items"]
        return {r["name"]: r for r in rows}

    for name, email in (("oncall", "oncall@example.com"), ("backup", "backup@example.com")):
        form = {"business": "alpha", "name": name, "email": email, "phone": ""}
        assert post(world, "developer", "/console/alerts/receivers", form).status_code == 303
    oncall, backup = receivers()["oncall"], receivers()["backup"]
    group = {"business": "alpha", "group_name": "sre", "receiver_ids": str(oncall["id"])}
    assert post(world, "developer", "/console/alerts/groups", group).status_code == 303
    (sre,) = world.client.get("/api/v1/alerts/receiver-groups", headers=world.admin).json()["items"]

    page = html(world, "developer", f"/console/alerts/receivers?edit_receiver={oncall['id']}")
    assert f'action="/console/alerts/receivers/{oncall["id"]}"' in page
    assert 'value="oncall@example.com"' in page
    edited = {"name": "oncall", "email": "not-an-address", "phone": "+8613800000000"}
    r = post(world, "developer", f"/console/alerts/receivers/{oncall['id']}", edited)
    assert r.status_code == 422 and 'id="err-edit_email"' in r.text
    assert 'value="not-an-address"' in r.text  # kept what was typed
    edited["email"] = ""  # emptied: removed
    r = post(world, "developer", f"/console/alerts/receivers/{oncall['id']}", edited)
    assert r.status_code == 303 and "ok=" in r.headers["location"]
    assert (
        receivers()["oncall"]["email"] == "" and receivers()["oncall"]["phone"] == edited["phone"]
    )

    page = html(world, "developer", f"/console/alerts/receivers?edit_group={sre['id']}")
    assert f'action="/console/alerts/groups/{sre["id"]}"' in page
    moved = {"group_name": "sre-day", "receiver_ids": str(backup["id"])}
    r = post(world, "developer", f"/console/alerts/groups/{sre['id']}", moved)
    assert r.status_code == 303
    (sre,) = world.client.get("/api/v1/alerts/receiver-groups", headers=world.admin).json()["items"]
    assert sre["name"] == "sre-day" and sre["receiver_ids"] == [backup["id"]]

    # a viewer gets neither the edit links nor the forms, and the API refuses the save
    page = html(world, "viewer", f"/console/alerts/receivers?edit_receiver={oncall['id']}")
    assert "#edit-receiver" not in page and "receiver-edit-form" not in page
    r = post(world, "viewer", f"/console/alerts/receivers/{oncall['id']}", edited | {"name": "x"})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert "x" not in receivers()


def test_silences_are_created_listed_and_ended(world: World) -> None:
    r = post(
        world,
        "developer",
        "/console/alerts/silences",
        {"business": "alpha", "matchers": "app", "hours": "2"},
    )
    assert r.status_code == 422 and 'id="err-matchers"' in r.text
    form = {"business": "alpha", "matchers": "app=web", "hours": "2", "comment": "deploy"}
    assert post(world, "viewer", "/console/alerts/silences", form).status_code == 422
    assert post(world, "developer", "/console/alerts/silences", form).status_code == 303
    (silence,) = silences_of(world)
    page = html(world, "viewer", "/console/alerts/silences")
    assert "app=web" in page and "deploy" in page and "/expire" not in page
    assert f'id="silence-{silence["id"]}"' in page
    assert f'id="silence-{silence["id"]}"' not in html(
        world, "outsider", "/console/alerts/silences"
    )
    url = f"/console/alerts/silences/{silence['id']}/expire"
    assert "error=" in post(world, "outsider", url, {}).headers["location"]
    assert post(world, "developer", url, {}).status_code == 303
    assert silences_of(world)[0]["active"] is False
