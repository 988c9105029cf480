"""The apps pages, as each role sees them (server-rendered HTML over TestClient).

Each test logs in through the console's login form, reads pages and posts their forms, and checks
the HTML and, through the API, the state. ``AppsHarness`` runs the app controller on the manual
clock, so instances start and gray upgrades finish without sleeping.
"""

from __future__ import annotations

import re

from gaia.platform import Platform
from tests.conftest import World
from tests.console.forms import log_in, post
from tests.support.apps_harness import BIZ, AppsHarness, template

APP = "/console/b/alpha/apps"


def rows(html: str) -> str:
    return "".join(re.findall(r"<tbody>(.*?)</tbody>", html, flags=re.S))


def make_app(world: World, name: str, *, biz: str = "alpha", replicas: int = 2) -> None:
    r = world.client.post(
        f"/api/v1/businesses/{biz}/apps",
        json={
            "name": name,
            "cluster": "sim-1",
            "replicas": replicas,
            "templates": [
                template("v1", "registry.example.com/web:1", cpu=0.1, memory=64),
                template("v2", "registry.example.com/web:2", cpu=0.1, memory=64),
            ],
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text


def harness(platform: Platform, world: World) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.admin)


# ---------------------------------------------------------------- the list


def test_apps_list_shows_only_the_businesses_a_user_sees(world: World) -> None:
    make_app(world, "web")
    make_app(world, "other", biz="beta")
    log_in(world.client, "viewer")
    html = world.client.get("/console/apps").text
    body = rows(html)
    assert 'href="/console/b/alpha/apps/web"' in body
    assert "other" not in body
    assert "v1: 2" in body  # the version mix
    assert 'href="/console/apps/new"' in html


def test_apps_list_filters_and_pages(world: World) -> None:
    for i in range(3):
        make_app(world, f"svc-{i}", replicas=1)
    make_app(world, "db", replicas=1)
    log_in(world.client, "admin")
    body = rows(world.client.get("/console/apps", params={"name": "svc"}).text)
    assert "svc-0" in body and "svc-2" in body and ">db<" not in body
    page = world.client.get("/console/apps", params={"size": 2, "page": 2, "biz": "alpha"}).text
    assert "3\u20134 of 4" in page
    assert "svc-1" in rows(page) and "svc-0" not in rows(page)
    stopped = rows(world.client.get("/console/apps", params={"state": "stopped"}).text)
    assert "svc-0" not in stopped


# ---------------------------------------------------------------- create


def test_create_app_from_the_form(world: World) -> None:
    log_in(world.client, "dev")
    html = world.client.get("/console/apps/new").text
    assert 'name="biz"' in html  # choose the business first
    form = world.client.get("/console/apps/new", params={"biz": "alpha"}).text
    for field in ("name", "cluster", "replicas", "version", "image", "cpu", "memory"):
        assert f'name="{field}"' in form
    target = post(
        world.client,
        "/console/apps/new",
        {
            "biz": "alpha",
            "mode": "form",
            "name": "shop",
            "cluster": "sim-1",
            "replicas": "2",
            "version": "v1",
            "image": "registry.example.com/shop:1",
            "cpu": "0.5",
            "memory": "256",
            "port": "8080",
            "probe": "http",
            "probe_path": "/ready",
        },
    )
    assert target.startswith(f"{APP}/shop?ok=App shop created")
    app = world.client.get(f"{BIZ}/apps/shop", headers=world.admin).json()
    assert app["replicas"] == 2 and app["templates"] == ["v1"]
    spec = world.client.get(f"{BIZ}/apps/shop/templates/v1", headers=world.admin).json()["spec"]
    assert spec["readiness"]["path"] == "/ready" and spec["ports"][0]["port"] == 8080


def test_create_form_keeps_values_and_shows_errors_next_to_fields(world: World) -> None:
    log_in(world.client, "dev")
    r = world.client.post(
        "/console/apps/new",
        data={
            "biz": "alpha",
            "mode": "form",
            "name": "Bad Name",
            "cluster": "sim-1",
            "replicas": "1",
            "version": "v1",
            "image": "registry.example.com/shop:1",
            "cpu": "lots",
            "memory": "256",
        },
    )
    assert r.status_code == 422
    assert 'value="Bad Name"' in r.text and 'value="lots"' in r.text
    assert 'id="err-name"' in r.text and 'id="err-cpu"' in r.text
    assert 'aria-describedby="err-name"' in r.text


def test_create_from_yaml_and_yaml_errors_name_the_line(world: World) -> None:
    log_in(world.client, "dev")
    bad = "name: y\ncluster: sim-1\ntemplates: [\n  - oops: : :\n"
    r = world.client.post("/console/apps/new", data={"biz": "alpha", "mode": "yaml", "yaml": bad})
    assert r.status_code == 422
    assert "YAML syntax error at line" in r.text and 'id="err-yaml"' in r.text
    good = (
        "name: fromyaml\ncluster: sim-1\nreplicas: 1\ntemplates:\n"
        "  - name: v1\n    image: registry.example.com/y:1\n"
        "    resources: {cpu: 0.1, memory: 64}\n"
    )
    target = post(world.client, "/console/apps/new", {"biz": "alpha", "mode": "yaml", "yaml": good})
    assert target.startswith(f"{APP}/fromyaml?ok=")


# the creation form's fields for a small app of one instance (the name and the choice to test
# added by each test)
SMALL_APP_FORM = {
    "biz": "alpha",
    "mode": "form",
    "cluster": "sim-1",
    "replicas": "1",
    "version": "v1",
    "image": "registry.example.com/shop:1",
    "cpu": "0.1",
    "memory": "64",
}


def test_create_form_offers_prepull_and_lands_the_choice(world: World) -> None:
    log_in(world.client, "dev")
    form = world.client.get("/console/apps/new", params={"biz": "alpha"}).text
    assert '<label for="app-prepull">Pre-pull images</label>' in form
    assert '<option value="upgrades" selected>During upgrades (default)</option>' in form
    assert 'value="templates">' in form and 'value="off">' in form
    assert 'id="hint-prepull"' in form and "may never roll out" in form
    fields = SMALL_APP_FORM
    target = post(
        world.client, "/console/apps/new", {**fields, "name": "warm", "prepull": "templates"}
    )
    assert target.startswith(f"{APP}/warm?ok=App warm created")
    app = world.client.get(f"{BIZ}/apps/warm", headers=world.admin).json()
    assert app["prepull"] == "templates"
    # a post without the field (a script of the old form) keeps the API's default
    post(world.client, "/console/apps/new", {**fields, "name": "plain"})
    assert world.client.get(f"{BIZ}/apps/plain", headers=world.admin).json()["prepull"] == (
        "upgrades"
    )


def test_a_bad_prepull_on_the_create_form_lands_on_its_field(world: World) -> None:
    log_in(world.client, "dev")
    r = world.client.post(
        "/console/apps/new", data={**SMALL_APP_FORM, "name": "warm", "prepull": "sometimes"}
    )
    assert r.status_code == 422
    error = re.search(r'<span class="field-error" id="err-prepull">(.*?)</span>', r.text)
    assert error is not None and "upgrades" in error.group(1), r.text[-3000:]
    assert 'aria-describedby="err-prepull hint-prepull" aria-invalid="true"' in r.text
    assert 'class="flash error"' not in r.text  # on the field, not at the top of the form
    assert world.client.get(f"{BIZ}/apps/warm", headers=world.admin).status_code == 404


def test_viewer_cannot_create_and_sees_the_api_message(world: World) -> None:
    log_in(world.client, "viewer")
    r = world.client.post(
        "/console/apps/new",
        data={
            "biz": "alpha",
            "mode": "form",
            "name": "nope",
            "cluster": "sim-1",
            "version": "v1",
            "image": "x/y:1",
            "cpu": "0.1",
            "memory": "64",
        },
    )
    # refused before the form is read, with the API's wording of the role check
    assert r.status_code == 403 and 'class="flash error"' in r.text
    assert "does not allow &#39;app.write&#39;" in r.text


# ---------------------------------------------------------------- one app


def test_app_pages_answer_404_and_403_like_the_api(world: World) -> None:
    make_app(world, "other", biz="beta")
    log_in(world.client, "viewer")
    assert world.client.get(f"{APP}/missing").status_code == 404
    r = world.client.get("/console/b/beta/apps/other/instances")
    assert r.status_code in (403, 404) and "Traceback" not in r.text


def test_overview_shows_versions_states_and_the_service(platform: Platform, world: World) -> None:
    make_app(world, "web")
    h = harness(platform, world)
    h.settle(h.ready("web", 2))
    log_in(world.client, "viewer")
    html = world.client.get(f"{APP}/web").text
    assert "registry.example.com/web:1" in html and "registry.example.com/web:2" in html
    assert 'class="big state-Running">2<' in html
    assert 'aria-current="page">Overview' in html
    # a viewer is shown no action it may not take (issue 20)
    assert "data-confirm=" not in html and "Stop app" not in html
    log_in(world.client, "dev")
    html = world.client.get(f"{APP}/web").text
    assert "data-confirm=" in html and "Stop app" in html  # stop/delete ask first


def test_overview_shows_prepull_and_its_form_changes_it(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "dev")
    html = world.client.get(f"{APP}/web").text
    shown = re.search(r'<dt>Pre-pull images</dt><dd id="prepull">(.*?)</dd>', html)
    assert shown is not None and shown.group(1).startswith("During upgrades (default)")
    form = html.split('id="prepull-form"')[1].split("</form>")[0]
    assert f'action="{APP}/web/prepull"' in html and 'name="csrf_token"' in form
    assert '<option value="upgrades" selected>' in form and ">Save</button>" in form
    target = post(world.client, f"{APP}/web/prepull", {"prepull": "templates"})
    assert target == f"{APP}/web?ok=Pre-pull images: Upgrades and the newest version"
    assert world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()["prepull"] == (
        "templates"
    )
    html = world.client.get(f"{APP}/web").text
    assert '<dd id="prepull">Upgrades and the newest version<br>' in html
    assert '<option value="templates" selected>' in html
    post(world.client, f"{APP}/web/prepull", {"prepull": "off"})
    assert world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()["prepull"] == "off"
    # each change is the API's PATCH, recorded as the user's
    records = world.client.get("/api/v1/records", headers=world.admin).json()["items"]
    patches = [r for r in records if r["path"] == f"{BIZ}/apps/web" and r["method"] == "PATCH"]
    assert len(patches) == 2 and {r["actor"] for r in patches} == {"dev"}


def test_viewer_sees_prepull_without_the_form_and_may_not_change_it(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "viewer")
    html = world.client.get(f"{APP}/web").text
    assert '<dd id="prepull">During upgrades (default)' in html
    assert 'id="prepull-form"' not in html and f'action="{APP}/web/prepull"' not in html
    target = post(world.client, f"{APP}/web/prepull", {"prepull": "off"})
    assert target.startswith(f"{APP}/web?error=") and "app.write" in target
    app = world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()
    assert app["prepull"] == "upgrades"


def test_a_prepull_value_outside_the_choices_is_refused_before_the_api(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "dev")
    for bad in ("sometimes", "", "UPGRADES"):
        target = post(world.client, f"{APP}/web/prepull", {"prepull": bad})
        assert target == f"{APP}/web?error=Choose what to pre-pull: upgrades, templates or off."
    # the field is tiny: longer text is refused as the request is read, never passed on
    r = world.client.post(f"{APP}/web/prepull", data={"prepull": "x" * 1000})
    assert r.status_code == 422
    app = world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()
    assert app["prepull"] == "upgrades"
    # nothing reached the API: no operation record of a change to the app
    records = world.client.get("/api/v1/records", headers=world.admin).json()["items"]
    assert [r for r in records if r["path"] == f"{BIZ}/apps/web"] == []


def test_instances_table_pages_and_filters(platform: Platform, world: World) -> None:
    make_app(world, "web", replicas=5)
    h = harness(platform, world)
    h.settle(h.ready("web", 5))
    log_in(world.client, "viewer")
    seen = world.client.get(f"{APP}/web/instances", params={"size": 2}).text
    # a viewer gets the table without the boxes and buttons it may not use (issue 20)
    assert 'name="ids"' not in seen and "Gray upgrade" not in seen and "Scale out" not in seen
    assert '<td class="version">v1</td>' in rows(seen)
    log_in(world.client, "dev")
    html = world.client.get(f"{APP}/web/instances", params={"size": 2}).text
    body = rows(html)
    assert body.count('name="ids"') == 2
    assert 'aria-label="Select instance web-0"' in body
    assert 'class="state-Running"' in body and '<td class="version">v1</td>' in body
    assert "2 of 5 instances shown" in html and ">Running (5)</option>" in html
    assert 'data-copy="' in body  # pod and host IPs have copy buttons
    # quiet app: no polling
    assert 'hx-trigger="every 2s"' not in html
    # the pages are the API's: "Next" carries its cursor, twice to the last page
    page3 = html
    for _ in range(2):
        nxt = re.search(r'<a href="([^"]+)" rel="next">', page3)
        assert nxt is not None
        page3 = world.client.get(nxt.group(1).replace("&amp;", "&")).text
    assert rows(page3).count('name="ids"') == 1 and "web-4" in rows(page3)
    assert 'rel="next"' not in page3 and 'rel="prev"' in page3
    none = world.client.get(f"{APP}/web/instances", params={"version": "v2"}).text
    assert "No instances match." in none
    named = world.client.get(f"{APP}/web/instances", params={"name": "web-3"}).text
    assert rows(named).count('name="ids"') == 1 and "1 matches the filters" in named


def test_gray_upgrade_of_chosen_instances(platform: Platform, world: World) -> None:
    make_app(world, "web", replicas=4)
    h = harness(platform, world)
    h.settle(h.ready("web", 4))
    log_in(world.client, "dev")
    page = world.client.get(f"{APP}/web/instances").text
    assert '<select id="upgrade-version" name="version">' in page
    assert '<label for="upgrade-version">Upgrade to version</label>' in page
    assert ">Gray upgrade</button>" in page
    target = post(
        world.client,
        f"{APP}/web/instances/upgrade",
        {"ids": ["1", "3"], "version": "v2", "max_unavailable": "1"},
    )
    assert "ok=Upgrade 1 started: 2 instances to v2" in target
    # while it runs the table polls its fragment
    live = world.client.get(f"{APP}/web/instances").text
    assert 'hx-trigger="every 2s"' in live and 'aria-live="polite"' in live
    fragment = world.client.get(f"{APP}/web/instances", params={"fragment": 1}).text
    assert fragment.lstrip().startswith("{#") is False and "<html" not in fragment
    assert 'id="instances-live"' in fragment
    upgrade = world.client.get(f"{APP}/web/upgrade").text
    assert "Current upgrade" in upgrade and ">Pause</button>" in upgrade
    h.settle(lambda: h.app("web")["upgrade"]["state"] == "Succeeded")
    h.settle(h.ready("web", 4))
    done = world.client.get(f"{APP}/web/instances").text
    versions = dict(
        re.findall(
            r'aria-label="Select instance web-(\d)".*?<td class="version">(v\d)</td>',
            done,
            flags=re.S,
        )
    )
    assert versions == {"0": "v1", "1": "v2", "2": "v1", "3": "v2"}
    assert 'hx-trigger="every 2s"' not in done
    # the upgrade tab shows it finished, and offers a confirmed rollback
    upgrade = world.client.get(f"{APP}/web/upgrade").text
    assert "Succeeded" in upgrade and "Roll back upgrade 1?" in upgrade
    # events of the app and its instances
    events = rows(world.client.get(f"{APP}/web/events").text)
    assert "Instance/web-1" in events and "UpgradeBatch" in events
    records = rows(world.client.get(f"{APP}/web/records").text)
    assert "app.upgrade.create" in records


def test_add_a_version_prefilled_from_the_newest(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "dev")
    page = world.client.get(f"{APP}/web/upgrade").text
    assert 'id="tpl-image" name="image" required value="registry.example.com/web:2"' in page
    target = post(
        world.client,
        f"{APP}/web/templates",
        {
            "version": "v3",
            "image": "registry.example.com/web:3",
            "cpu": "0.1",
            "memory": "64",
            "port": "8080",
            "probe": "tcp",
        },
    )
    assert "ok=Version v3 added" in target
    spec = world.client.get(f"{BIZ}/apps/web/templates/v3", headers=world.admin).json()["spec"]
    assert spec["readiness"]["kind"] == "tcp"
    bad = post(
        world.client,
        f"{APP}/web/templates",
        {"version": "v4", "image": "x/y:1", "cpu": "many", "memory": "64"},
    )
    assert "error=CPU cores: Input should be a valid decimal" in bad
    again = post(
        world.client,
        f"{APP}/web/templates",
        {"version": "v3", "image": "x/y:1", "cpu": "0.1", "memory": "64"},
    )
    assert "error=template 'v3' already exists" in again


def test_pause_resume_and_rollback(platform: Platform, world: World) -> None:
    make_app(world, "web", replicas=3)
    h = harness(platform, world)
    h.settle(h.ready("web", 3))
    log_in(world.client, "dev")
    post(world.client, f"{APP}/web/upgrade", {"version": "v2", "max_unavailable": "1"})
    assert "ok=Upgrade 1 paused" in post(world.client, f"{APP}/web/upgrades/1/pause", {})
    assert "ok=Upgrade 1 resumed" in post(world.client, f"{APP}/web/upgrades/1/resume", {})
    assert "is rolling back" in post(world.client, f"{APP}/web/upgrades/1/rollback", {})
    again = post(world.client, f"{APP}/web/upgrades/1/pause", {})
    assert "error=upgrade 1 is RollingBack" in again


def test_the_upgrade_tab_reads_one_page_of_upgrades(platform: Platform, world: World) -> None:
    """A page of one (``size=1``): the counts per state are the API's over every upgrade, the
    older page is a cursor link, and the upgrade in progress is shown from any page."""
    make_app(world, "web", replicas=3)
    h = harness(platform, world)
    h.settle(h.ready("web", 3))
    log_in(world.client, "dev")
    post(world.client, f"{APP}/web/instances/upgrade", {"ids": ["1"], "version": "v2"})
    h.settle(lambda: h.app("web")["upgrade"]["state"] == "Succeeded")
    post(world.client, f"{APP}/web/upgrade", {"version": "v2", "max_unavailable": "1"})
    post(world.client, f"{APP}/web/upgrades/2/pause", {})
    page = world.client.get(f"{APP}/web/upgrade", params={"size": 1}).text
    count = re.search(r'id="upgrades-count">(.*?)</p>', page, flags=re.S)
    assert count is not None and "2 upgrades" in count.group(1)
    assert "Paused 1" in count.group(1) and "Succeeded 1" in count.group(1)
    table = page.split('id="upgrades"')[1]
    assert '<th scope="row">2</th>' in table and '<th scope="row">1</th>' not in table
    assert "3 instances move back" in page  # the count, not the list, in the confirmation
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page)
    assert older is not None
    second = world.client.get(older.group(1).replace("&amp;", "&")).text
    table = second.split('id="upgrades"')[1]
    assert '<th scope="row">1</th>' in table and '<th scope="row">2</th>' not in table
    assert 'id="active-upgrade"' in second and "#2" in second  # still the one in progress
    assert 'rel="first">Newest</a>' in second


def test_delete_chosen_asks_with_the_count_then_scales_in(platform: Platform, world: World) -> None:
    make_app(world, "web", replicas=3)
    log_in(world.client, "dev")
    r = world.client.post(f"{APP}/web/instances/delete", data={"ids": ["0", "2"]})
    assert r.status_code == 200 and "Delete 2 instances?" in r.text
    assert world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()["replicas"] == 3
    target = post(
        world.client, f"{APP}/web/instances/delete", {"ids": ["0", "2"], "confirmed": "1"}
    )
    assert "ok=Deleted 2 instances: 0, 2" in target
    assert world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()["replicas"] == 1


def test_scale_out_scale_in_stop_and_start(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "dev")
    assert "ok=Added 2 instances" in post(
        world.client, f"{APP}/web/scale-out", {"count": "2", "version": "v2"}
    )
    app = world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()
    assert app["versions"] == {"v1": 1, "v2": 2}
    assert "ok=Deleted 1 instance: 2" in post(world.client, f"{APP}/web/scale-in", {"count": "1"})
    assert "ok=App web stopped" in post(world.client, f"{APP}/web/stop", {})
    assert "ok=App web started" in post(world.client, f"{APP}/web/start", {})
    assert "error=" in post(world.client, f"{APP}/web/start", {})  # already running: API's word
    instances = world.client.get(f"{APP}/web/instances").text
    assert 'data-confirm="Stop app web?' in instances


def test_stop_and_start_chosen_instances(world: World) -> None:
    make_app(world, "web", replicas=3)
    log_in(world.client, "dev")
    page = world.client.get(f"{APP}/web/instances").text
    assert 'id="stop-chosen"' in page and "their quota given back" in page
    assert "ok=Stopped 2 instances: 0, 2" in post(
        world.client, f"{APP}/web/instances/stop", {"ids": ["0", "2"]}
    )
    statuses = {
        i["id"]: i["status"]
        for i in world.client.get(f"{BIZ}/apps/web/instances", headers=world.admin).json()["items"]
    }
    assert statuses[0] == statuses[2] == "Stopped" and statuses[1] != "Stopped"
    assert "ok=Started 1 instance: 2" in post(
        world.client, f"{APP}/web/instances/start", {"ids": ["2"]}
    )
    assert "error=" in post(world.client, f"{APP}/web/instances/stop", {})


def test_viewer_actions_come_back_with_the_api_refusal(world: World) -> None:
    make_app(world, "web", replicas=1)
    log_in(world.client, "viewer")
    target = post(world.client, f"{APP}/web/stop", {})
    assert "error=" in target
    assert world.client.get(f"{BIZ}/apps/web", headers=world.admin).json()["state"] == "running"


def test_records_page_lists_the_apps_operations(world: World) -> None:
    make_app(world, "web", replicas=1)
    make_app(world, "web-two", replicas=1)
    log_in(world.client, "dev")
    post(world.client, f"{APP}/web/scale-out", {"count": "1"})
    body = rows(world.client.get(f"{APP}/web/records").text)
    assert "app.scale-out" in body and "app.create" in body
    assert "business/alpha/app/web-two" not in body


def test_events_tab_lists_the_app_and_its_instances_only(platform: Platform, world: World) -> None:
    make_app(world, "web", replicas=1)
    make_app(world, "web-two", replicas=1)
    h = harness(platform, world)
    h.settle(lambda: h.ready("web", 1)() and h.ready("web-two", 1)())
    log_in(world.client, "viewer")
    body = rows(world.client.get(f"{APP}/web/events", params={"size": 500}).text)
    assert "Instance/web-0" in body and "Started" in body
    assert "web-two" not in body
    assert "No events." in world.client.get(f"{APP}/web/events", params={"type": "Warning"}).text
    first = world.client.get(f"{APP}/web/events", params={"size": 2}).text
    assert rows(first).count("<tr") == 2 and 'rel="next">Older' in first


def test_zh_cn(world: World) -> None:
    make_app(world, "web", replicas=1)
    r = world.client.patch(
        "/api/v1/users/dev", json={"language": "zh-CN"}, headers=world.as_("developer")
    )
    assert r.status_code == 200, r.text
    log_in(world.client, "dev")
    assert "创建应用" in world.client.get("/console/apps").text
    html = world.client.get(f"{APP}/web/instances").text
    assert "灰度升级" in html and "升级到版本" in html
    overview = world.client.get(f"{APP}/web").text
    assert "<dt>预拉取镜像</dt>" in overview and "升级期间\uff08默认\uff09" in overview
